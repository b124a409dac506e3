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
//!
//! Pushes to the offline store through Feast's client (`offline_write_batch` on `DoPut`, after
//! `get_table_column_names_and_types_from_data_source`) are served by [`offline_write`]: the
//! source and view are found by name in the registry, and the rows appended by the code a
//! sidecar's `to: offline` push runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use quiver_core::fault::{Classified as _, ErrorKind};
use quiver_core::model::Projection;
use quiver_core::registry::ProjectRegistry;
use serde_json::Value as Json;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::append::ParquetAppender;
use crate::budget::{MemoryBudget, Reservation};
use crate::flight_wire;
use crate::historical::{Entities, FeastError, Features, HistoricalEngine, select_for_feast};
use crate::offline_write::{self, COLUMNS_API, VALIDATE_API, WRITE_API};
use crate::on_demand::{
    OnDemandPlan, Selection as OnDemandSelection, TransformClient, select_projections,
    select_with_on_demand,
};
use crate::spark::historical::{InSpark, SparkEntities};

const HISTORICAL_API: &str = "get_historical_features";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Where the registry is: a local file, an `s3://`/`gs://` object, or the registry service.
#[derive(Debug, Clone)]
pub enum RegistryPlace {
    File(PathBuf),
    Object(quiver_registry::object::ObjectRegistry),
    Service(Arc<crate::remote_registry::RemoteRegistry>),
}

impl std::fmt::Display for RegistryPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryPlace::File(p) => write!(f, "{}", p.display()),
            RegistryPlace::Object(o) => write!(f, "{}", o.uri()),
            RegistryPlace::Service(r) => write!(f, "{}", r.url()),
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
                    .map_err(|e| {
                        // The store's own words stay in the log.
                        crate::error::log(e.kind(), "reading the registry failed", &e.to_string());
                        err(
                            e.kind(),
                            &"the store failed or refused (details in the server's log)",
                        )
                    })?
                    .0
            }
            // Already the project's, its errors already the client's.
            RegistryPlace::Service(r) => return r.load().await,
        };
        // The registry holds no such project: the server was started for one it lacks.
        file.project(&self.project)
            .map_err(|e| err(ErrorKind::NotFound, &e))
    }
}

/// Most entity tables parked between `DoPut` and `DoGet`; past it the oldest is dropped.
const MAX_PENDING: usize = 64;

/// How long a `DoPut` table waits for its `DoGet`, and how many bytes all of them may hold,
/// by default (Feast's client asks for the result right after the put).
pub const DEFAULT_PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// An entity table put by `DoPut`, its memory still reserved, waiting for its `DoGet`.
struct PendingTable {
    entities: Entities,
    reservation: Reservation,
    put_at: std::time::Instant,
}

/// The tables waiting for their `DoGet`: they expire after `ttl`, and past `MAX_PENDING`
/// tables or `max_bytes` the oldest are dropped, so abandoned puts cannot lock the path out.
#[derive(Default)]
struct Pending {
    tables: HashMap<Vec<u8>, PendingTable>,
}

impl Pending {
    fn expire(&mut self, ttl: std::time::Duration) {
        let now = std::time::Instant::now();
        self.tables
            .retain(|_, t| now.saturating_duration_since(t.put_at) < ttl);
    }

    fn bytes(&self) -> usize {
        self.tables.values().map(|t| t.reservation.bytes()).sum()
    }

    /// Drops the oldest tables until one of `bytes` more fits under both bounds.
    fn make_room(&mut self, bytes: usize, max_bytes: usize) {
        while !self.tables.is_empty()
            && (self.tables.len() >= MAX_PENDING || self.bytes() + bytes > max_bytes)
        {
            let oldest = self
                .tables
                .iter()
                .min_by_key(|(_, t)| t.put_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.tables.remove(&k);
                tracing::warn!(
                    "dropped an entity table that waited for its DoGet, to make room for a new DoPut"
                );
            }
        }
    }
}

/// The state shared by requests.
pub struct OfflineServer {
    engine: HistoricalEngine,
    registry: RegistrySource,
    token: Option<String>,
    /// Feast's transformation service, for on-demand views (`--transformation-service`).
    transform: Option<Arc<TransformClient>>,
    /// `offline_write_batch`'s appends to batch sources (the sidecar's push code).
    appender: Arc<ParquetAppender>,
    /// Most rows one `offline_write_batch` may carry.
    max_write_rows: usize,
    /// Entity tables put by `DoPut`, by command, until their `DoGet`.
    pending: Mutex<Pending>,
    /// How long a `DoPut` table waits for its `DoGet`, and the bytes all of them may hold.
    pending_ttl: std::time::Duration,
    pending_max_bytes: usize,
    /// Upload memory, shared with the HTTP server (see [`crate::budget`]).
    budget: MemoryBudget,
}

impl OfflineServer {
    pub fn new(
        engine: HistoricalEngine,
        registry: RegistrySource,
        token: Option<String>,
    ) -> OfflineServer {
        let appender = ParquetAppender::new(&registry.repo_dir);
        OfflineServer {
            engine,
            registry,
            token: token.filter(|t| !t.is_empty()),
            transform: None,
            appender,
            max_write_rows: offline_write::DEFAULT_MAX_ROWS,
            pending: Mutex::new(Pending::default()),
            pending_ttl: DEFAULT_PENDING_TTL,
            pending_max_bytes: crate::budget::DEFAULT_BYTES / 2,
            budget: MemoryBudget::new(crate::budget::DEFAULT_BYTES, crate::budget::DEFAULT_WAIT),
        }
    }

    /// Most rows one `offline_write_batch` may carry (more: RESOURCE_EXHAUSTED).
    pub fn with_max_write_rows(mut self, rows: usize) -> OfflineServer {
        self.max_write_rows = rows;
        self
    }

    /// Uploads reserve their memory from `budget` (share it with the HTTP server).
    pub fn with_budget(mut self, budget: MemoryBudget) -> OfflineServer {
        self.budget = budget;
        self
    }

    /// `DoPut` tables expire after `ttl`; all of them hold at most `max_bytes` (the oldest
    /// dropped past it).
    pub fn with_pending_limits(
        mut self,
        ttl: std::time::Duration,
        max_bytes: usize,
    ) -> OfflineServer {
        self.pending_ttl = ttl;
        self.pending_max_bytes = max_bytes;
        self
    }

    /// Computes on-demand views the request reads on Feast's transformation service.
    pub fn with_transformation_service(mut self, client: Arc<TransformClient>) -> OfflineServer {
        self.transform = Some(client);
        self
    }

    pub fn into_service(self) -> FlightServiceServer<OfflineServer> {
        let largest = largest_message(&self.budget);
        FlightServiceServer::new(self)
            .max_decoding_message_size(largest)
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

    /// Answers a read command (`get_historical_features` over `entities`, or the columns of a
    /// data source) with its encoded result stream.
    async fn read_api(
        &self,
        command: &Json,
        entities: Entities,
    ) -> Result<BoxStream<FlightData>, FeastError> {
        if command.get("api").and_then(Json::as_str) == Some(COLUMNS_API) {
            let registry = self.registry.load().await?;
            let table =
                offline_write::source_columns(&registry, &self.registry.repo_dir, command).await?;
            let encoded = FlightDataEncoderBuilder::new()
                .build(futures::stream::iter([Ok(table)]))
                .map_err(|e| {
                    status(&FeastError::new(
                        ErrorKind::Internal,
                        "FeastError",
                        e.to_string(),
                    ))
                });
            return Ok(Box::pin(encoded));
        }
        self.historical(command, entities).await
    }

    /// `offline_write_batch`: appends the uploaded table to the view's batch source.
    async fn write(&self, command: &Json, table: Entities) -> Result<(), FeastError> {
        let registry = self.registry.load().await?;
        let written = offline_write::write_batch(
            &registry,
            &self.appender,
            self.max_write_rows,
            command,
            table,
        )
        .await?;
        if let Some(at) = written {
            tracing::info!(at = %at, "offline_write_batch appended rows");
        }
        Ok(())
    }

    /// Plans a `get_historical_features` command over `entities` and returns the encoded
    /// result stream.
    async fn historical(
        &self,
        command: &Json,
        entities: Entities,
    ) -> Result<BoxStream<FlightData>, FeastError> {
        let api = command.get("api").and_then(Json::as_str).unwrap_or("");
        if api != HISTORICAL_API {
            return Err(unsupported_api(api));
        }
        let params = flight_wire::historical_params(command)?;
        let (view_names, refs, aliases, full, project, entity_sql) = (
            params.feature_view_names,
            params.feature_refs,
            params.name_aliases,
            params.full_feature_names,
            params.project,
            params.entity_df_sql,
        );
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
        // query, which Spark runs where the data is; the local engine cannot.
        let entity_sql = if entities.schema.fields().len() == 1
            && entities.schema.field(0).name() == "key"
        {
            match (entity_sql, self.engine.spark()) {
                (Some(sql), Some(_)) => Some(sql),
                _ => {
                    return Err(FeastError::new(
                        ErrorKind::Unprocessable,
                        "FeastError",
                        "entity_df as SQL runs on Spark: this server's repo needs offline_store: {type: spark}; otherwise send an entity DataFrame",
                    ));
                }
            }
        } else {
            None
        };
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
        // Feast's offline server appends on-demand outputs after every other column (its
        // retrieval job computes them last), whatever the order of the refs.
        let on_demand_last: Vec<String> = selection
            .on_demand
            .as_ref()
            .map(|p| p.output_names().map(str::to_owned).collect())
            .unwrap_or_default();
        let (schema, stream) = match (entity_sql, self.engine.spark()) {
            (Some(sql), Some(spark)) => {
                if let Some(plan) = &selection.on_demand {
                    return Err(FeastError::new(
                        ErrorKind::Unprocessable,
                        "FeastError",
                        format!(
                            "on-demand feature view {}: entity_df as SQL does not compute on-demand views; send an entity DataFrame",
                            plan.views().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                let done = spark
                    .retrieve_in_spark(
                        &registry,
                        &self.registry.repo_dir,
                        &selection.views,
                        full,
                        SparkEntities::Query(sql),
                        None,
                    )
                    .await?;
                let InSpark::Streamed(r) = done else {
                    return Err(Error::internal("Spark wrote a result nobody asked it to").into());
                };
                (r.schema, r.stream)
            }
            _ => {
                let (_, schema, stream) = selection
                    .execute(
                        &self.engine,
                        &registry,
                        &self.registry.repo_dir,
                        entities,
                        self.transform.clone(),
                    )
                    .await?;
                (schema, stream)
            }
        };
        let (schema, mut stream) = if on_demand_last.is_empty() {
            (schema, stream)
        } else {
            let fields = schema.fields();
            let order: Vec<usize> = (0..fields.len())
                .filter(|&i| !on_demand_last.contains(fields[i].name()))
                .chain((0..fields.len()).filter(|&i| on_demand_last.contains(fields[i].name())))
                .collect();
            let projected = Arc::new(
                schema
                    .project(&order)
                    .map_err(|e| Error::arrow("historical retrieval", e))?,
            );
            let batches = stream.map(move |b| {
                b.and_then(|b| {
                    b.project(&order)
                        .map_err(datafusion::error::DataFusionError::from)
                })
            });
            let adapted: datafusion::execution::SendableRecordBatchStream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    Arc::clone(&projected),
                    batches,
                ),
            );
            (projected, adapted)
        };
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

impl From<flight_wire::WireError> for FeastError {
    fn from(e: flight_wire::WireError) -> FeastError {
        FeastError::new(e.kind, "FeastError", e.message)
    }
}

fn unsupported_api(api: &str) -> FeastError {
    FeastError::bad_request(format!(
        "quiver's offline server serves {HISTORICAL_API}, {COLUMNS_API}, {WRITE_API} and {VALIDATE_API}; {api:?} is not supported"
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
    let cmd = descriptor.map(|d| d.cmd.to_vec()).unwrap_or_default();
    let json = flight_wire::parse_command(&cmd).map_err(|e| status(&e.into()))?;
    Ok((cmd, json))
}

/// Reads an uploaded table: the first message's descriptor and the decoded batches. Each
/// message's cost (its bytes, and what its header declares decoding will take: see
/// [`flight_wire`]) is reserved from `budget` before the next is read, and the table decoded
/// only once all of it is reserved (a table larger than the whole budget, or one that finds no
/// room in time, is refused).
async fn read_upload(
    mut stream: Streaming<FlightData>,
    budget: &MemoryBudget,
) -> Result<(Option<FlightDescriptor>, Entities, Reservation), Status> {
    let mut reservation = budget.empty();
    let mut messages = Vec::new();
    let mut descriptor = None;
    let mut any = false;
    while let Some(message) = stream.message().await.map_err(|e| too_large(e, budget))? {
        if !any {
            descriptor = message.flight_descriptor.clone();
            any = true;
        }
        let cost = flight_wire::message_cost(&message).map_err(|e| status(&e.into()))?;
        reservation
            .grow(cost, "entity table upload")
            .await
            .map_err(|e| status(&FeastError::from(Error::from(e))))?;
        if !message.data_header.is_empty() {
            messages.push(message);
        }
    }
    if !any {
        return Err(status_of(ErrorKind::BadRequest, "empty stream"));
    }
    let (schema, batches) = flight_wire::decode(messages).map_err(|e| status(&e.into()))?;
    Ok((descriptor, Entities { schema, batches }, reservation))
}

/// The largest message tonic accepts: what the budget could hold. tonic buffers a whole
/// message before the server sees it, so a larger one is refused when its length prefix
/// arrives, before its bytes are read (else each stream could hold one message past the budget).
fn largest_message(budget: &MemoryBudget) -> usize {
    budget.bytes().clamp(4 << 10, 1 << 30)
}

/// tonic's refusal of a message over [`largest_message`] (OUT_OF_RANGE, in its own words), as
/// quiver's TooLarge; other stream errors pass as they are.
fn too_large(e: Status, budget: &MemoryBudget) -> Status {
    if e.code() != tonic::Code::OutOfRange {
        return e;
    }
    tracing::info!(error = %e.message(), "refused an upload message over the upload budget");
    status(&FeastError::new(
        ErrorKind::TooLarge,
        "FeastError",
        format!(
            "an upload message is larger than the {} bytes the upload budget holds (--upload-memory): send the table in smaller record batches",
            largest_message(budget)
        ),
    ))
}

/// `stream` with `reservation` held until it ends or is dropped.
fn holding(stream: BoxStream<FlightData>, reservation: Reservation) -> BoxStream<FlightData> {
    Box::pin(stream.map(move |item| {
        let _held = &reservation;
        item
    }))
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
            .map(|mut p| {
                p.expire(self.pending_ttl);
                p.tables.contains_key(descriptor.cmd.as_ref())
            })
            .unwrap_or(false);
        if !known {
            return Err(status(&FeastError::new(
                ErrorKind::NotFound,
                "FeastError",
                "Flight not found (never put, already read, or expired): DoPut the entity table with this command first",
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
        let PendingTable {
            entities,
            reservation,
            ..
        } = {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| status_of(ErrorKind::Internal, "pending table lock poisoned"))?;
            pending.expire(self.pending_ttl);
            pending.tables.remove(&cmd).ok_or_else(|| {
                status(&FeastError::new(
                    ErrorKind::NotFound,
                    "FeastError",
                    "unknown ticket (already read, expired, or never put)",
                ))
            })?
        };
        let command: Json = serde_json::from_slice(&cmd)
            .map_err(|e| status_of(ErrorKind::BadRequest, format!("ticket: {e}")))?;
        let stream = self
            .read_api(&command, entities)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(holding(stream, reservation)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.authorize(&request)?;
        let (descriptor, entities, reservation) =
            read_upload(request.into_inner(), &self.budget).await?;
        let (cmd, command) = parse_command(descriptor.as_ref())?;
        let api = command.get("api").and_then(Json::as_str).unwrap_or("");
        if api == WRITE_API {
            self.write(&command, entities)
                .await
                .map_err(|e| status(&e))?;
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        }
        if api == VALIDATE_API {
            let registry = self.registry.load().await.map_err(|e| status(&e))?;
            offline_write::validate_source(&registry, &self.registry.repo_dir, &command)
                .await
                .map_err(|e| status(&e))?;
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        }
        if api != HISTORICAL_API && api != COLUMNS_API {
            return Err(status(&unsupported_api(api)));
        }
        if reservation.bytes() > self.pending_max_bytes {
            return Err(status(&FeastError::new(
                ErrorKind::TooLarge,
                "FeastError",
                format!(
                    "an entity table of {} bytes is more than DoPut tables may hold ({} bytes); send it with DoExchange",
                    reservation.bytes(),
                    self.pending_max_bytes
                ),
            )));
        }
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| status_of(ErrorKind::Internal, "pending table lock poisoned"))?;
        pending.expire(self.pending_ttl);
        pending.tables.remove(&cmd);
        pending.make_room(reservation.bytes(), self.pending_max_bytes);
        pending.tables.insert(
            cmd,
            PendingTable {
                entities,
                reservation,
                put_at: std::time::Instant::now(),
            },
        );
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.authorize(&request)?;
        let (descriptor, entities, reservation) =
            read_upload(request.into_inner(), &self.budget).await?;
        let (_, command) = parse_command(descriptor.as_ref())?;
        let stream = self
            .read_api(&command, entities)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(holding(stream, reservation)))
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
