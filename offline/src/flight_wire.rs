//! What a Flight client sends the offline server, decoded with its cost known before memory is
//! given to it: the command JSON of a `FlightDescriptor`, the parameters of
//! `get_historical_features`, and an uploaded table's Arrow IPC messages.
//!
//! Nothing here needs DataFusion or the rest of the crate (only arrow, serde_json and
//! quiver-core), so the cargo-fuzz targets in `offline/fuzz` compile this file as it is
//! (`#[path]`) without the query engine; keep it free of `crate::` paths.
//!
//! An IPC message's cost ([`message_cost`]) is read off its header before it is decoded: its
//! bytes, plus the decompressed size each LZ4/ZSTD buffer declares (arrow allocates the declared
//! size before it decompresses, and a few KiB of zeros can declare gigabytes; a length past the
//! address space aborted the process), plus a byte per value where the buffers carry less than
//! that (an array of the null type, or run-end encoded, has no buffer as long as its values: a
//! header alone can declare 2^62 rows, and what reads such a column later expands it).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_schema::SchemaRef;
use futures::Stream;
use quiver_core::fault::ErrorKind;
use serde_json::Value as Json;

/// Why a command or upload was refused: whose fault (`kind`) and a message for the client that
/// names the field or message at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    fn bad(message: impl Into<String>) -> WireError {
        WireError {
            kind: ErrorKind::BadRequest,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A descriptor's command: JSON with a string `"api"`.
pub fn parse_command(cmd: &[u8]) -> Result<Json, WireError> {
    if cmd.is_empty() {
        return Err(WireError::bad(
            "expected a command descriptor carrying the request JSON",
        ));
    }
    let json: Json = serde_json::from_slice(cmd)
        .map_err(|e| WireError::bad(format!("the command is not JSON: {e}")))?;
    if json.get("api").and_then(Json::as_str).is_none() {
        return Err(WireError::bad("the command has no \"api\""));
    }
    Ok(json)
}

/// The parameters of a `get_historical_features` command, as Feast's remote client sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalParams {
    pub feature_view_names: Vec<String>,
    pub feature_refs: Vec<String>,
    /// One per view name: the feature-service projection's alias, if any.
    pub name_aliases: Vec<Option<String>>,
    pub full_feature_names: bool,
    /// Empty when the client named none.
    pub project: String,
    /// The entity rows as SQL (`get_historical_features(entity_df="SELECT ...")`): run by Spark
    /// when the repo's offline store is Spark; the client then uploads a one-row stand-in.
    pub entity_df_sql: Option<String>,
}

fn bad_param(key: &str) -> WireError {
    WireError::bad(format!(
        "get_historical_features: parameter {key} is missing or malformed"
    ))
}

/// Reads `get_historical_features`' parameters off its command.
pub fn historical_params(command: &Json) -> Result<HistoricalParams, WireError> {
    let strings = |key: &str| -> Result<Vec<String>, WireError> {
        command
            .get(key)
            .and_then(Json::as_array)
            .ok_or_else(|| bad_param(key))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad_param(key)))
            .collect()
    };
    let feature_view_names = strings("feature_view_names")?;
    let feature_refs = strings("feature_refs")?;
    let name_aliases = command
        .get("name_aliases")
        .and_then(Json::as_array)
        .ok_or_else(|| bad_param("name_aliases"))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect();
    let full_feature_names = match command.get("full_feature_names") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => return Err(bad_param("full_feature_names")),
    };
    let project = match command.get("project") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(p)) => p.clone(),
        Some(_) => return Err(bad_param("project")),
    };
    let entity_df_sql = match command.get("entity_df_sql") {
        None | Some(Json::Null) => None,
        Some(Json::String(q)) => Some(q.clone()),
        Some(_) => return Err(bad_param("entity_df_sql")),
    };
    Ok(HistoricalParams {
        feature_view_names,
        feature_refs,
        name_aliases,
        full_feature_names,
        project,
        entity_df_sql,
    })
}

/// The bytes decoding `message` may take (see the module docs): reserve them before the
/// message is kept. A header that does not parse costs its bytes (the decoder refuses it).
pub fn message_cost(message: &FlightData) -> Result<usize, WireError> {
    let body = message.data_body.len() as u64;
    let bytes = message.data_header.len() as u64 + body;
    if message.data_header.is_empty() {
        return Ok(saturate(bytes));
    }
    let Ok(header) = arrow_ipc::root_as_message(&message.data_header) else {
        return Ok(saturate(bytes));
    };
    let batch = header
        .header_as_record_batch()
        .or_else(|| header.header_as_dictionary_batch().and_then(|d| d.data()));
    let Some(batch) = batch else {
        return Ok(saturate(bytes));
    };
    let mut values: u64 = 0;
    for node in batch.nodes().iter().flat_map(|nodes| nodes.iter()) {
        let n = u64::try_from(node.length()).map_err(|_| {
            WireError::bad(format!(
                "entity table: an IPC record batch declares a negative length ({})",
                node.length()
            ))
        })?;
        values = values.saturating_add(n);
    }
    let mut decompressed: u64 = 0;
    if batch.compression().is_some() {
        for buffer in batch.buffers().iter().flat_map(|buffers| buffers.iter()) {
            // Each compressed buffer starts with its decompressed length (i64, little endian;
            // -1: stored uncompressed). A buffer outside the body is refused by the decoder.
            let prefix = usize::try_from(buffer.offset()).ok().and_then(|start| {
                let end = start.checked_add(8)?;
                message.data_body.get(start..end)
            });
            if buffer.length() < 8 {
                continue;
            }
            if let Some(prefix) = prefix {
                let mut le = [0u8; 8];
                le.copy_from_slice(prefix);
                let declared = i64::from_le_bytes(le);
                if declared > 0 {
                    decompressed = decompressed.saturating_add(declared as u64);
                }
            }
        }
    }
    let decoded = body.saturating_add(decompressed);
    Ok(saturate(
        bytes
            .saturating_add(decompressed)
            .saturating_add(values.saturating_sub(decoded)),
    ))
}

fn saturate(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Decodes an upload's messages (schema, dictionaries, record batches) into its schema and
/// batches. Reserve [`message_cost`] for each message first.
///
/// arrow's IPC reader panics on some malformed messages instead of returning an error (found by
/// the `flight_upload` fuzz target: a validity buffer shorter than its array, a buffer past the
/// body, an unknown or zero-width type, a field without a type); such a panic is caught here
/// and answered as a bad request, so the client gets a status rather than a dropped stream.
pub fn decode(messages: Vec<FlightData>) -> Result<(SchemaRef, Vec<RecordBatch>), WireError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_messages(messages)))
        .unwrap_or_else(|_| {
            Err(WireError::bad(
                "entity table: an IPC message does not decode (malformed buffers)",
            ))
        })
}

fn decode_messages(messages: Vec<FlightData>) -> Result<(SchemaRef, Vec<RecordBatch>), WireError> {
    let mut stream = FlightRecordBatchStream::new_from_flight_data(futures::stream::iter(
        messages.into_iter().map(Ok),
    ));
    // The messages are all here: the stream is never pending, and is polled in place.
    let mut cx = Context::from_waker(Waker::noop());
    let mut batches = Vec::new();
    loop {
        match Pin::new(&mut stream).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(batch))) => batches.push(batch),
            Poll::Ready(Some(Err(e))) => {
                return Err(WireError::bad(format!("entity table: {e}")));
            }
            Poll::Ready(None) => break,
            Poll::Pending => {
                return Err(WireError {
                    kind: ErrorKind::Internal,
                    message: "entity table: the decoder waited on messages already read".to_owned(),
                });
            }
        }
    }
    let schema = match (stream.schema(), batches.first()) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => b.schema(),
        (None, None) => return Err(WireError::bad("the upload carried no entity table")),
    };
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn historical_params_read_an_entity_query() {
        let base = serde_json::json!({
            "api": "get_historical_features",
            "feature_view_names": ["v"],
            "feature_refs": ["v:f"],
            "name_aliases": [null],
        });
        let with = |sql: Json| {
            let mut c = base.clone();
            c["entity_df_sql"] = sql;
            historical_params(&c)
        };
        assert_eq!(historical_params(&base).unwrap().entity_df_sql, None);
        assert_eq!(with(Json::Null).unwrap().entity_df_sql, None);
        assert_eq!(
            with(serde_json::json!("SELECT * FROM t"))
                .unwrap()
                .entity_df_sql,
            Some("SELECT * FROM t".to_owned())
        );
        let e = with(serde_json::json!(["SELECT 1"])).unwrap_err();
        assert!(format!("{e:?}").contains("entity_df_sql"), "{e:?}");
    }
}
