"""quiver's registry service and Feast 0.67's SQL registry on one real PostgreSQL database.

- quiver reads what Feast wrote: `feast apply` with `registry_type: sql`, then `quiver registry
  serve --store postgresql://...` lists the project exactly as Feast's SDK does (on-demand view
  included), and serves a snapshot of it.
- Feast reads what quiver wrote: `quiver apply --registry-url` through the service, then
  Feast's SDK over the same database lists what Feast lists for the Python twin of the repo.
- A `feast apply` while the service runs is picked up: a new version, visible at once.

Each test gets a fresh database (QUIVER_TEST_POSTGRES names the server, default
postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat"))

import feast_summary  # noqa: E402
from fixture_helpers import log_of, spawn  # noqa: E402
from quickstart_data import write_quickstart_parquet  # noqa: E402

QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver"))
FEAST_CLI = Path(sys.executable).parent / "feast"
EXPECTED = json.loads((ROOT / "registry-sync/tests/fixtures/feast_quickstart_expected.json").read_text())
ADMIN = os.environ.get("QUIVER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def database() -> Iterator[str]:
    name = f"quiver_compat_{uuid.uuid4().hex}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def with_sql_registry(repo: Path, url: str) -> None:
    """Points the repo's feature_store.yaml at Feast's SQL registry in `url`."""
    yaml = repo / "feature_store.yaml"
    lines = [l for l in yaml.read_text().splitlines() if not l.startswith("registry:")]
    lines.insert(1, f"registry:\n  registry_type: sql\n  path: {url.replace('postgresql://', 'postgresql+psycopg://', 1)}")
    yaml.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@contextmanager
def registry_service(store: str) -> Iterator[str]:
    port = free_port()
    proc = spawn([QUIVER, "registry", "serve", "--store", store, "--host", "127.0.0.1", "--port", str(port),
                  "--poll-interval", "200ms"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                if get(url + "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"quiver registry serve exited: {log_of(proc)}"
            assert time.time() < deadline, "quiver registry serve did not come up"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def project_json(url: str, project: str) -> dict:
    status, _, body = get(f"{url}/v1/projects/{project}")
    assert status == 200, body
    return json.loads(body)


def quiver(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}
    done = subprocess.run([str(QUIVER), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"quiver {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def feast_repo(tmp_path: Path, database: str) -> Path:
    repo = tmp_path / "feast_repo"
    shutil.copytree(ROOT / "compat/feast_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_quickstart_parquet(repo / "data")
    with_sql_registry(repo, database)
    return repo


def test_quiver_serves_what_feasts_sql_registry_wrote(database: str, tmp_path: Path) -> None:
    repo = feast_repo(tmp_path, database)
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, capture_output=True)
    feast_view = feast_summary.summarize(str(repo))
    assert feast_view["on_demand_feature_views"] == ["ride_features"]
    with registry_service(database) as url:
        listing = project_json(url, "quickstart")
        assert listing.pop("version") == 1
        assert listing == feast_view
        status, headers, body = get(f"{url}/v1/projects/quickstart/snapshot?feature_services=ride_scoring")
        assert status == 200
        assert headers["Content-Type"] == "application/vnd.quiver.registry-snapshot"
        assert body[8:12] == b"QVRS" and headers["ETag"].startswith('"')


def test_feast_reads_what_quiver_applied_through_the_service(database: str, tmp_path: Path) -> None:
    repo = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples/quickstart", repo, ignore=shutil.ignore_patterns("*.db"))
    write_quickstart_parquet(repo / "data")
    with_sql_registry(repo, database)
    with registry_service(database) as url:
        out = quiver("apply", "--repo", str(repo), "--registry-url", url)
        assert "Created feature view driver_hourly_stats" in out and "now at version 1" in out, out
        served = project_json(url, "quickstart")
    served.pop("version")
    feast_view = feast_summary.summarize(str(repo))
    assert feast_view == served
    # And it is what Feast reports for the Python twin of the same repo.
    assert feast_view == {**EXPECTED, "on_demand_feature_views": []}

    # Feast's own SDK resolves a feature service quiver wrote into the SQL tables.
    from feast import FeatureStore

    service = FeatureStore(repo_path=str(repo)).get_feature_service("ride_scoring")
    assert [p.name_to_use() for p in service.feature_view_projections] == [
        "driver_hourly_stats", "driver_customer_affinity", "fresh"]


def test_a_feast_apply_while_the_service_runs_is_a_new_version(database: str, tmp_path: Path) -> None:
    quiver_repo = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples/quickstart", quiver_repo, ignore=shutil.ignore_patterns("*.db"))
    with registry_service(database) as url:
        quiver("apply", "--repo", str(quiver_repo), "--registry-url", url)
        assert project_json(url, "quickstart")["version"] == 1
        # The Python twin, with its on-demand view, applied by Feast to the same tables.
        repo = feast_repo(tmp_path, database)
        subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, capture_output=True)
        deadline = time.time() + 10
        while True:
            listing = project_json(url, "quickstart")
            if listing["on_demand_feature_views"] == ["ride_features"]:
                break
            assert time.time() < deadline, listing
            time.sleep(0.1)
        assert listing["version"] >= 2
        # quiver apply based on the version before Feast's write is refused.
        done = subprocess.run(
            [str(QUIVER), "apply", "--repo", str(quiver_repo), "--registry-url", url, "--base-version", "1"],
            capture_output=True, text=True,
        )
        assert done.returncode != 0 and "based on version 1" in done.stderr, done.stderr


def test_quiver_materialize_records_through_the_service_where_feast_reads_it(database: str, tmp_path: Path) -> None:
    """`quiver materialize --registry-url` reads the sources from the service and records the
    run there: Feast's SQL registry sees the interval, Feast's `materialize-incremental` would
    start where it ended, and Feast reads the values quiver wrote."""
    from datetime import datetime, timezone

    from feast import FeatureStore

    repo = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples/quickstart", repo, ignore=shutil.ignore_patterns("*.db"))
    write_quickstart_parquet(repo / "data")
    with_sql_registry(repo, database)
    with registry_service(database) as url:
        quiver("apply", "--repo", str(repo), "--registry-url", url)
        out = quiver("materialize", "--repo", str(repo), "--registry-url", url,
                     "--views", "driver_hourly_stats", "2024-05-01T00:00:00", "2024-05-02T00:00:00")
        assert "Recorded in the registry service" in out and "project version 2" in out, out
        # An incremental run starts where that one ended, as Feast's would.
        out = quiver("materialize-incremental", "--repo", str(repo), "--registry-url", url,
                     "--views", "driver_hourly_stats", "2024-05-03T00:00:00")
        assert "2024-05-02T00:00:00Z to 2024-05-03T00:00:00Z" in out, out
        assert project_json(url, "quickstart")["version"] == 3

    store = FeatureStore(repo_path=str(repo))
    view = store.get_feature_view("driver_hourly_stats")
    utc = [(s.astimezone(timezone.utc), e.astimezone(timezone.utc)) for s, e in view.materialization_intervals]
    assert utc == [
        (datetime(2024, 5, 1, tzinfo=timezone.utc), datetime(2024, 5, 2, tzinfo=timezone.utc)),
        (datetime(2024, 5, 2, tzinfo=timezone.utc), datetime(2024, 5, 3, tzinfo=timezone.utc)),
    ]
    assert view.most_recent_end_time.astimezone(timezone.utc) == datetime(2024, 5, 3, tzinfo=timezone.utc)
    # The other view was not materialized: Feast sees no interval on it.
    assert store.get_feature_view("customer_profile").materialization_intervals == []
    # Feast reads the values quiver wrote to the SQLite online store.
    got = store.get_online_features(
        features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
        entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}],
    ).to_dict()
    assert got["avg_daily_trips"] == [10, 20]
    assert [round(v, 4) for v in got["conv_rate"]] == [0.5, 0.25]
