//! The same requests to `feast serve` (recorded by compat/generate_serving_fixtures.py with the
//! real Feast 0.67, over data `feast materialize` wrote) and to quiver, over the very same data:
//! Feast's SQLite file and Feast's Redis keys. Names and values must match exactly; statuses
//! follow quiver's rules (never written → NOT_FOUND, older than the ttl → OUTSIDE_MAX_AGE); every
//! error Feast answers with a 5xx is a 4xx here.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::SidecarConfig;
use serde_json::Value as Json;
use support::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast_serving")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cases() -> Vec<Json> {
    let text = std::fs::read_to_string(fixtures().join("responses.json")).unwrap();
    serde_json::from_str::<Json>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Views whose ttl (1 h) the months-old fixture data exceeds.
const TTL_VIEWS: [&str; 1] = ["driver_stats_ttl"];

fn column_view(request: &Json, name: &str) -> Option<String> {
    // Feature refs tell the view; names are `feature` or `view__feature`.
    let refs = request["features"].as_array()?;
    refs.iter().filter_map(Json::as_str).find_map(|r| {
        let (view, feature) = r.split_once(':')?;
        (name == feature || name == format!("{view}__{feature}")).then(|| view.to_owned())
    })
}

async fn check_store(store_name: &str, sidecar: &Sidecar) {
    let mut compared = 0;
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let feast = &case[store_name];
        let (status, text) = http(
            sidecar.addr,
            "POST",
            "/get-online-features",
            case["request_text"].as_str().unwrap().as_bytes(),
        )
        .await;
        let feast_status = feast["status_code"].as_u64().unwrap() as u16;
        if feast_status != 200 {
            // Feast: 404, 422 or 500. quiver: a 4xx with a JSON message, never a 5xx.
            assert!(
                (400..500).contains(&status),
                "{store_name}/{name}: quiver answered {status}: {text}"
            );
            let err: Json = answer(status, &text);
            assert!(
                err["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: {text}"
            );
            if feast_status == 404 {
                assert_eq!(status, 404, "{name}: Feast's not-found stays a not-found");
            }
            continue;
        }
        assert_eq!(status, 200, "{store_name}/{name}: {text}");
        let ours: Json = serde_json::from_str(&text).unwrap();
        let theirs = &feast["body"];
        let names = |r: &Json| -> Vec<String> {
            r["metadata"]["feature_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        };
        let (our_names, their_names) = (names(&ours), names(theirs));
        let mut a = our_names.clone();
        let mut b = their_names.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{store_name}/{name}: feature names");
        let entity_count = case["request"]["entities"].as_object().unwrap().len();
        assert_eq!(
            our_names[..entity_count],
            their_names[..entity_count],
            "{name}: entity columns first, in request order"
        );

        for (i, col) in their_names.iter().enumerate() {
            let j = our_names.iter().position(|n| n == col).unwrap();
            let (t, o) = (&theirs["results"][i], &ours["results"][j]);
            assert_eq!(
                o["values"], t["values"],
                "{store_name}/{name}/{col}: values"
            );
            assert_eq!(
                o["event_timestamps"], t["event_timestamps"],
                "{store_name}/{name}/{col}: event timestamps"
            );
            // Statuses by quiver's rules.
            let in_ttl_view =
                column_view(&case["request"], col).is_some_and(|v| TTL_VIEWS.contains(&v.as_str()));
            let sqlite_statuses = &case["sqlite"]["body"]["results"]
                [case["sqlite"]["body"]["metadata"]["feature_names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .position(|n| n == col)
                    .unwrap()]["statuses"];
            for (r, our_status) in o["statuses"].as_array().unwrap().iter().enumerate() {
                let never_written = sqlite_statuses[r] == "NOT_FOUND";
                let stamp = t["event_timestamps"][r].as_str().unwrap();
                let expected = if never_written {
                    "NOT_FOUND"
                } else if in_ttl_view && stamp != "1970-01-01T00:00:00Z" {
                    "OUTSIDE_MAX_AGE"
                } else {
                    "PRESENT"
                };
                assert_eq!(
                    our_status, expected,
                    "{store_name}/{name}/{col}[{r}] (Feast said {})",
                    t["statuses"][r]
                );
            }
        }
        compared += 1;
    }
    assert!(compared >= 9, "only {compared} successful cases compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_feast_over_feasts_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("online_store.db");
    std::fs::copy(fixtures().join("online_store.db"), &db).unwrap();
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "serving",
        fixtures().join("registry.db"),
        store,
    )
    .await;
    check_store("sqlite", &sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_feast_over_feasts_redis_keys() {
    let redis = RedisServer::start();
    let mut conn = redis.client().get_connection().unwrap();
    let dump: Json =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("redis_dump.json")).unwrap())
            .unwrap();
    for key in dump.as_array().unwrap() {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(unhex(key["key_hex"].as_str().unwrap()));
        for f in key["fields"].as_array().unwrap() {
            cmd.arg(unhex(f["field_hex"].as_str().unwrap()))
                .arg(unhex(f["value_hex"].as_str().unwrap()));
        }
        cmd.query::<()>(&mut conn).unwrap();
    }
    let store = redis_store(&redis, "serving").await;
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "serving",
        fixtures().join("registry.db"),
        store,
    )
    .await;
    check_store("redis", &sidecar).await;
}
