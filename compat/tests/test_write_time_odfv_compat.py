"""Write-time on-demand views (`write_to_online_store=True`), quiver against the real Feast 0.67.

`feast init`'s template plus one pandas on-demand view with write_to_online_store=True (the
template's own transformation over driver_hourly_stats_fresh and the request source). Two copies
of the repo, each applied by Feast, each with its own online store:

- Redis: the same `POST /write-to-online-store` body (naming the on-demand view, with the source
  features and the request data) sent to `feast serve` and to `quiver serve
  --transformation-service` (Feast's transformation service runs the pandas function) writes equal
  bytes: every field of every key, the outputs and the join key Feast stores beside them; only
  `_ts` differs, since both stamp the time of the write (it is checked to be that time). Then
  `feast serve` and quiver answer equal values for the stored view, with no request data, and
  a second quiver serve WITHOUT any transformation service answers them too: serving a
  write-time view makes no transformation call (quiver's /metrics count none for serving and
  one for the write).
- SQLite: the same through Feast's SDK and quiver: equal rows (key, feature name, value).
  Feast 0.67's apply creates no SQLite table for a write-time view (its write then fails with
  "no such table"), so Feast's own `SqliteOnlineStore.update` creates it first; quiver creates
  it on write.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
FEAST_CLI = Path(sys.executable).parent / "feast"
sys.path.insert(0, str(ROOT / "compat"))

from fixture_helpers import (  # noqa: E402
    feast_serve,
    free_port,
    log_of,
    redis_server,
    spawn,
    stop_process_group,
)

VIEW = "transformed_conv_rate_stored"
FEATURES = [f"{VIEW}:conv_rate_plus_val1", f"{VIEW}:conv_rate_plus_val2"]

WRITE_TIME_VIEW = f'''

@on_demand_feature_view(
    sources=[driver_stats_fresh_fv, input_request],
    schema=[
        Field(name="conv_rate_plus_val1", dtype=Float64),
        Field(name="conv_rate_plus_val2", dtype=Float64),
    ],
    entities=[driver],
    write_to_online_store=True,
)
def {VIEW}(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
    df["conv_rate_plus_val2"] = inputs["conv_rate"] + inputs["val_to_add_2"]
    return df
'''

# What a client writes: the source features by their own names, the request data, an event
# time (Feast stamps its own); driver 1001 twice (Feast's Redis store keeps the first row, its
# SQLite store the last).
DF = {
    "driver_id": [1001, 1002, 1001, 1005],
    "conv_rate": [0.3, 0.5, 0.9, 0.123456789],
    "acc_rate": [0.1, 0.2, 0.3, 0.4],
    "val_to_add": [1000, 2000, 3000, 4],
    "val_to_add_2": [10, 20, 30, 40],
    "event_timestamp": ["2026-01-01T00:00:00"] * 4,
}
# acc_rate is a source feature the function does not read: Feast passes it through, quiver
# sends it too.


def make_repo(root: Path, side: str, online_store: str) -> Path:
    """`feast init demo` in its own folder (both sides are project demo: Redis keys end in it)."""
    env = dict(os.environ, TZ="UTC")
    (root / side).mkdir()
    subprocess.run([str(FEAST_CLI), "init", "demo"], cwd=root / side, check=True, capture_output=True, env=env)
    repo = root / side / "demo" / "feature_repo"
    with open(repo / "feature_definitions.py", "a") as f:
        f.write(WRITE_TIME_VIEW)
    config = (repo / "feature_store.yaml").read_text()
    config = config.replace("online_store:\n    type: sqlite\n    path: data/online_store.db\n", online_store)
    assert online_store in config, config
    (repo / "feature_store.yaml").write_text(config)
    done = subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return repo


def post(base: str, path: str, body: dict):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, json.loads(text) if text and text != b"null" else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_ready(base: str, proc) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_of(proc)
        try:
            with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"quiver serve did not become ready:\n{log_of(proc)}")


def wait_port(port: int, proc) -> None:
    import socket

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"feast serve_transformations did not listen on {port}")


class Quiver:
    def __init__(self, repo: Path, *args: str):
        port = free_port()
        self.proc = spawn([QUIVER, "serve", "--repo", repo, "--port", str(port), "--enable-push", *args])
        self.base = f"http://127.0.0.1:{port}"
        wait_ready(self.base, self.proc)

    def metric(self, line_prefix: str) -> float:
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(line_prefix + " "):
                    return float(line.split()[-1])
        raise AssertionError(f"no metric {line_prefix}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def transformations():
    """Starts `feast serve_transformations` in a repo; stops them all at the end."""
    procs = []

    def start(repo: Path) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [str(FEAST_CLI), "serve_transformations", "--port", str(port)],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        wait_port(port, proc)
        return f"127.0.0.1:{port}"

    yield start
    for p in procs:
        stop_process_group(p)


def online_answer(base: str, entities):
    status, body = post(base, "/get-online-features", {"features": FEATURES, "entities": {"driver_id": entities}})
    assert status == 200, body
    return {n: r for n, r in zip(body["metadata"]["feature_names"], body["results"])}


def test_redis_write_equal_bytes_and_served_without_transformation(tmp_path: Path, transformations) -> None:
    import redis
    from google.protobuf.timestamp_pb2 import Timestamp

    with redis_server(tmp_path) as feast_port, redis_server(tmp_path) as quiver_port:
        store = lambda port: f'online_store:\n    type: redis\n    connection_string: "127.0.0.1:{port}"\n'  # noqa: E731
        feast_repo = make_repo(tmp_path, "feast_side", store(feast_port))
        quiver_repo = make_repo(tmp_path, "quiver_side", store(quiver_port))
        body = {"feature_view_name": VIEW, "df": DF}

        began = time.time()
        with feast_serve(feast_repo, tmp_path / "feast_serve.log") as feast:
            status, answer = post(feast, "/write-to-online-store", body)
            assert status == 200, answer
            quiver = Quiver(quiver_repo, "--transformation-service", transformations(quiver_repo))
            try:
                status, answer = post(quiver.base, "/write-to-online-store", body)
                assert status == 200, answer
                assert answer["written"] == 3, answer
                ended = time.time()

                # Equal bytes in Redis, field by field; `_ts` is the time of each write.
                theirs_db = redis.Redis(port=feast_port)
                ours_db = redis.Redis(port=quiver_port)
                keys = sorted(theirs_db.keys())
                assert len(keys) == 3 and sorted(ours_db.keys()) == keys
                ts_field = f"_ts:{VIEW}".encode()
                for key in keys:
                    theirs, ours = theirs_db.hgetall(key), ours_db.hgetall(key)
                    assert set(ours) == set(theirs), (key, ours, theirs)
                    assert len(theirs) == 4  # two outputs, the join key, _ts
                    for field in theirs:
                        if field != ts_field:
                            assert ours[field] == theirs[field], (key, field, ours[field], theirs[field])
                    ts = Timestamp()
                    ts.ParseFromString(ours[ts_field])
                    assert began - 1 <= ts.seconds <= ended + 1

                # Served as stored: the same values from both servers, no request data sent.
                entities = [1001, 1002, 1005, 1003]
                feast_answer = online_answer(feast, entities)
                quiver_answer = online_answer(quiver.base, entities)
                for name in ("conv_rate_plus_val1", "conv_rate_plus_val2"):
                    assert quiver_answer[name]["values"] == feast_answer[name]["values"], name
                    assert quiver_answer[name]["statuses"][:3] == feast_answer[name]["statuses"][:3]
                # The first row of 1001 won; 0.3 + 1000 computed by pandas in float64.
                assert quiver_answer["conv_rate_plus_val1"]["values"][:3] == [1000.3, 2000.5, 4.123456789]
                # Never written: null (Feast's Redis path says PRESENT, quiver NOT_FOUND).
                assert quiver_answer["conv_rate_plus_val1"]["values"][3] is None
                assert quiver_answer["conv_rate_plus_val1"]["statuses"][3] == "NOT_FOUND"

                # One call for the write, none for serving.
                calls = 'quiver_transformation_calls_total{phase="%s",outcome="ok"}'
                assert quiver.metric(calls % "write") == 1
                assert quiver.metric(calls % "serve") == 0
            finally:
                quiver.stop()

        # No transformation service at all: still answered, from the stored rows.
        bare = Quiver(quiver_repo)
        try:
            again = online_answer(bare.base, entities)
            for name in ("conv_rate_plus_val1", "conv_rate_plus_val2"):
                assert again[name]["values"] == quiver_answer[name]["values"]
            # Writing needs the service: refused, naming the flag (and the escape hatch).
            status, text = post(bare.base, "/write-to-online-store", body)
            assert status == 400 and "--transformation-service" in text, text
            # transform_on_write: false stores the given outputs, as Feast does.
            given = {"driver_id": [1003], "conv_rate_plus_val1": [1.5], "conv_rate_plus_val2": [2.5]}
            status, text = post(
                bare.base, "/write-to-online-store",
                {"feature_view_name": VIEW, "df": given, "transform_on_write": False},
            )
            assert status == 200, text
            assert online_answer(bare.base, [1003])["conv_rate_plus_val2"]["values"] == [2.5]
        finally:
            bare.stop()


def test_sqlite_write_equal_rows(tmp_path: Path, transformations) -> None:
    import sqlite3

    import pandas as pd
    from feast import FeatureStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    sqlite = "online_store:\n    type: sqlite\n    path: data/online_store.db\n"
    feast_repo = make_repo(tmp_path, "feast_side", sqlite)
    quiver_repo = make_repo(tmp_path, "quiver_side", sqlite)

    fs = FeatureStore(repo_path=str(feast_repo))
    odfv = fs.get_on_demand_feature_view(VIEW)
    # Feast 0.67's apply leaves the view's table out; its own store creates it.
    SqliteOnlineStore().update(fs.config, [], [odfv], [], [], partial=False)
    fs.write_to_online_store(VIEW, pd.DataFrame(DF))

    quiver = Quiver(quiver_repo, "--transformation-service", transformations(quiver_repo))
    try:
        status, answer = post(quiver.base, "/write-to-online-store", {"feature_view_name": VIEW, "df": DF})
        assert status == 200, answer
    finally:
        quiver.stop()

    def rows(repo: Path):
        conn = sqlite3.connect(repo / "data" / "online_store.db")
        out = conn.execute(
            f"SELECT entity_key, feature_name, value, event_ts = created_ts FROM demo_{VIEW} "
            "ORDER BY entity_key, feature_name"
        ).fetchall()
        conn.close()
        return out

    theirs, ours = rows(feast_repo), rows(quiver_repo)
    assert len(theirs) == 9  # three drivers: two outputs and the join key each
    assert ours == theirs
