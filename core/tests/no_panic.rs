//! Decoders never panic, whatever bytes they are handed: random inputs and every truncation of
//! valid inputs go through each decoder (a cheap, deterministic stand-in for a fuzzer).

use quiver_core::registry::RegistryFile;
use quiver_core::{Value, ValueType, entity_key, json, layout, time};

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() as usize) % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn valid_samples() -> Vec<Vec<u8>> {
    let key = entity_key::serialize(&[
        ("driver_id", &Value::Int64(7)),
        ("zone", &Value::String("n".into())),
    ])
    .unwrap();
    vec![
        key,
        Value::StringList(vec!["a".into(), "b".into()]).encode_to_vec(),
        Value::Map([("k".to_owned(), Value::Double(1.0))].into()).encode_to_vec(),
        layout::encode_timestamp(&time::Timestamp {
            seconds: 5,
            nanos: 6,
        }),
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../registry-sync/tests/fixtures/feast_quickstart_registry.db"
        ))
        .unwrap(),
    ]
}

fn feed(bytes: &[u8]) {
    let _ = Value::decode(bytes);
    let _ = entity_key::deserialize(bytes);
    let _ = layout::decode_timestamp(bytes);
    let _ = RegistryFile::decode(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = time::parse_datetime(text);
        let _ = time::parse_duration(text);
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) {
            for ty in ValueType::feature_types() {
                let _ = json::parse_value(&doc, ty);
                let _ = json::parse_entity_value(&doc, ty);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        feed(&rng.bytes(64));
    }
}

#[test]
fn truncated_and_flipped_valid_inputs_never_panic() {
    let mut rng = Rng(42);
    for sample in valid_samples() {
        let step = (sample.len() / 200).max(1);
        for cut in (0..sample.len()).step_by(step) {
            feed(&sample[..cut]);
            let mut flipped = sample.clone();
            let i = (rng.next() as usize) % flipped.len();
            flipped[i] ^= 1 << (rng.next() % 8);
            feed(&flipped);
        }
    }
}

#[test]
fn text_inputs_never_panic() {
    for text in [
        "",
        "2026-",
        "2026-02-29T00:00:00",
        "9999-12-31T23:59:60.9999999999+23:59",
        "1h1h1h",
        "99999999999999999999d",
        "\"NaN\"",
        "[1e400]",
        "{\"a\":[{}]}",
        "-0",
    ] {
        feed(text.as_bytes());
    }
}
