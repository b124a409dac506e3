//! quiver's codecs against golden fixtures written by the real Feast 0.67
//! (`compat/generate_fixtures.py`): entity keys, Redis keys and fields, `_ts` timestamps,
//! serialized values, the SQLite layout, and the JSON `feast serve` returned.

use std::collections::HashSet;

use quiver_core::layout::{self, SqliteRow};
use quiver_core::time::{Timestamp, format_rfc3339};
use quiver_core::{Value, ValueType, entity_key, json};
use serde_json::Value as Json;

fn fixture(name: &str) -> Json {
    let path = format!("{}/tests/fixtures/feast/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fixture entity value; bytes come base64-encoded, exactly the request form.
fn entity_value(case: &Json) -> Value {
    let ty = ValueType::from_proto_name(case["type"].as_str().unwrap()).unwrap();
    json::parse_entity_value(&case["value"], ty).unwrap()
}

#[test]
fn entity_keys_and_redis_keys_match_feast() {
    let cases = fixture("entity_keys.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut types = HashSet::new();
    for case in cases {
        let keys: Vec<&str> = case["join_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let values: Vec<Value> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(entity_value)
            .collect();
        types.extend(values.iter().map(Value::value_type));
        let pairs: Vec<(&str, &Value)> = keys.iter().copied().zip(values.iter()).collect();
        let project = case["project"].as_str().unwrap();

        let serialized = entity_key::serialize(&pairs).unwrap();
        assert_eq!(
            hex(&serialized),
            case["serialized_hex"].as_str().unwrap(),
            "{case}"
        );
        let redis_key = entity_key::redis_key(&pairs, project).unwrap();
        assert_eq!(
            hex(&redis_key),
            case["redis_key_hex"].as_str().unwrap(),
            "{case}"
        );

        // And back: the pairs come out sorted by join key.
        let mut sorted: Vec<(String, Value)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(entity_key::deserialize(&serialized).unwrap(), sorted);
    }
    for ty in [
        ValueType::String,
        ValueType::Bytes,
        ValueType::Int32,
        ValueType::Int64,
        ValueType::UnixTimestamp,
    ] {
        assert!(types.contains(&ty), "no fixture case for {ty}");
    }
}

#[test]
fn redis_fields_match_feast() {
    for case in fixture("field_hashes.json").as_array().unwrap() {
        let expected = case["field_hex"].as_str().unwrap();
        let view = case["view"].as_str().unwrap();
        match case["kind"].as_str().unwrap() {
            "feature" => {
                let field = layout::redis_field(view, case["feature"].as_str().unwrap());
                assert_eq!(hex(&field), expected, "{case}");
            }
            _ => assert_eq!(
                hex(layout::redis_ts_field(view).as_bytes()),
                expected,
                "{case}"
            ),
        }
    }
}

#[test]
fn ts_values_match_feast() {
    for case in fixture("timestamps.json").as_array().unwrap() {
        let ts = Timestamp {
            seconds: case["seconds"].as_i64().unwrap(),
            nanos: case["nanos"].as_i64().unwrap() as i32,
        };
        let expected = unhex(case["proto_hex"].as_str().unwrap());
        assert_eq!(layout::encode_timestamp(&ts), expected, "{case}");
        assert_eq!(layout::decode_timestamp(&expected).unwrap(), ts, "{case}");
    }
}

/// Map and struct entries come in no fixed order from Feast; compare them decoded.
fn has_map(v: &Value) -> bool {
    matches!(
        v.value_type(),
        ValueType::Map | ValueType::MapList | ValueType::Struct | ValueType::StructList
    )
}

#[test]
fn values_decode_encode_and_print_as_feast_serves_them() {
    let serve = fixture("serve_responses.json");
    let serve_texts: String = serve
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["response_text"].as_str())
        .collect();
    let mut kinds = HashSet::new();
    for case in fixture("values.json").as_array().unwrap() {
        let bytes = unhex(case["proto_hex"].as_str().unwrap());
        let value = Value::decode(&bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        kinds.insert(value.value_type());
        if !value.is_null() {
            assert_eq!(
                value.value_type().proto_name(),
                case["value_type"].as_str().unwrap(),
                "{case}"
            );
        }
        if !has_map(&value) {
            assert_eq!(
                hex(&value.encode_to_vec()),
                hex(&bytes),
                "re-encoding {case}"
            );
        } else {
            assert_eq!(
                Value::decode(&value.encode_to_vec()).unwrap(),
                value,
                "{case}"
            );
        }
        // The JSON Feast's server returned for this stored value.
        let ours = json::value_to_json(&value);
        assert_eq!(ours, case["json"], "JSON of {case}");
        // Floats: the exact text, not just the number, as Python printed it.
        if let Value::Float(_) | Value::Double(_) = value {
            let text = json::value_to_string(&value);
            assert!(
                serve_texts.contains(&text),
                "{text} not in Feast's responses ({case})"
            );
        }
    }
    assert!(kinds.len() >= 25, "fixtures cover {} kinds", kinds.len());
}

#[test]
fn sqlite_rows_match_the_layout() {
    let doc = fixture("sqlite_rows.json");
    let project = doc["project"].as_str().unwrap();
    let tables: Vec<&Json> = doc["schema"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "table")
        .collect();
    assert!(!tables.is_empty());
    let squash = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("( ", "(")
            .replace(" )", ")")
    };
    for t in &tables {
        let name = t["name"].as_str().unwrap();
        let [create, index] = layout::sqlite_create_table(name);
        // SQLite records the statement without IF NOT EXISTS.
        assert_eq!(
            squash(&create.replace(" IF NOT EXISTS", "")),
            squash(t["sql"].as_str().unwrap()).replace(", ,", ",")
        );
        let feast_index = doc["schema"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["type"] == "index" && s["table"] == t["name"])
            .unwrap();
        assert_eq!(
            squash(&index.replace(" IF NOT EXISTS", "")),
            squash(feast_index["sql"].as_str().unwrap())
        );
    }
    for row in doc["rows"].as_array().unwrap() {
        let table = row["table"].as_str().unwrap();
        let view = table.strip_prefix(&format!("{project}_")).unwrap();
        assert_eq!(layout::sqlite_table(project, view), table);
        let parsed = SqliteRow {
            entity_key: unhex(row["entity_key_hex"].as_str().unwrap()),
            feature_name: row["feature_name"].as_str().unwrap().to_owned(),
            value: unhex(row["value_hex"].as_str().unwrap()),
            event_ts: row["event_ts"].as_i64().unwrap(),
            created_ts: row["created_ts"].as_i64(),
        };
        assert_eq!(
            row["event_ts_type"], "integer",
            "Feast 0.67 stores integer epoch seconds"
        );
        let pairs = entity_key::deserialize(&parsed.entity_key).unwrap();
        let refs: Vec<(&str, &Value)> = pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(entity_key::serialize(&refs).unwrap(), parsed.entity_key);
        Value::decode(&parsed.value).unwrap();
    }
}

#[test]
fn redis_hashes_match_the_layout_and_served_timestamps() {
    let doc = fixture("redis_hashes.json");
    let project = doc["project"].as_str().unwrap();
    let serve = fixture("serve_responses.json");
    let served_ts: HashSet<String> = serve
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["online_store"] == "redis" && r["status_code"] == 200)
        .flat_map(|r| r["response"]["results"].as_array().unwrap().iter())
        .flat_map(|res| res["event_timestamps"].as_array().unwrap().iter())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let mut fractional = 0;
    for h in doc["hashes"].as_array().unwrap() {
        // The key is the entity's v3 bytes followed by the project.
        let entity: Vec<(String, Json)> = h["entity"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = unhex(h["key_hex"].as_str().unwrap());
        let stripped = key
            .strip_suffix(project.as_bytes())
            .expect("key ends with the project");
        let pairs = entity_key::deserialize(stripped).unwrap();
        assert_eq!(pairs.len(), entity.len());
        for f in h["fields"].as_array().unwrap() {
            let value = unhex(f["value_hex"].as_str().unwrap());
            match f["field_text"].as_str() {
                Some(ts_field) => {
                    assert!(ts_field.starts_with("_ts:"));
                    let ts = layout::decode_timestamp(&value).unwrap();
                    let text = format_rfc3339(&ts);
                    fractional += usize::from(ts.nanos != 0);
                    assert!(
                        served_ts.contains(&text),
                        "{text} (from {ts_field}) not among Feast's served timestamps"
                    );
                }
                None => {
                    assert_eq!(f["field_hex"].as_str().unwrap().len(), 8);
                    Value::decode(&value).unwrap();
                }
            }
        }
    }
    assert!(fractional > 0, "fixtures include a fractional event time");
}
