"""Feast 0.67's label views, quiver against the real Feast, on the untouched `feast init` template.

The template defines `driver_quality_labels`: a LabelView on entity `driver` (declared without a
type, so the view keys `driver_id` as a String), fed by the push source
`driver_quality_labels_push` over data/driver_quality_labels.parquet, LAST_WRITE_WINS.

- Feast pushes labels, quiver serves the values Feast serves (and Feast's SQLite rows are what
  quiver's own push writes, byte for byte); quiver pushes, Feast reads them online and offline.
- Conflicts online are last-write-wins, as in Feast: the latest event time per driver wins within
  a push, and a later push replaces an earlier one.
- `materialize` leaves label views out and refuses one named, as Feast does.
- `quiver historical` joins label features as Feast's get_historical_features does, and answers
  the entity time as Feast does (a UTC timestamp), from a CSV entity file too.
- `quiver list` (text and --json, from the file and through the registry service) shows the
  label view as Feast's SDK does, without Feast's hidden `__dummy` entity.
"""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat"))

import feast_summary  # noqa: E402
from fixture_helpers import log_of, spawn  # noqa: E402

QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
FEAST_CLI = Path(sys.executable).parent / "feast"

LABELS = "driver_quality_labels"
PUSH = "driver_quality_labels_push"
FEATURES = ["is_reliable", "quality_score", "reviewer_notes", "labeler"]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}


def run(cmd: list, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """`feast init` once; each test copies the untouched result."""
    base = tmp_path_factory.mktemp("template")
    run([FEAST_CLI, "init", "demo_repo"], base)
    return base / "demo_repo" / "feature_repo"


def applied(template: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "feature_repo"
    shutil.copytree(template, repo, ignore=shutil.ignore_patterns("__pycache__"))
    run([FEAST_CLI, "apply"], repo)
    return repo


def label_rows() -> dict:
    """Two labelers on driver 1001 (the later label wins), one on 1002."""
    return {
        "driver_id": [1001, 1002, 1001],
        "is_reliable": [0, 1, 1],
        "quality_score": [0.25, 0.5, 0.75],
        "reviewer_notes": ["late", "steady", "good"],
        "labeler": ["bob", "carol", "alice"],
        "event_timestamp": [T0, T0, T0 + timedelta(minutes=5)],
    }


def frame(rows: dict) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df.astype({"quality_score": "float32"})


def body(rows: dict) -> dict:
    return {k: ([t.isoformat() for t in v] if k == "event_timestamp" else v) for k, v in rows.items()}


def label_table(repo: Path) -> list:
    conn = sqlite3.connect(repo / "data/online_store.db")
    try:
        return conn.execute(
            f"SELECT entity_key, feature_name, value, event_ts FROM demo_repo_{LABELS} ORDER BY entity_key, feature_name"
        ).fetchall()
    finally:
        conn.close()


def feast_online(repo: Path, drivers: list) -> dict:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo)).get_online_features(
        features=[f"{LABELS}:{f}" for f in FEATURES], entity_rows=[{"driver_id": d} for d in drivers]
    ).to_dict()


class QuiverServer:
    def __init__(self, repo: Path, *args: str) -> None:
        self.port = free_port()
        self.proc = spawn([QUIVER, "serve", "--repo", repo, "--port", str(self.port), *args])

    def __enter__(self) -> "QuiverServer":
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                assert self.proc.poll() is None, log_of(self.proc)
                time.sleep(0.1)
        raise AssertionError(f"quiver serve did not become ready: {log_of(self.proc)}")

    def __exit__(self, *_exc) -> None:
        self.proc.kill()
        self.proc.wait()

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(payload).encode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def online(self, drivers: list) -> dict:
        status, answer = self.post(
            "/get-online-features",
            {"features": [f"{LABELS}:{f}" for f in FEATURES], "entities": {"driver_id": drivers}},
        )
        assert status == 200, answer
        names = answer["metadata"]["feature_names"]
        return {n: answer["results"][i] for i, n in enumerate(names)}


def test_feast_pushes_labels_and_quiver_serves_them(template: Path, tmp_path: Path) -> None:
    from feast import FeatureStore
    from feast.data_source import PushMode

    repo = applied(template, tmp_path)
    FeatureStore(repo_path=str(repo)).push(PUSH, frame(label_rows()), to=PushMode.ONLINE_AND_OFFLINE)
    theirs = feast_online(repo, [1001, 1002, 1003])
    # Feast's own answer: the later label (alice's) won for 1001; 1003 has none.
    assert theirs["labeler"] == ["alice", "carol", None]
    with QuiverServer(repo) as server:
        ours = server.online([1001, 1002, 1003])
    # The String join key is keyed with the number's text and echoed as it, as `feast serve` does.
    assert ours["driver_id"]["values"] == ["1001", "1002", "1003"]
    for f in FEATURES:
        got = ours[f]["values"]
        if f == "quality_score":
            assert got[:2] == pytest.approx(theirs[f][:2]) and got[2] is None
        else:
            assert got == theirs[f], f
    assert ours["is_reliable"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert ours["is_reliable"]["event_timestamps"][0] == "2026-03-01T12:05:00Z"


def test_quiver_pushes_labels_as_feast_does_and_feast_reads_them(template: Path, tmp_path: Path) -> None:
    from feast import FeatureStore
    from feast.data_source import PushMode

    by_feast = applied(template, tmp_path / "feast")
    FeatureStore(repo_path=str(by_feast)).push(PUSH, frame(label_rows()), to=PushMode.ONLINE)
    feast_rows = label_table(by_feast)
    assert len(feast_rows) == 8

    repo = applied(template, tmp_path / "quiver")
    with QuiverServer(repo, "--enable-push") as server:
        status, result = server.post(
            "/push", {"push_source_name": PUSH, "df": body(label_rows()), "to": "online_and_offline"}
        )
        assert status == 200, result
        assert result["written"] == 2
        assert result["offline"].endswith("driver_quality_labels.parquet")
        # Last write wins across pushes too: a newer label replaces alice's.
        newer = {
            "driver_id": [1001], "is_reliable": [0], "quality_score": [0.125],
            "reviewer_notes": ["rechecked"], "labeler": ["dave"],
            "event_timestamp": [T0 + timedelta(hours=1)],
        }
        before_newer = label_table(repo)
        status, result = server.post("/push", {"push_source_name": PUSH, "df": body(newer), "to": "online"})
        assert status == 200 and result["written"] == 1, result
        served = server.online([1001])
        assert served["labeler"]["values"] == ["dave"]
        # A label for a driver key that is not a whole number is the caller's error, and
        # nothing is written.
        bad = dict(newer, driver_id=[1.5])
        status, result = server.post("/push", {"push_source_name": PUSH, "df": body(bad), "to": "online"})
        assert status == 422, result
        assert "driver_id" in json.dumps(result)

    # Byte for byte what Feast's push of the same rows wrote.
    assert before_newer == feast_rows
    # Feast reads what quiver pushed: online ...
    got = feast_online(repo, [1001, 1002])
    assert got["labeler"] == ["dave", "carol"]
    assert got["is_reliable"] == [0, 1]
    assert got["quality_score"] == pytest.approx([0.125, 0.5])
    # ... and offline: the pushed rows were appended to the label view's batch source.
    history = pd.read_parquet(repo / "data/driver_quality_labels.parquet")
    assert sorted(history["labeler"]) == ["alice", "bob", "carol"]
    entity_df = pd.DataFrame({"driver_id": [1001, 1002], "event_timestamp": [T0 + timedelta(minutes=30)] * 2})
    hist = FeatureStore(repo_path=str(repo)).get_historical_features(
        entity_df=entity_df, features=[f"{LABELS}:labeler", f"{LABELS}:is_reliable"]
    ).to_df().sort_values("driver_id")
    assert list(hist["labeler"]) == ["alice", "carol"]


def test_materialize_leaves_label_views_out_as_feast_does(template: Path, tmp_path: Path) -> None:
    repo = applied(template, tmp_path)
    start, end = "2026-01-01T00:00:00", "2026-01-02T00:00:00"
    feast = run([FEAST_CLI, "materialize", start, end, "--views", LABELS], repo, ok=False)
    assert feast.returncode != 0
    assert "cannot be materialized" in feast.stdout + feast.stderr
    ours = run([QUIVER, "materialize", "--repo", repo, start, end, "--views", LABELS], repo, ok=False)
    assert ours.returncode != 0
    assert f"LabelView {LABELS} cannot be materialized" in ours.stderr, ours.stderr
    # Every online view means the two feature views, not the label view. (Whether their Map and
    # Struct columns materialize is another matter: only the selection is checked here.)
    every = run([QUIVER, "materialize", "--repo", repo, start, end], repo, ok=False)
    assert "Materializing 2 feature views of project demo_repo" in every.stdout, every.stdout
    assert LABELS not in every.stdout + every.stderr
    assert label_table(repo) == []


def test_historical_label_features_and_entity_times_as_feast(template: Path, tmp_path: Path) -> None:
    from feast import FeatureStore
    from feast.data_source import PushMode

    repo = applied(template, tmp_path)
    store = FeatureStore(repo_path=str(repo))
    store.push(PUSH, frame(label_rows()), to=PushMode.OFFLINE)
    stats = pd.read_parquet(repo / "data/driver_stats.parquet")
    # Entity rows at times where both views have data: after the labels, inside the stats'
    # one-day ttl.
    t = stats["event_timestamp"].max()
    t = max(t, pd.Timestamp(T0 + timedelta(minutes=10)))
    naive = t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t
    entities = pd.DataFrame({
        "driver_id": [1001, 1002, 1003, 1001],
        # The last row is before any label of 1001 (and any stats row).
        "event_timestamp": [naive, naive, naive, pd.Timestamp(T0 - timedelta(minutes=1)).tz_localize(None)],
    })
    features = [f"{LABELS}:is_reliable", f"{LABELS}:labeler", "driver_hourly_stats:conv_rate"]
    theirs = store.get_historical_features(entity_df=entities, features=features).to_df()

    def ours_from(path: Path) -> pd.DataFrame:
        out = tmp_path / f"out_{path.suffix[1:]}.parquet"
        run([QUIVER, "historical", "--repo", repo, "--entities", path, "--features", ",".join(features),
             "--out", out], repo)
        return pd.read_parquet(out)

    entities.to_parquet(tmp_path / "entities.parquet")
    # A CSV as people write them: naive ISO times.
    entities.assign(event_timestamp=entities["event_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S.%f")).to_csv(
        tmp_path / "entities.csv", index=False
    )
    for ours in (ours_from(tmp_path / "entities.parquet"), ours_from(tmp_path / "entities.csv")):
        # One row per entity row, in input order, the entity time as Feast answers it.
        assert len(ours) == 4
        assert list(ours["driver_id"]) == [1001, 1002, 1003, 1001]
        assert str(ours["event_timestamp"].dtype) == str(theirs["event_timestamp"].dtype) == "datetime64[ns, UTC]"
        assert list(ours["event_timestamp"]) == [pd.Timestamp(x, tz="UTC") for x in entities["event_timestamp"]]
        # Equal to Feast on the rows Feast returns (Feast's file store may drop a row no label
        # matches, as it did in 0.67 for the early row of 1001: quiver answers it with nulls).
        merged = ours.merge(theirs, on=["driver_id", "event_timestamp"], suffixes=("", "_feast"))
        assert len(merged) == len(theirs) >= 3
        for col in ("is_reliable", "labeler", "conv_rate"):
            a, b = merged[col].tolist(), merged[f"{col}_feast"].tolist()
            assert [None if pd.isna(x) else x for x in a] == pytest.approx(
                [None if pd.isna(x) else x for x in b]
            ), col
        early = ours.iloc[3]
        assert pd.isna(early["is_reliable"]) and early["labeler"] is None
        assert list(ours["labeler"][:3]) == ["alice", "carol", None]


def registry_service(store: Path):
    port = free_port()
    proc = spawn([QUIVER, "registry", "serve", "--store", store, "--host", "127.0.0.1", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        assert proc.poll() is None, f"quiver registry serve exited: {log_of(proc)}"
        assert time.time() < deadline, "quiver registry serve did not come up"
        time.sleep(0.05)


def test_quiver_list_shows_label_views_as_feast(template: Path, tmp_path: Path) -> None:
    repo = applied(template, tmp_path)
    feast_view = feast_summary.summarize(str(repo))
    text = run([QUIVER, "list", "--repo", repo], repo).stdout
    assert "label views (1)" in text
    assert f"{LABELS} " in text and "conflict policy last_write_wins" in text
    assert "__dummy" not in text
    # Feast's CLI prints the untyped entity as ValueType.UNKNOWN.
    feast_entities = run([FEAST_CLI, "entities", "list"], repo).stdout
    assert "UNKNOWN" in feast_entities
    assert "join key driver_id (UNKNOWN)" in text
    ours = json.loads(run([QUIVER, "list", "--repo", repo, "--json"], repo).stdout)
    assert ours["label_views"] == feast_view["label_views"]
    assert ours["entities"] == feast_view["entities"]

    proc, url = registry_service(repo / "data/registry.db")
    try:
        remote = run([QUIVER, "list", "--repo", repo, "--json", "--registry-url", url], repo).stdout
        assert json.loads(remote)["label_views"] == feast_view["label_views"]
        with urllib.request.urlopen(f"{url}/v1/projects/demo_repo/label-views", timeout=5) as r:
            listing = json.loads(r.read())
        assert listing["label_views"] == feast_view["label_views"]
        remote_text = run([QUIVER, "list", "--repo", repo, "--registry-url", url], repo).stdout
        assert remote_text == text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_port(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


def with_redis(repo: Path, port: int) -> None:
    yaml = (repo / "feature_store.yaml").read_text()
    start = yaml.index("online_store:")
    end = yaml.index("entity_key_serialization_version")
    (repo / "feature_store.yaml").write_text(
        yaml[:start] + f"online_store:\n    type: redis\n    connection_string: 127.0.0.1:{port}\n" + yaml[end:]
    )


@pytest.mark.parametrize("policy", ["LAST_WRITE_WINS", "MAJORITY_VOTE"])
def test_redis_labels_byte_for_byte_and_last_write_wins_whatever_the_policy(
    template: Path, tmp_path: Path, redis_port: int, policy: str
) -> None:
    """On Redis too, quiver's push writes the hashes Feast's push writes and serves Feast's.
    Feast's online store is last-write-wins for every conflict policy (it applies the others only
    in its UI's offline reads): with MAJORITY_VOTE, two labelers saying 1 and a later one saying
    0 leave 0 online, in Feast and in quiver alike."""
    import redis
    from feast import FeatureStore
    from feast.data_source import PushMode

    repo = tmp_path / "feature_repo"
    shutil.copytree(template, repo, ignore=shutil.ignore_patterns("__pycache__"))
    with_redis(repo, redis_port)
    if policy != "LAST_WRITE_WINS":
        defs = repo / "feature_definitions.py"
        defs.write_text(defs.read_text().replace("ConflictPolicy.LAST_WRITE_WINS", f"ConflictPolicy.{policy}"))
    run([FEAST_CLI, "apply"], repo)
    client = redis.Redis(port=redis_port)
    votes = {
        "driver_id": [1001, 1001, 1001, 1002],
        "is_reliable": [1, 1, 0, 1],
        "quality_score": [0.5, 0.5, 0.25, 0.75],
        "reviewer_notes": ["a", "b", "c", "d"],
        "labeler": ["ann", "ben", "cat", "dan"],
        "event_timestamp": [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), T0],
    }
    FeatureStore(repo_path=str(repo)).push(PUSH, frame(votes), to=PushMode.ONLINE)
    by_feast = {k: client.hgetall(k) for k in client.scan_iter()}
    assert len(by_feast) == 2
    theirs = feast_online(repo, [1001, 1002])
    assert theirs["is_reliable"] == [0, 1] and theirs["labeler"] == ["cat", "dan"]
    with QuiverServer(repo, "--enable-push") as server:
        ours = server.online([1001, 1002])
        assert ours["is_reliable"]["values"] == [0, 1]
        assert ours["labeler"]["values"] == ["cat", "dan"]
        client.flushall()
        status, result = server.post("/push", {"push_source_name": PUSH, "df": body(votes), "to": "online"})
        assert status == 200 and result["written"] == 2, result
    assert {k: client.hgetall(k) for k in client.scan_iter()} == by_feast
    if policy != "LAST_WRITE_WINS":
        listing = json.loads(run([QUIVER, "list", "--repo", repo, "--json"], repo).stdout)
        assert listing["label_views"][0]["conflict_policy"] == policy.lower()


@pytest.fixture
def database():
    import uuid

    import psycopg

    admin = os.environ.get("QUIVER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"quiver_labels_{uuid.uuid4().hex}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_label_views_in_feasts_sql_registry(template: Path, tmp_path: Path, database: str) -> None:
    """`feast apply` into Feast's SQL registry (its `label_views` table): quiver's registry service
    lists the label view as Feast's SDK does, `quiver list --registry-url` shows it, and a
    sidecar following the service serves the labels Feast pushed."""
    from feast import FeatureStore
    from feast.data_source import PushMode

    repo = tmp_path / "feature_repo"
    shutil.copytree(template, repo, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = repo / "feature_store.yaml"
    lines = [l for l in yaml.read_text().splitlines() if not l.startswith("registry:")]
    sql = database.replace("postgresql://", "postgresql+psycopg://", 1)
    lines.insert(1, f"registry:\n    registry_type: sql\n    path: {sql}")
    yaml.write_text("\n".join(lines) + "\n")
    run([FEAST_CLI, "apply"], repo)
    feast_view = feast_summary.summarize(str(repo))
    FeatureStore(repo_path=str(repo)).push(PUSH, frame(label_rows()), to=PushMode.ONLINE)

    proc, url = registry_service(database)
    try:
        with urllib.request.urlopen(f"{url}/v1/projects/demo_repo/label-views", timeout=5) as r:
            listing = json.loads(r.read())
        assert listing["label_views"] == feast_view["label_views"]
        text = run([QUIVER, "list", "--repo", repo, "--registry-url", url], repo).stdout
        assert "label views (1)" in text and LABELS in text
        with QuiverServer(repo, "--registry-url", url) as server:
            ours = server.online([1001, 1002])
        assert ours["labeler"]["values"] == ["alice", "carol"]
        assert ours["is_reliable"]["values"] == [1, 1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
