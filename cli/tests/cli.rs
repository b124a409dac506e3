//! The `quiver` binary end to end, as a user runs it: apply, re-apply, list, and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn quiver(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.args(args).env_remove("FEATURE_STORE_YAML_BASE64");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run quiver")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn quickstart_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart"),
        &repo,
    );
    let _ = std::fs::remove_file(repo.join("data/registry.db"));
    (dir, repo)
}

#[test]
fn apply_then_reapply_changes_nothing() {
    let (_dir, repo) = quickstart_copy();
    let repo_arg = repo.to_str().unwrap();
    let out = quiver(&["apply", "--repo", repo_arg], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "Created entity driver",
        "Created feature view driver_hourly_stats",
        "Created feature service ride_scoring",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    let registry = repo.join("data/registry.db");
    let first = std::fs::read(&registry).unwrap();

    let out = quiver(&["apply", "--repo", repo_arg], &[]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("No changes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(&registry).unwrap(),
        first,
        "a no-op apply leaves the file as it was"
    );

    let out = quiver(&["list", "--repo", repo_arg, "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["feature_views"].as_array().unwrap().len(), 4);
    assert_eq!(
        listed["feature_services"][1]["projections"][2]["alias"],
        "fresh"
    );
}

#[test]
fn list_into_a_closed_pipe_is_not_an_error() {
    let (_dir, repo) = quickstart_copy();
    let repo_arg = repo.to_str().unwrap();
    assert!(quiver(&["apply", "--repo", repo_arg], &[]).status.success());
    for json in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
        cmd.args(["list", "--repo", repo_arg])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.spawn().unwrap();
        // As `quiver list | head -0` does: the reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn dry_run_writes_nothing() {
    let (_dir, repo) = quickstart_copy();
    let out = quiver(
        &["apply", "--dry-run", "--repo", repo.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Created feature view customer_profile"));
    assert!(!repo.join("data/registry.db").exists());
}

#[test]
fn bad_definitions_are_all_reported_and_nothing_is_written() {
    let (_dir, repo) = quickstart_copy();
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let broken = defs
        .replace(
            "entities: [driver, customer]",
            "entities: [driver, passenger]",
        )
        .replace(
            "{name: acc_rate, dtype: Float32}",
            "{name: acc_rate, dtype: Float16}",
        );
    std::fs::write(repo.join("features.yaml"), broken).unwrap();
    let out = quiver(&["apply", "--repo", repo.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("problems in the feature definitions"),
        "{stderr}"
    );
    assert!(
        stderr.contains("features.yaml:") && stderr.contains("unknown entity \"passenger\""),
        "{stderr}"
    );
    assert!(stderr.contains("unknown dtype \"Float16\""), "{stderr}");
    assert!(!repo.join("data/registry.db").exists());
}

#[test]
fn bad_config_names_the_key() {
    let (_dir, repo) = quickstart_copy();
    std::fs::write(
        repo.join("feature_store.yaml"),
        "project: quickstart\nonline_store:\n  type: cassandra\n",
    )
    .unwrap();
    let out = quiver(&["apply", "--repo", repo.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("online_store.type") && stderr.contains("expected sqlite or redis"),
        "{stderr}"
    );
}

#[test]
fn an_empty_push_token_is_refused_before_serving() {
    let (dir, repo) = quickstart_copy();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    let repo = repo.to_str().unwrap();
    let serve = ["serve", "--repo", repo, "--port", "0", "--enable-push"];
    let out = quiver(
        &[&serve[..], &["--push-token-file", empty.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--push-token-file") && stderr.contains("empty"),
        "{stderr}"
    );
    let out = quiver(&serve, &[("QUIVER_PUSH_TOKEN", "")]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("QUIVER_PUSH_TOKEN") && stderr.contains("empty"),
        "{stderr}"
    );
}

#[test]
fn config_can_come_from_the_environment() {
    let (_dir, repo) = quickstart_copy();
    std::fs::remove_file(repo.join("feature_store.yaml")).unwrap();
    // base64 of "project: from_env\nregistry: data/env_registry.db\n"
    let encoded = "cHJvamVjdDogZnJvbV9lbnYKcmVnaXN0cnk6IGRhdGEvZW52X3JlZ2lzdHJ5LmRiCg==";
    let out = quiver(
        &["apply", "--repo", repo.to_str().unwrap()],
        &[("FEATURE_STORE_YAML_BASE64", encoded)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("project from_env"));
    assert!(repo.join("data/env_registry.db").exists());
}

#[test]
fn a_repo_without_definitions_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: empty\n").unwrap();
    let out = quiver(&["apply", "--repo", dir.path().to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no feature definitions found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn split_definitions_under_features_dir_apply() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("fraud");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud"),
        &repo,
    );
    // Its merchant source is in S3: a bucket the operator allows.
    let out = quiver(
        &[
            "apply",
            "--repo",
            repo.to_str().unwrap(),
            "--allow-location",
            "s3://fraud-data",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("project fraud"), "{stdout}");
    assert!(
        stdout.contains("Created feature service fraud_scoring"),
        "{stdout}"
    );
    let out = quiver(&["list", "--repo", repo.to_str().unwrap(), "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let velocity = &listed["feature_services"][0]["projections"][2];
    assert_eq!(velocity["alias"], "velocity");
    assert_eq!(velocity["join_key_map"]["merchant_id"], "txn_merchant_id");
}

#[test]
fn concurrent_applies_to_one_registry_lose_nothing() {
    // Several projects share one registry file and apply at the same time; the registry lock
    // makes each read-modify-write wait for the previous one, so every project ends up in it.
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("shared/registry.db");
    let defs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/features.yaml"),
    )
    .unwrap();
    let repos: Vec<PathBuf> = (0..6)
        .map(|i| {
            let repo = dir.path().join(format!("repo{i}"));
            std::fs::create_dir_all(&repo).unwrap();
            std::fs::write(
                repo.join("feature_store.yaml"),
                format!("project: team{i}\nregistry: {}\n", registry.display()),
            )
            .unwrap();
            std::fs::write(repo.join("features.yaml"), &defs).unwrap();
            repo
        })
        .collect();
    let children: Vec<_> = repos
        .iter()
        .map(|repo| {
            Command::new(env!("CARGO_BIN_EXE_quiver"))
                .args(["apply", "--repo", repo.to_str().unwrap()])
                .env_remove("FEATURE_STORE_YAML_BASE64")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    for (i, repo) in repos.iter().enumerate() {
        let out = quiver(&["list", "--repo", repo.to_str().unwrap(), "--json"], &[]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed["project"], format!("team{i}"));
        assert_eq!(
            listed["feature_views"].as_array().unwrap().len(),
            4,
            "team{i} lost its views"
        );
    }
}

#[test]
fn materialize_refuses_bad_windows_and_unknown_views_before_reading_anything() {
    let (_dir, repo) = quickstart_copy();
    let repo_arg = repo.to_str().unwrap();
    assert!(quiver(&["apply", "--repo", repo_arg], &[]).status.success());
    // Without the sources, every refusal below must come before they are read.
    for source in [
        "driver_stats.parquet",
        "customer_profile.parquet",
        "driver_customer.parquet",
    ] {
        std::fs::remove_file(repo.join("data").join(source)).unwrap();
    }
    let out = quiver(
        &[
            "materialize",
            "--repo",
            repo_arg,
            "2026-01-01",
            "2999-01-01T00:00:00",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is in the future"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(
        &[
            "materialize",
            "--repo",
            repo_arg,
            "2026-01-02",
            "2026-01-01",
        ],
        &[],
    );
    assert!(
        text(&out.stderr).contains("is after END"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(
        &["materialize", "--repo", repo_arg, "yesterday", "2026-01-01"],
        &[],
    );
    assert!(
        text(&out.stderr).contains("expected an ISO 8601 date-time"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(
        &[
            "materialize",
            "--repo",
            repo_arg,
            "--views",
            "nope",
            "2026-01-01",
            "2026-01-02",
        ],
        &[],
    );
    assert!(
        text(&out.stderr).contains("unknown feature view \"nope\""),
        "{}",
        text(&out.stderr)
    );
    // An END before the incremental start (now - ttl) is refused too.
    let out = quiver(
        &["materialize-incremental", "--repo", repo_arg, "2026-01-02"],
        &[],
    );
    assert!(
        text(&out.stderr).contains("is after END"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(
        &[
            "materialize-incremental",
            "--repo",
            repo_arg,
            "--force",
            "2999-01-01",
        ],
        &[],
    );
    assert!(!out.status.success());
    // Issue 19: past what pandas holds, even forced (it would pin every later run).
    assert!(
        text(&out.stderr).contains("END: time 2999-01-01T00:00:00Z"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(
        &[
            "materialize-incremental",
            "--repo",
            repo_arg,
            "--force",
            "2200-01-01",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("driver_stats.parquet"),
        "{}",
        text(&out.stderr)
    );
    // Nothing was recorded.
    let listing = quiver(&["list", "--repo", repo_arg, "--json"], &[]);
    assert!(
        !text(&listing.stdout).contains("materialization"),
        "{}",
        text(&listing.stdout)
    );
}

#[test]
fn the_demo_runs_end_to_end_and_serves_the_latest_values() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type, TimestampMicrosecondType};

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("demo");
    let out = quiver(
        &[
            "demo",
            "--dir",
            repo.to_str().unwrap(),
            "--load-seconds",
            "0.3",
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for expected in [
        "Created feature view driver_hourly_stats",
        "Created feature service ride_scoring",
        "24000 rows read,   500 entities written",
        "1000 labelled rows",
        "customer_profile",
        "requests/s",
        "cache hit ratio",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    // The latest source row of driver 1001, as the demo's table shows it.
    let file = std::fs::File::open(repo.join("data/driver_stats.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut latest: Option<(i64, f32, i64)> = None;
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch
            .column_by_name("driver_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let ts = batch
            .column_by_name("event_timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let conv = batch
            .column_by_name("conv_rate")
            .unwrap()
            .as_primitive::<Float32Type>();
        let trips = batch
            .column_by_name("avg_daily_trips")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if ids.value(i) == 1001 && latest.is_none_or(|(t, _, _)| ts.value(i) > t) {
                latest = Some((ts.value(i), conv.value(i), trips.value(i)));
            }
        }
    }
    let (_, conv, trips) = latest.unwrap();
    // The training dataset has one row per label row.
    let training = std::fs::File::open(repo.join("data/training.parquet")).unwrap();
    let rows: usize =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(training)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
    assert_eq!(rows, 1000);
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1001"))
        .unwrap_or_else(|| panic!("no row for driver 1001 in:\n{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[2], format!("{:.4}", f64::from(conv)), "{row}");
    assert_eq!(cells[4], trips.to_string(), "{row}");
}
