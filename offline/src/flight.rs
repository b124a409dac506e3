//! `quiver offline serve`: an Arrow Flight server speaking the protocol of Feast's offline server
//! (`feast serve_offline`), so Feast clients with `offline_store: {type: remote}` get historical
//! features from quiver.
//!
//! The protocol (Feast 0.67, `feast/offline_server.py` and `infra/offline_stores/remote.py`): a
//! command is JSON in a `FlightDescriptor` command, `{"command_id", "api", ...params}`. Feast 0.67
//! clients send the entity table and read the result on one `DoExchange` stream; older clients
//! `DoPut` the entity table, then `GetFlightInfo` (the ticket) and `DoGet` (the result). Both are
//! served. Errors carry Feast's `{"module", "class", "message"}` JSON after `Flight error: `,
//! which the SDK turns back into its exception classes. With a token configured, every call must
//! carry `authorization: Bearer <token>`. On-demand views (refs Feast's remote client sends
//! without their view, leaving them to the server) are computed as `quiver historical` computes
//! them (`on_demand`), with the transformation service the server was started with.
//!
//! Results stream: each batch is encoded and sent as the join produces it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use quiver_core::fault::{Classified as _, ErrorKind};
use quiver_core::model::Projection;
use quiver_core::registry::ProjectRegistry;
use serde_json::Value as Json;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::historical::{Entities, FeastError, Features, HistoricalEngine, select_for_feast};
use crate::on_demand::{
    OnDemandPlan, Selection as OnDemandSelection, TransformClient, select_projections,
    select_with_on_demand,
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Where the registry is: a local file, or an `s3://`/`gs://` object.
#[derive(Debug, Clone)]
pub enum RegistryPlace {
    File(PathBuf),
    Object(quiver_registry::object::ObjectRegistry),
}

impl std::fmt::Display for RegistryPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryPlace::File(p) => write!(f, "{}", p.display()),
            RegistryPlace::Object(o) => write!(f, "{}", o.uri()),
        }
    }
}

/// Where the server finds definitions: the registry is read per request, so an apply shows up
/// without a restart.
#[derive(Debug, Clone)]
pub struct RegistrySource {
    pub registry: RegistryPlace,
    pub project: String,
    pub repo_dir: PathBuf,
}

impl RegistrySource {
    pub async fn load(&self) -> Result<ProjectRegistry, FeastError> {
        let err = |kind: ErrorKind, e: &dyn std::fmt::Display| {
            FeastError::new(
                kind,
                "FeastError",
                format!("registry {}: {e}", self.registry),
            )
        };
        let file = match &self.registry {
            RegistryPlace::File(path) => {
                quiver_registry::store::read(path).map_err(|e| err(e.kind(), &e))?
            }
            RegistryPlace::Object(o) => {
                o.read_registry()
                    .await
                    .map_err(|e| FeastError::new(e.kind(), "FeastError", e.to_string()))?
                    .0
            }
        };
        // The registry holds no such project: the server was started for one it lacks.
        file.project(&self.project)
            .map_err(|e| err(ErrorKind::NotFound, &e))
    }
}

/// Bounds on what clients may park between `DoPut` and `DoGet`.
const MAX_PENDING: usize = 64;

/// The state shared by requests.
pub struct OfflineServer {
    engine: HistoricalEngine,
    registry: RegistrySource,
    token: Option<String>,
    /// Feast's transformation service, for on-demand views (`--transformation-service`).
    transform: Option<Arc<TransformClient>>,
    /// Entity tables put by `DoPut`, by command, until their `DoGet`.
    pending: Mutex<HashMap<Vec<u8>, Entities>>,
}

impl OfflineServer {
    pub fn new(
        engine: HistoricalEngine,
        registry: RegistrySource,
        token: Option<String>,
    ) -> OfflineServer {
        OfflineServer {
            engine,
            registry,
            token: token.filter(|t| !t.is_empty()),
            transform: None,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Computes on-demand views the request reads on Feast's transformation service.
    pub fn with_transformation_service(mut self, client: Arc<TransformClient>) -> OfflineServer {
        self.transform = Some(client);
        self
    }

    pub fn into_service(self) -> FlightServiceServer<OfflineServer> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30)
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if quiver_http::check_bearer(given, token) == quiver_http::Bearer::Valid {
            Ok(())
        } else {
            Err(status(&FeastError::new(
                ErrorKind::Unauthorized,
                "FeastPermissionError",
                "missing or wrong bearer token (authorization: Bearer <token>)",
            )))
        }
    }

    /// Plans a `get_historical_features` command over `entities` and returns the encoded
    /// result stream.
    async fn historical(
        &self,
        command: &Json,
        entities: Entities,
    ) -> Result<BoxStream<FlightData>, FeastError> {
        let api = command.get("api").and_then(Json::as_str).unwrap_or("");
        if api != "get_historical_features" {
            return Err(unsupported_api(api));
        }
        let strings = |key: &str| -> Result<Vec<String>, FeastError> {
            command
                .get(key)
                .and_then(Json::as_array)
                .ok_or_else(|| bad_param(key))?
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad_param(key)))
                .collect()
        };
        let view_names = strings("feature_view_names")?;
        let refs = strings("feature_refs")?;
        let aliases: Vec<Option<String>> = command
            .get("name_aliases")
            .and_then(Json::as_array)
            .ok_or_else(|| bad_param("name_aliases"))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect();
        let full = command
            .get("full_feature_names")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let project = command.get("project").and_then(Json::as_str).unwrap_or("");
        if !project.is_empty() && project != self.registry.project {
            return Err(FeastError::new(
                ErrorKind::NotFound,
                "FeastError",
                format!(
                    "this server serves project {}, not {project}",
                    self.registry.project
                ),
            ));
        }
        // The SDK's stand-in for "no entity table" (a one-row `key` column): an SQL entity
        // query, which file sources cannot run.
        if entities.schema.fields().len() == 1 && entities.schema.field(0).name() == "key" {
            return Err(FeastError::new(
                ErrorKind::Unprocessable,
                "FeastError",
                "quiver's offline server needs an entity DataFrame; entity_df as SQL is not supported",
            ));
        }
        let registry = self.registry.load().await?;
        // Feast's remote client leaves on-demand views to the server: their refs come without
        // their views in `feature_view_names`, and are computed the way `quiver historical`
        // computes them.
        let on_demand = refs
            .iter()
            .filter_map(|r| r.split_once(':'))
            .any(|(prefix, _)| {
                (registry.on_demand_view(prefix).is_some()
                    || aliased_on_demand(&registry, prefix).is_some())
                    && !view_names.iter().any(|v| v == prefix)
            });
        let selection = if on_demand {
            if aliases.iter().any(Option::is_some) {
                // Aliases name feature-service projections: resolved into projections.
                let projections = feast_projections(&registry, &view_names, &aliases, &refs)?;
                select_projections(&registry, &projections, full)?
            } else {
                select_with_on_demand(&registry, &Features::Refs(refs), full)?
            }
        } else {
            OnDemandSelection {
                views: select_for_feast(&registry, &view_names, &aliases, &refs)?.into(),
                full_feature_names: full,
                on_demand: None,
            }
        };
        if let (Some(plan), None) = (&selection.on_demand, &self.transform) {
            return Err(FeastError::new(
                ErrorKind::NotImplemented,
                "FeastError",
                missing_service(plan),
            ));
        }
        let (_, schema, mut stream) = selection
            .execute(
                &self.engine,
                &registry,
                &self.registry.repo_dir,
                entities,
                self.transform.clone(),
            )
            .await?;
        // The first batch comes after the final sort, so most failures (memory, an unreadable
        // source) are known before the answer starts and get their own code.
        let first = match stream.next().await {
            Some(Err(e)) => return Err(Error::query("historical retrieval", e).into()),
            first => first,
        };
        let batches = futures::stream::iter(first).chain(stream).map_err(|e| {
            let e = FeastError::from(Error::query("historical retrieval", e));
            FlightError::Tonic(Box::new(status(&e)))
        });
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                e => status(&FeastError::new(
                    ErrorKind::Internal,
                    "FeastError",
                    e.to_string(),
                )),
            });
        Ok(Box::pin(encoded))
    }
}

/// The error for on-demand views the server was started without a transformation service for.
/// The on-demand view a feature service projects under the alias `alias`.
fn aliased_on_demand<'a>(registry: &'a ProjectRegistry, alias: &str) -> Option<&'a str> {
    registry
        .feature_services
        .iter()
        .flat_map(|s| &s.projections)
        .find(|p| p.alias.as_deref() == Some(alias) && registry.on_demand_view(&p.view).is_some())
        .map(|p| p.view.as_str())
}

/// The projections of a Feast client's request with aliases: each feature view under its alias
/// (with the join-key map of the feature-service projection that alias names), on-demand views
/// by name or by a feature service's alias for them; features from the refs, in their order.
fn feast_projections(
    registry: &ProjectRegistry,
    view_names: &[String],
    aliases: &[Option<String>],
    refs: &[String],
) -> Result<Vec<Projection>, FeastError> {
    let mut out: Vec<Projection> = Vec::new();
    for (i, name) in view_names.iter().enumerate() {
        if registry.feature_view(name).is_none() {
            return Err(FeastError::view_not_found(name, &registry.project));
        }
        let alias = aliases.get(i).cloned().flatten();
        let join_key_map = alias
            .as_deref()
            .and_then(|a| {
                registry
                    .feature_services
                    .iter()
                    .flat_map(|s| &s.projections)
                    .find(|p| p.view == *name && p.alias.as_deref() == Some(a))
            })
            .map(|p| p.join_key_map.clone())
            .unwrap_or_default();
        out.push(Projection {
            view: name.clone(),
            alias,
            features: Vec::new(),
            join_key_map,
        });
    }
    for r in refs {
        let (prefix, feature) = r.split_once(':').ok_or_else(|| bad_param("feature_refs"))?;
        let at = match out.iter().position(|p| p.name_to_use() == prefix) {
            Some(i) => i,
            None => {
                let (view, alias) = if registry.on_demand_view(prefix).is_some() {
                    (prefix.to_owned(), None)
                } else {
                    let view = aliased_on_demand(registry, prefix)
                        .ok_or_else(|| FeastError::view_not_found(prefix, &registry.project))?;
                    (view.to_owned(), Some(prefix.to_owned()))
                };
                out.push(Projection {
                    view,
                    alias,
                    features: Vec::new(),
                    join_key_map: Default::default(),
                });
                out.len() - 1
            }
        };
        let view = &out[at].view;
        let field = registry
            .feature_view(view)
            .and_then(|v| v.feature(feature))
            .or_else(|| {
                registry
                    .on_demand_view(view)
                    .and_then(|o| o.feature(feature))
            })
            .cloned()
            .ok_or_else(|| {
                FeastError::new(
                    ErrorKind::NotFound,
                    "FeastError",
                    format!("Feature view {view} has no feature {feature}"),
                )
            })?;
        if !out[at].features.iter().any(|f| f.name == feature) {
            out[at].features.push(field);
        }
    }
    // A projection without features means all of them: views no ref reads are left out.
    out.retain(|p| !p.features.is_empty());
    Ok(out)
}

pub fn missing_service(plan: &OnDemandPlan) -> String {
    format!(
        "on-demand feature view {} is computed by Feast's transformation service: run `feast serve_transformations --port P` in the feature repo and start quiver offline serve with --transformation-service 127.0.0.1:P",
        plan.views().collect::<Vec<_>>().join(", ")
    )
}

fn bad_param(key: &str) -> FeastError {
    FeastError::bad_request(format!(
        "get_historical_features: parameter {key} is missing or malformed"
    ))
}

fn unsupported_api(api: &str) -> FeastError {
    FeastError::bad_request(format!(
        "quiver's offline server serves get_historical_features; {api:?} is not supported"
    ))
}

/// The Flight error text Feast's client parses: `Flight error: {"module", "class", "message"}`.
pub fn flight_message(e: &FeastError) -> String {
    let json = serde_json::json!({"module": e.module, "class": e.class, "message": e.message});
    format!("Flight error: {json}")
}

/// The gRPC status for `e`: the code from its kind (quiver_core::fault's table), Feast's
/// message format; logged as loudly as the kind says.
fn status(e: &FeastError) -> Status {
    crate::error::log(e.kind, "offline flight request failed", &e.message);
    status_of(e.kind, flight_message(e))
}

/// A status of `kind`'s gRPC code with a plain message (for failures before a command is
/// known, which Feast's client does not parse).
fn status_of(kind: ErrorKind, message: impl Into<String>) -> Status {
    Status::new(tonic::Code::from_i32(kind.grpc_code()), message)
}

fn parse_command(descriptor: Option<&FlightDescriptor>) -> Result<(Vec<u8>, Json), Status> {
    let cmd = descriptor
        .map(|d| d.cmd.to_vec())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            status(&FeastError::bad_request(
                "expected a command descriptor carrying the request JSON",
            ))
        })?;
    let json: Json = serde_json::from_slice(&cmd).map_err(|e| {
        status(&FeastError::bad_request(format!(
            "the command is not JSON: {e}"
        )))
    })?;
    if json.get("api").and_then(Json::as_str).is_none() {
        return Err(status(&FeastError::bad_request(
            "the command has no \"api\"",
        )));
    }
    Ok((cmd, json))
}

/// Reads an uploaded table: the first message's descriptor and the decoded batches.
async fn read_upload(
    mut stream: Streaming<FlightData>,
) -> Result<(Option<FlightDescriptor>, Entities), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| status_of(ErrorKind::BadRequest, "empty stream"))?;
    let descriptor = first.flight_descriptor.clone();
    let messages = futures::stream::once(async move { Ok(first) })
        .chain(stream)
        .try_filter(|d| futures::future::ready(!d.data_header.is_empty()))
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let mut decoded = FlightRecordBatchStream::new_from_flight_data(messages);
    let mut batches: Vec<RecordBatch> = Vec::new();
    while let Some(batch) = decoded.next().await {
        batches.push(
            batch.map_err(|e| status_of(ErrorKind::BadRequest, format!("entity table: {e}")))?,
        );
    }
    let schema = match (decoded.schema(), batches.first()) {
        (Some(s), _) => Arc::clone(s),
        (None, Some(b)) => b.schema(),
        (None, None) => {
            return Err(status(&FeastError::bad_request(
                "the upload carried no entity table",
            )));
        }
    };
    Ok((descriptor, Entities { schema, batches }))
}

#[tonic::async_trait]
impl FlightService for OfflineServer {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let descriptor = request.into_inner();
        let known = self
            .pending
            .lock()
            .map(|p| p.contains_key(descriptor.cmd.as_ref()))
            .unwrap_or(false);
        if !known {
            return Err(status(&FeastError::new(
                ErrorKind::NotFound,
                "FeastError",
                "Flight not found: DoPut the entity table with this command first",
            )));
        }
        let ticket = Ticket {
            ticket: descriptor.cmd.clone(),
        };
        let info = FlightInfo::new()
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket));
        Ok(Response::new(info))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(status_of(ErrorKind::MethodNotAllowed, "poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(status_of(ErrorKind::MethodNotAllowed, "get_schema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.authorize(&request)?;
        let cmd = request.into_inner().ticket.to_vec();
        let entities = self
            .pending
            .lock()
            .map_err(|_| status_of(ErrorKind::Internal, "pending table lock poisoned"))?
            .remove(&cmd)
            .ok_or_else(|| {
                status(&FeastError::new(
                    ErrorKind::NotFound,
                    "FeastError",
                    "unknown ticket (already read, or never put)",
                ))
            })?;
        let command: Json = serde_json::from_slice(&cmd)
            .map_err(|e| status_of(ErrorKind::BadRequest, format!("ticket: {e}")))?;
        let stream = self
            .historical(&command, entities)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.authorize(&request)?;
        let (descriptor, entities) = read_upload(request.into_inner()).await?;
        let (cmd, command) = parse_command(descriptor.as_ref())?;
        let api = command.get("api").and_then(Json::as_str).unwrap_or("");
        if api != "get_historical_features" {
            return Err(status(&unsupported_api(api)));
        }
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| status_of(ErrorKind::Internal, "pending table lock poisoned"))?;
        if pending.len() >= MAX_PENDING {
            return Err(status_of(
                ErrorKind::OutOfResources,
                "too many entity tables waiting for their DoGet",
            ));
        }
        pending.insert(cmd, entities);
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.authorize(&request)?;
        let (descriptor, entities) = read_upload(request.into_inner()).await?;
        let (_, command) = parse_command(descriptor.as_ref())?;
        let stream = self
            .historical(&command, entities)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(stream))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.authorize(&request)?;
        let action = request.into_inner();
        Err(status(&FeastError::new(
            ErrorKind::MethodNotAllowed,
            "FeastError",
            format!(
                "action {:?} is not supported by quiver's offline server",
                action.r#type
            ),
        )))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}

/// Serves Flight on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: OfflineServer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    tonic::transport::Server::builder()
        .add_service(server.into_service())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|e| crate::Error::io("offline server", std::io::Error::other(e)))
}
