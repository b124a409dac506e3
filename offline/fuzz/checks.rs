//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/`) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora through these same functions in
//! the normal test suite (CI). Each function takes the fuzzer's bytes and panics on a finding.
//! `flight_wire` is the crate's module (the test) or the same file compiled into the target.

#![allow(dead_code)] // each fuzz target uses one function

use arrow_flight::FlightData;

use super::flight_wire;

/// Most bytes an input may cost before it is decoded: the server refuses more (its budget).
const BUDGET: usize = 16 << 20;

/// Most messages taken from one input.
const MAX_MESSAGES: usize = 64;

/// Splits an Arrow IPC stream (what pyarrow and arrow-rs write: `[0xFFFFFFFF] <i32 length>
/// <flatbuffer Message> <body of Message.bodyLength bytes>`, repeated) into the messages a Flight
/// client sends, so corpus files are real IPC streams. Stops at what does not frame.
pub fn ipc_messages(mut data: &[u8]) -> Vec<FlightData> {
    let mut out = Vec::new();
    while data.len() >= 8 && out.len() < MAX_MESSAGES {
        let word =
            |at: usize| i32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let (len, rest) = if data[..4] == [0xff; 4] {
            (word(4), &data[8..])
        } else {
            (word(0), &data[4..])
        };
        let Ok(len) = usize::try_from(len) else { break };
        if len == 0 || len > rest.len() {
            break;
        }
        let (header, rest) = rest.split_at(len);
        let body_len = arrow_ipc::root_as_message(header)
            .ok()
            .and_then(|m| usize::try_from(m.bodyLength()).ok())
            .unwrap_or(0)
            .min(rest.len());
        let (body, rest) = rest.split_at(body_len);
        out.push(FlightData {
            data_header: bytes::Bytes::copy_from_slice(header),
            data_body: bytes::Bytes::copy_from_slice(body),
            ..FlightData::default()
        });
        data = rest;
    }
    out
}

/// An uploaded table's messages: never a panic; an upload is decoded only when its declared
/// cost fits the budget (as the server does), and what decodes holds no more values than its
/// cost accounted for.
pub fn flight_upload(data: &[u8]) {
    let messages = ipc_messages(data);
    let mut cost = 0usize;
    for m in &messages {
        match flight_wire::message_cost(m) {
            Ok(c) => cost = cost.saturating_add(c),
            Err(_) => return,
        }
    }
    if cost > BUDGET {
        return;
    }
    if let Ok((schema, batches)) = flight_wire::decode(messages) {
        let mut values = 0usize;
        for b in &batches {
            assert_eq!(b.num_columns(), schema.fields().len());
            values = values.saturating_add(b.num_rows().saturating_mul(b.num_columns()));
        }
        assert!(
            values <= cost,
            "{values} values decoded for a cost of {cost} bytes"
        );
    }
}

/// A command descriptor: never a panic; an accepted command has a string `api`, and what
/// `get_historical_features` reads of it is typed.
pub fn flight_command(data: &[u8]) {
    let Ok(command) = flight_wire::parse_command(data) else {
        return;
    };
    assert!(command.get("api").and_then(|a| a.as_str()).is_some());
    if let Ok(params) = flight_wire::historical_params(&command) {
        let aliases = command.get("name_aliases").and_then(|a| a.as_array());
        assert_eq!(params.name_aliases.len(), aliases.map_or(0, Vec::len));
    }
}
