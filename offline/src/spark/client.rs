//! A Spark Connect session: gRPC `ExecutePlan` with SQL or local (Arrow IPC) relations, Arrow
//! batches streamed back, temporary views for uploaded tables, `ReleaseSession` at the end.
//!
//! One [`SparkSession`] is one Spark session (a fresh UUID unless the URL names one): its
//! temporary views and settings are its own and go away with it. Every call carries the user
//! context and, when the URL has a token, `authorization: Bearer <token>`.

use std::io::Cursor;
use std::pin::Pin;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use quiver_core::fault::{Classified, ErrorKind};
use quiver_registry::spark::{SparkConfig, SparkRemote};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::proto;
use crate::Error;

const CLIENT_TYPE: &str = concat!("quiver/", env!("CARGO_PKG_VERSION"));
/// Spark's default inbound limit is 128 MiB; uploads are cut well below it.
const MAX_MESSAGE: usize = 128 << 20;
/// Entity rows go up in LocalRelations of about this many bytes of Arrow IPC each.
pub const UPLOAD_CHUNK: usize = 16 << 20;

/// How a session talks to Spark.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Connecting (TCP and TLS).
    pub connect_timeout: Duration,
    /// One whole plan, results included (`grpc-timeout`).
    pub timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            connect_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(6 * 3600),
        }
    }
}

/// A Spark Connect failure: the gRPC status Spark answered with (its message carries Spark's
/// error class and cause), or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    #[error("cannot reach Spark Connect at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("Spark answered {code:?}: {message}")]
    Status {
        code: tonic::Code,
        message: String,
        /// Spark reported an analysis error (a missing table, column or path, a type
        /// mismatch): the definitions or the data, not Spark, are at fault.
        analysis: bool,
    },
    #[error("Spark's answer is malformed: {0}")]
    Protocol(String),
}

impl Classified for SparkError {
    fn kind(&self) -> ErrorKind {
        match self {
            SparkError::Connect { .. } => ErrorKind::Unavailable,
            SparkError::Status { analysis: true, .. } => ErrorKind::Unprocessable,
            SparkError::Status { code, .. } => match code {
                tonic::Code::Unavailable => ErrorKind::Unavailable,
                tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
                tonic::Code::ResourceExhausted => ErrorKind::TooLarge,
                _ => ErrorKind::UpstreamFailed,
            },
            SparkError::Protocol(_) => ErrorKind::UpstreamFailed,
        }
    }
}

impl SparkError {
    fn from_status(s: tonic::Status) -> SparkError {
        // Spark Connect sends every failure as INTERNAL with an ErrorInfo naming the exception
        // class; analysis errors (unknown table, column, path) are the caller's data.
        let details = s.details();
        let analysis = s.code() == tonic::Code::InvalidArgument
            || contains(details, b"AnalysisException")
            || contains(details, b"AnalysisError")
            || [
                "[TABLE_OR_VIEW_NOT_FOUND]",
                "[UNRESOLVED_COLUMN",
                "[PATH_NOT_FOUND]",
            ]
            .iter()
            .any(|c| s.message().contains(c))
            // SQLSTATE class 42: "syntax error or access rule violation" (a type Spark cannot
            // read, a bad query in a definition).
            || s.message().contains("SQLSTATE: 42");
        let mut message = s.message().to_owned();
        // Spark appends the JVM stack to some messages; the first lines say it.
        if let Some(cut) = message.find("\n\tat ") {
            message.truncate(cut);
        }
        SparkError::Status {
            code: s.code(),
            message,
            analysis,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Where Spark writes a result itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparkTarget {
    /// A folder of Parquet part files, as Spark names it (`s3a://bucket/prefix`,
    /// `hdfs://...`, or an absolute path on Spark's machines).
    Path(String),
    /// A table in Spark's catalog (`db.name`), created as Parquet.
    Table(String),
}

impl SparkTarget {
    /// `table:NAME` is a table; a URI (`scheme://...`) or an absolute path is a folder. A
    /// relative path is refused: it would be relative to the Spark server's working directory.
    pub fn parse(text: &str) -> Result<SparkTarget, String> {
        if let Some(name) = text.strip_prefix("table:") {
            let ok = !name.is_empty()
                && name.split('.').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            return if ok {
                Ok(SparkTarget::Table(name.to_owned()))
            } else {
                Err(format!(
                    "{text:?}: expected table:NAME with NAME a table name (letters, digits, _; parts separated by .)"
                ))
            };
        }
        if text.contains("://") || text.starts_with('/') {
            return Ok(SparkTarget::Path(text.to_owned()));
        }
        Err(format!(
            "{text:?}: expected a folder Spark can write (s3a://bucket/prefix, hdfs://..., or an absolute path on Spark's machines) or table:NAME"
        ))
    }
}

/// One Spark session over one gRPC channel.
pub struct SparkSession {
    channel: Channel,
    remote: SparkRemote,
    session_id: String,
    token: Option<AsciiMetadataValue>,
    options: SessionOptions,
}

pub(crate) type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, Error>> + Send>>;

impl SparkSession {
    /// Connects and opens a session with `config.conf` (and a UTC session time zone, quiver's
    /// rule for naive timestamps) set in it.
    pub async fn open(
        config: &SparkConfig,
        options: SessionOptions,
    ) -> Result<SparkSession, Error> {
        let remote = &config.remote;
        let endpoint_text = remote.endpoint();
        let connect_err = |message: String| {
            Error::wrap(
                "Spark",
                SparkError::Connect {
                    endpoint: format!("{}:{}", remote.host, remote.port),
                    message,
                },
            )
        };
        let mut endpoint = Endpoint::from_shared(endpoint_text.clone())
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if remote.use_ssl {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .with_native_roots()
                        .domain_name(remote.host.clone()),
                )
                .map_err(|e| connect_err(format!("TLS: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect_err(source_chain(&e)))?;
        let token = match &remote.token {
            Some(t) => Some(
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| connect_err("the token is not valid header text".to_owned()))?,
            ),
            None => None,
        };
        let session = SparkSession {
            channel,
            remote: remote.clone(),
            session_id: remote
                .session_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            token,
            options,
        };
        for (k, v) in &config.conf {
            session
                .run_sql(&format!("SET {}={}", quote_conf(k), quote_conf(v)))
                .await
                .map_err(|e| e.context(format!("setting spark_conf {k}")))?;
        }
        session
            .run_sql("SET spark.sql.session.timeZone=UTC")
            .await?;
        Ok(session)
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    fn user_context(&self) -> proto::UserContext {
        let user = self
            .remote
            .user_id
            .clone()
            .unwrap_or_else(|| "quiver".to_owned());
        proto::UserContext {
            user_id: user.clone(),
            user_name: user,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.options.timeout);
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(agent) = &self.remote.user_agent
            && let Ok(v) = MetadataValue::try_from(agent.as_str())
        {
            req.metadata_mut().insert("x-spark-user-agent", v);
        }
        req
    }

    fn grpc(&self) -> tonic::client::Grpc<Channel> {
        tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Runs a plan; the Arrow batches of its result as they arrive.
    async fn execute(&self, plan: proto::Plan, context: &str) -> Result<BatchStream, Error> {
        let request = proto::ExecutePlanRequest {
            session_id: self.session_id.clone(),
            user_context: Some(self.user_context()),
            plan: Some(plan),
            client_type: Some(CLIENT_TYPE.to_owned()),
            operation_id: Some(uuid::Uuid::new_v4().to_string()),
            tags: Vec::new(),
        };
        let mut grpc = self.grpc();
        let wrap = {
            let context = context.to_owned();
            move |e: SparkError| Error::wrap(format!("Spark: {context}"), e)
        };
        grpc.ready().await.map_err(|e| {
            wrap(SparkError::Connect {
                endpoint: format!("{}:{}", self.remote.host, self.remote.port),
                message: source_chain(&e),
            })
        })?;
        let codec: tonic_prost::ProstCodec<proto::ExecutePlanRequest, proto::ExecutePlanResponse> =
            tonic_prost::ProstCodec::default();
        let path = PathAndQuery::from_static("/spark.connect.SparkConnectService/ExecutePlan");
        let responses = grpc
            .server_streaming(self.request(request), path, codec)
            .await
            .map_err(|s| wrap(SparkError::from_status(s)))?
            .into_inner();
        let state = (responses, false, wrap);
        let stream = futures::stream::unfold(state, |(mut responses, done, wrap)| async move {
            if done {
                return None;
            }
            loop {
                match responses.message().await {
                    Err(s) => {
                        return Some((
                            Err(wrap(SparkError::from_status(s))),
                            (responses, true, wrap),
                        ));
                    }
                    // A plan that is not reattachable ends with the stream (status OK); a
                    // broken stream is an error status, not an end.
                    Ok(None) => return None,
                    Ok(Some(r)) => match r.response_type {
                        Some(proto::execute_plan_response::ResponseType::ArrowBatch(b)) => {
                            let batches = decode(b.data).map_err(&wrap);
                            return Some((batches, (responses, false, wrap)));
                        }
                        Some(proto::execute_plan_response::ResponseType::ResultComplete(_)) => {
                            return None;
                        }
                        // Progress, metrics and command results: nothing to hand on.
                        None => continue,
                    },
                }
            }
        });
        let flat = stream.flat_map(|r: Result<Vec<RecordBatch>, Error>| {
            futures::stream::iter(match r {
                Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(flat))
    }

    /// Runs Spark SQL; its rows as Arrow batches, in the order Spark sends them.
    pub async fn sql(&self, query: &str) -> Result<BatchStream, Error> {
        self.execute(
            proto::Plan {
                op_type: Some(proto::plan::OpType::Root(proto::Relation {
                    rel_type: Some(proto::relation::RelType::Sql(proto::Sql {
                        query: query.to_owned(),
                    })),
                })),
            },
            "running SQL",
        )
        .await
    }

    /// Runs SQL for its effect (a SET, a DDL statement), draining its answer.
    pub async fn run_sql(&self, query: &str) -> Result<(), Error> {
        let mut s = self.sql(query).await?;
        while let Some(b) = s.next().await {
            b?;
        }
        Ok(())
    }

    /// The schema of a query's result, without reading its rows (`LIMIT 0`).
    pub async fn schema_of(&self, from: &str) -> Result<SchemaRef, Error> {
        let mut s = self.sql(&format!("SELECT * FROM {from} LIMIT 0")).await?;
        let mut schema = None;
        while let Some(b) = s.next().await {
            schema.get_or_insert(b?.schema());
        }
        schema.ok_or_else(|| {
            Error::wrap(
                "Spark",
                SparkError::Protocol(format!("no schema came back for {from}")),
            )
        })
    }

    /// Uploads `batches` as the session's temporary view `name`: Arrow IPC LocalRelations of
    /// at most about [`UPLOAD_CHUNK`] bytes each (one gRPC message apiece), unioned.
    pub async fn upload_view(
        &self,
        name: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), Error> {
        let mut parts = Vec::new();
        let mut chunk: Vec<RecordBatch> = Vec::new();
        let mut size = 0usize;
        let flush = |chunk: &mut Vec<RecordBatch>, parts: &mut Vec<Bytes>| -> Result<(), Error> {
            if !chunk.is_empty() || parts.is_empty() {
                parts.push(encode(schema, chunk)?);
            }
            chunk.clear();
            Ok(())
        };
        for b in batches {
            // Big batches are cut so that no message nears Spark's limit.
            let rows_per = if b.get_array_memory_size() > UPLOAD_CHUNK && b.num_rows() > 1 {
                let per_row = b.get_array_memory_size() / b.num_rows();
                (UPLOAD_CHUNK / per_row.max(1)).max(1)
            } else {
                b.num_rows().max(1)
            };
            let mut at = 0;
            while at < b.num_rows() {
                let n = rows_per.min(b.num_rows() - at);
                let piece = b.slice(at, n);
                at += n;
                size += piece.get_array_memory_size();
                chunk.push(piece);
                if size >= UPLOAD_CHUNK {
                    flush(&mut chunk, &mut parts)?;
                    size = 0;
                }
            }
        }
        if !chunk.is_empty() || parts.is_empty() {
            flush(&mut chunk, &mut parts)?;
        }
        let part_names: Vec<String> = (0..parts.len())
            .map(|i| format!("{name}_part{i}"))
            .collect();
        for (data, part) in parts.into_iter().zip(&part_names) {
            self.create_view(
                part,
                proto::Relation {
                    rel_type: Some(proto::relation::RelType::LocalRelation(
                        proto::LocalRelation {
                            data: Some(data),
                            schema: None,
                        },
                    )),
                },
            )
            .await?;
        }
        let union = part_names
            .iter()
            .map(|p| format!("SELECT * FROM {p}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        self.run_sql(&format!(
            "CREATE OR REPLACE TEMPORARY VIEW {name} AS {union}"
        ))
        .await
    }

    /// Spark writes the rows of `query` to `target` itself, as Parquet (the rows never pass
    /// through this client). An existing path or table is an error, never overwritten.
    pub async fn write(&self, query: &str, target: &SparkTarget) -> Result<(), Error> {
        use proto::write_operation::{SaveMode, SaveTable, SaveType, save_table::TableSaveMethod};
        let save_type = match target {
            SparkTarget::Path(path) => SaveType::Path(path.clone()),
            SparkTarget::Table(name) => SaveType::Table(SaveTable {
                table_name: name.clone(),
                save_method: TableSaveMethod::SaveAsTable as i32,
            }),
        };
        let write = proto::WriteOperation {
            input: Some(proto::Relation {
                rel_type: Some(proto::relation::RelType::Sql(proto::Sql {
                    query: query.to_owned(),
                })),
            }),
            source: Some("parquet".to_owned()),
            save_type: Some(save_type),
            mode: SaveMode::ErrorIfExists as i32,
        };
        let mut s = self
            .execute(
                proto::Plan {
                    op_type: Some(proto::plan::OpType::Command(proto::Command {
                        command_type: Some(proto::command::CommandType::WriteOperation(write)),
                    })),
                },
                "writing the result",
            )
            .await?;
        while let Some(b) = s.next().await {
            b?;
        }
        Ok(())
    }

    async fn create_view(&self, name: &str, input: proto::Relation) -> Result<(), Error> {
        let mut s = self
            .execute(
                proto::Plan {
                    op_type: Some(proto::plan::OpType::Command(proto::Command {
                        command_type: Some(proto::command::CommandType::CreateDataframeView(
                            proto::CreateDataFrameViewCommand {
                                input: Some(input),
                                name: name.to_owned(),
                                is_global: false,
                                replace: true,
                            },
                        )),
                    })),
                },
                "uploading the entity table",
            )
            .await?;
        while let Some(b) = s.next().await {
            b?;
        }
        Ok(())
    }

    /// Ends the session on the server (its views and cached state go); best effort.
    pub async fn release(self) {
        let request = proto::ReleaseSessionRequest {
            session_id: self.session_id.clone(),
            user_context: Some(self.user_context()),
            client_type: Some(CLIENT_TYPE.to_owned()),
        };
        let mut grpc = self.grpc();
        if grpc.ready().await.is_err() {
            return;
        }
        let codec: tonic_prost::ProstCodec<
            proto::ReleaseSessionRequest,
            proto::ReleaseSessionResponse,
        > = tonic_prost::ProstCodec::default();
        let path = PathAndQuery::from_static("/spark.connect.SparkConnectService/ReleaseSession");
        let mut req = self.request(request);
        req.set_timeout(Duration::from_secs(10));
        if let Err(e) = grpc.unary(req, path, codec).await {
            tracing::debug!(error = %e, session = %self.session_id, "releasing the Spark session");
        }
    }
}

/// A Spark conf key or value inside `SET k=v`: plain words as they are, anything else quoted
/// with backticks (Spark's SET accepts quoted keys and values).
fn quote_conf(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
        && !s.is_empty()
    {
        s.to_owned()
    } else {
        format!("`{}`", s.replace('`', "``"))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// One ArrowBatch message: an Arrow IPC stream (schema, then batches).
fn decode(data: Bytes) -> Result<Vec<RecordBatch>, SparkError> {
    let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(data), None)
        .map_err(|e| SparkError::Protocol(format!("an Arrow batch does not decode: {e}")))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SparkError::Protocol(format!("an Arrow batch does not decode: {e}")))
}

fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema)
        .map_err(|e| Error::arrow("encoding the entity table for Spark", e))?;
    for b in batches {
        w.write(b)
            .map_err(|e| Error::arrow("encoding the entity table for Spark", e))?;
    }
    w.finish()
        .map_err(|e| Error::arrow("encoding the entity table for Spark", e))?;
    drop(w);
    Ok(Bytes::from(out))
}
