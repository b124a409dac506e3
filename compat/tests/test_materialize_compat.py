"""Materialization, quiver against the real Feast 0.67, on one Feast-applied repo.

For each online store (SQLite, and a redis-server of the test's own):
- `feast materialize START END` and `quiver materialize START END` over the same source files
  leave byte-identical online stores (every Redis hash field; every SQLite row);
- Feast's `get_online_features` reads what quiver materialized;
- the interval quiver records in the registry is the one Feast's `materialize-incremental`
  starts from.

The source rows exercise the rules: several rows per entity, ties on event time broken by the
created timestamp, rows before START and after END, both bounds exactly, nulls, lists, a field
mapping and a composite key.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat"))

QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
FEAST_CLI = Path(sys.executable).parent / "feast"

T0 = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
START = "2026-01-01T09:00:00"
END = "2026-01-01T12:00:00"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def write_sources(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    drivers = [
        # driver, event, created, conv, acc, trips, zones
        (1001, at(8), at(8), 0.1, 0.2, 1, [1]),  # before START
        (1001, at(10), at(10), 0.5, 0.6, 5, [1, 2]),
        (1001, at(11), at(11.5), 0.75, 0.8, 7, [3]),  # tie on 11:00, larger created wins
        (1001, at(11), at(11), 0.25, 0.3, 6, []),
        (1001, at(13), at(13), 0.9, 0.9, 9, [9]),  # after END
        (1002, at(9), at(9), 0.125, None, 2, [4, 5]),  # START exactly; a null
        (1003, at(12), at(12), 0.375, 0.5, 3, None),  # END exactly; a null list
        (1004, at(7), at(7), 0.5, 0.5, 4, [6]),  # only before START: never written
    ]
    pd.DataFrame(
        {
            "driver_id": pd.Series([d[0] for d in drivers], dtype="int64"),
            "event_timestamp": [d[1] for d in drivers],
            "created": [d[2] for d in drivers],
            "conv_rate": pd.Series([d[3] for d in drivers], dtype="float32"),
            "acc_rate": pd.Series([d[4] for d in drivers], dtype="float32"),
            "avg_daily_trips": pd.Series([d[5] for d in drivers], dtype="int64"),
            "recent_zones": [d[6] for d in drivers],
        }
    ).to_parquet(data / "driver_stats.parquet")
    pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2"],
            "event_timestamp": [at(9.5), at(10.5), at(11)],
            "tier": ["silver", "gold", "bronze"],
            "ltv": [10.0, 100.5, 0.0],
            "is_vip": [False, True, False],
            "signup_ts": [at(1), at(1), at(2)],
        }
    ).to_parquet(data / "customer_profile.parquet")
    pd.DataFrame(
        {
            "driver_id": pd.Series([1001, 1001, 1002], dtype="int64"),
            "customer_id": ["c1", "c2", "c1"],
            "event_timestamp": [at(10), at(10), at(11)],
            "rides_together": pd.Series([3, 1, 8], dtype="int64"),
            "avg_rating": [4.5, 3.0, 5.0],
        }
    ).to_parquet(data / "driver_customer.parquet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield port, client
    proc.kill()
    proc.wait()


def make_repo(tmp_path: Path, online_store: str) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "compat/feast_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_sources(repo / "data")
    config = (repo / "feature_store.yaml").read_text()
    start = config.index("online_store:")
    end = config.index("offline_store:")
    (repo / "feature_store.yaml").write_text(config[:start] + online_store + config[end:])
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, capture_output=True)
    return repo


def run(cmd: list, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def feast_materialize(repo: Path) -> None:
    run([str(FEAST_CLI), "materialize", START, END], repo)


def quiver_materialize(repo: Path) -> str:
    return run([str(QUIVER), "materialize", "--repo", str(repo), START, END], repo)


def redis_dump(client) -> dict:
    return {key: client.hgetall(key) for key in client.scan_iter()}


def sqlite_dump(path: Path) -> dict:
    import sqlite3

    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {}
    for t in sorted(tables):
        rows = conn.execute(
            f'SELECT entity_key, feature_name, value, event_ts, typeof(event_ts) FROM "{t}" ORDER BY entity_key, feature_name'
        ).fetchall()
        out[t] = rows
    conn.close()
    return out


def check_feast_reads(repo: Path) -> None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    got = store.get_online_features(
        features=[
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:avg_daily_trips",
            "driver_hourly_stats:recent_zones",
        ],
        entity_rows=[{"driver_id": d} for d in (1001, 1002, 1003, 1004)],
    ).to_dict()
    assert got["avg_daily_trips"] == [7, 2, 3, None]
    assert got["conv_rate"][:3] == pytest.approx([0.75, 0.125, 0.375])
    assert got["recent_zones"][:2] == [[3], [4, 5]]
    profile = store.get_online_features(
        features=["customer_profile:tier", "customer_profile:lifetime_value"],
        entity_rows=[{"customer_id": "c1"}, {"customer_id": "c2"}],
    ).to_dict()
    assert profile["tier"] == ["gold", "bronze"]
    assert profile["lifetime_value"] == [100.5, 0.0]
    pair = store.get_online_features(
        features=["driver_customer_affinity:rides_together"],
        entity_rows=[{"driver_id": 1001, "customer_id": "c2"}, {"driver_id": 1002, "customer_id": "c1"}],
    ).to_dict()
    assert pair["rides_together"] == [1, 8]


def check_registry(repo: Path) -> None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    view = store.get_feature_view("driver_hourly_stats")
    ends = [i[1] for i in view.materialization_intervals]
    assert datetime(2026, 1, 1, 12, tzinfo=timezone.utc) in [e.astimezone(timezone.utc) for e in ends]
    assert view.most_recent_end_time.astimezone(timezone.utc) == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def test_redis_materialize_matches_feast_byte_for_byte(tmp_path: Path, redis_server) -> None:
    port, client = redis_server
    repo = make_repo(tmp_path, f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}\n")
    feast_materialize(repo)
    by_feast = redis_dump(client)
    assert len(by_feast) >= 5
    client.flushall()
    out = quiver_materialize(repo)
    assert "driver_hourly_stats:" in out
    by_quiver = redis_dump(client)
    assert by_quiver == by_feast
    check_feast_reads(repo)
    check_registry(repo)
    # A rerun writes nothing new.
    again = quiver_materialize(repo)
    assert "0 written" in again
    assert redis_dump(client) == by_feast


def test_a_time_sorted_source_read_by_segments_matches_feast(tmp_path: Path, redis_server) -> None:
    """A driver source sorted by event time in small row groups (as event logs are written):
    quiver reads it newest segment first and writes each segment while reading the next; the
    online store ends up byte-identical to Feast's. Older rows for a third of the drivers land in
    older segments and must lose; every seventh driver has a second row at the same time with
    a later created timestamp, which must win wherever the row-group boundaries fall."""
    import numpy as np

    port, client = redis_server
    repo = make_repo(tmp_path, f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}\n")
    rows = []
    for d in range(900):
        # Between 09:00 and 12:00, to the microsecond: no two drivers share a time.
        t = at(9 + 3 * d / 900) + timedelta(microseconds=d)
        rows.append((1000 + d, t, t, d / 1000, 7))
        if d % 3 == 0:
            rows.append((1000 + d, t - timedelta(minutes=50), t, -1.0, 1))
        if d % 7 == 0:
            rows.append((1000 + d, t, t + timedelta(seconds=5), d / 100, 9))
    frame = pd.DataFrame(rows, columns=["driver_id", "event_timestamp", "created", "conv_rate", "avg_daily_trips"])
    frame = frame.sort_values("event_timestamp", kind="stable")
    frame["conv_rate"] = frame["conv_rate"].astype("float32")
    frame["acc_rate"] = np.float32(0.5)
    frame["recent_zones"] = [[1]] * len(frame)
    frame.to_parquet(repo / "data/driver_stats.parquet", row_group_size=128, index=False)

    feast_materialize(repo)
    by_feast = redis_dump(client)
    client.flushall()
    out = quiver_materialize(repo)
    assert "time segments written as read" in out, out
    # Byte for byte, `_ts` included: Feast 0.67 keeps its nanoseconds.
    assert redis_dump(client) == by_feast
    # And a rerun, which reads every `_ts` back, skips every row as not newer.
    again = quiver_materialize(repo)
    assert "0 written" in again, again


def test_sqlite_materialize_matches_feast(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "online_store:\n  type: sqlite\n  path: data/online_store.db\n")
    db = repo / "data/online_store.db"
    feast_materialize(repo)
    by_feast = sqlite_dump(db)
    assert sum(len(rows) for rows in by_feast.values()) > 0
    db.unlink()
    quiver_materialize(repo)
    by_quiver = sqlite_dump(db)
    assert {t: rows for t, rows in by_quiver.items() if rows} == {t: rows for t, rows in by_feast.items() if rows}
    check_feast_reads(repo)
    check_registry(repo)


class QuiverServer:
    """`quiver serve` on a free port, for the duration of a `with` block."""

    def __init__(self, repo: Path, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(QUIVER), "serve", "--repo", str(repo), "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> "QuiverServer":
        import urllib.request

        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("quiver serve did not become ready")

    def __exit__(self, *_exc) -> None:
        self.proc.kill()
        self.proc.wait()

    def post(self, path: str, body: dict) -> dict:
        import json
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
            return json.loads(r.read())


def test_quiver_serves_what_feast_materialized(tmp_path: Path, redis_server) -> None:
    """Feast writes, quiver reads: the sidecar answers Feast's materialized values."""
    port, _client = redis_server
    repo = make_repo(tmp_path, f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}\n")
    feast_materialize(repo)
    with QuiverServer(repo) as server:
        answer = server.post(
            "/get-online-features",
            {"features": ["driver_hourly_stats:avg_daily_trips", "customer_profile:tier"],
             "entities": {"driver_id": [1001, 1003], "customer_id": ["c1", "c2"]}},
        )
    names = answer["metadata"]["feature_names"]
    values = {n: answer["results"][i]["values"] for i, n in enumerate(names)}
    assert values["avg_daily_trips"] == [7, 3]
    assert values["tier"] == ["gold", "bronze"]


def test_push_writes_what_feast_push_writes(tmp_path: Path, redis_server) -> None:
    """Feast's `store.push` and quiver's `POST /push` of the same rows leave the same Redis
    hashes; Feast reads quiver's push, and quiver serves Feast's."""
    from feast import FeatureStore
    from feast.data_source import PushMode

    port, client = redis_server
    repo = make_repo(tmp_path, f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}\n")
    rows = {
        "driver_id": [1001, 1002, 1001],
        "event_timestamp": [at(10), at(11), at(12)],
        "created": [at(10), at(11), at(12)],
        "conv_rate": [0.5, 0.25, 0.125],
        "acc_rate": [0.75, 0.5, 0.375],
    }
    df = pd.DataFrame(rows)
    df["conv_rate"] = df["conv_rate"].astype("float32")
    df["acc_rate"] = df["acc_rate"].astype("float32")
    store = FeatureStore(repo_path=str(repo))
    store.push("driver_stats_push", df, to=PushMode.ONLINE)
    by_feast = redis_dump(client)
    assert len(by_feast) == 2
    with QuiverServer(repo, "--enable-push") as server:
        # Feast wrote, quiver serves.
        answer = server.post(
            "/get-online-features",
            {"features": ["driver_hourly_stats_fresh:conv_rate"], "entities": {"driver_id": [1001, 1002]}},
        )
        assert answer["results"][1]["values"] == [0.125, 0.25]
        client.flushall()
        body = {k: ([t.isoformat() for t in v] if k in ("event_timestamp", "created") else v) for k, v in rows.items()}
        result = server.post("/push", {"push_source_name": "driver_stats_push", "df": body, "to": "online"})
        assert result["written"] == 2
    assert redis_dump(client) == by_feast
    got = FeatureStore(repo_path=str(repo)).get_online_features(
        features=["driver_hourly_stats_fresh:conv_rate", "driver_hourly_stats_fresh:acc_rate"],
        entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}],
    ).to_dict()
    assert got["conv_rate"] == [0.125, 0.25]
    assert got["acc_rate"] == [0.375, 0.5]


def test_two_pushes_in_one_second_to_sqlite_keep_the_second_as_feast_does(tmp_path: Path) -> None:
    """Feast's SQLite store keeps whole seconds and overwrites unconditionally. Two pushes for one
    driver 0.5 s apart, each its own request: Feast keeps the second, and so must quiver (a
    strictly-newer rule on whole seconds would drop it). Both leave the same rows; Feast reads
    quiver's. A push of an older second is then skipped by quiver (where Feast would overwrite:
    a documented difference)."""
    from feast import FeatureStore
    from feast.data_source import PushMode

    repo = make_repo(tmp_path, "online_store:\n  type: sqlite\n  path: data/online_store.db\n")
    db = repo / "data/online_store.db"
    base = at(20)
    pushes = [
        {"driver_id": [1001], "event_timestamp": [base + timedelta(milliseconds=200)],
         "created": [base], "conv_rate": [0.5], "acc_rate": [0.25]},
        {"driver_id": [1001], "event_timestamp": [base + timedelta(milliseconds=700)],
         "created": [base], "conv_rate": [0.125], "acc_rate": [0.375]},
    ]

    def frame(rows: dict) -> pd.DataFrame:
        df = pd.DataFrame(rows)
        return df.astype({"conv_rate": "float32", "acc_rate": "float32"})

    def body(rows: dict) -> dict:
        return {k: ([t.isoformat() for t in v] if k in ("event_timestamp", "created") else v) for k, v in rows.items()}

    def feast_reads() -> dict:
        return FeatureStore(repo_path=str(repo)).get_online_features(
            features=["driver_hourly_stats_fresh:conv_rate", "driver_hourly_stats_fresh:acc_rate"],
            entity_rows=[{"driver_id": 1001}],
        ).to_dict()

    store = FeatureStore(repo_path=str(repo))
    for rows in pushes:
        store.push("driver_stats_push", frame(rows), to=PushMode.ONLINE)
    by_feast = sqlite_dump(db)
    assert feast_reads()["conv_rate"] == [0.125]
    db.unlink()

    with QuiverServer(repo, "--enable-push") as server:
        for rows in pushes:
            result = server.post("/push", {"push_source_name": "driver_stats_push", "df": body(rows), "to": "online"})
            assert result["written"] == 1, result
        by_quiver = sqlite_dump(db)
        answer = server.post(
            "/get-online-features",
            {"features": ["driver_hourly_stats_fresh:conv_rate"], "entities": {"driver_id": [1001]}},
        )
        assert answer["results"][1]["values"] == [0.125]
        # The same push again changes nothing; an older second is skipped.
        again = server.post("/push", {"push_source_name": "driver_stats_push", "df": body(pushes[1]), "to": "online"})
        assert (again["written"], again["skipped"]) == (0, 1), again
        older = dict(pushes[0], event_timestamp=[base - timedelta(seconds=1)], conv_rate=[0.875])
        result = server.post("/push", {"push_source_name": "driver_stats_push", "df": body(older), "to": "online"})
        assert (result["written"], result["skipped"]) == (0, 1), result
    assert {t: r for t, r in by_quiver.items() if r} == {t: r for t, r in by_feast.items() if r}
    assert sqlite_dump(db) == by_quiver
    got = feast_reads()
    assert got["conv_rate"] == [0.125]
    assert got["acc_rate"] == [0.375]


def test_push_to_offline_is_read_by_feast_historical_retrieval(tmp_path: Path, redis_server) -> None:
    """`to: online_and_offline` appends to the push source's batch source: Feast's own
    point-in-time retrieval (file offline store) sees the pushed rows, and the online store
    has them too."""
    from feast import FeatureStore

    port, client = redis_server
    repo = make_repo(tmp_path, f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}\n")
    with QuiverServer(repo, "--enable-push") as server:
        result = server.post(
            "/push",
            {
                "push_source_name": "driver_stats_push",
                "df": {
                    "driver_id": [1001, 1005],
                    "event_timestamp": ["2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"],
                    "created": ["2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"],
                    "conv_rate": [0.0625, 0.5],
                    "acc_rate": [0.25, 0.75],
                },
                "to": "online_and_offline",
            },
        )
        assert result["written"] == 2
        assert result["offline"].endswith("driver_stats.parquet")
    assert len(redis_dump(client)) == 2
    store = FeatureStore(repo_path=str(repo))
    entity_df = pd.DataFrame(
        {
            "driver_id": [1001, 1005, 1001],
            "event_timestamp": [at(24.5), at(24.5), at(12.5)],
        }
    )
    got = store.get_historical_features(
        entity_df=entity_df, features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]
    ).to_df()
    got = got.sort_values(["driver_id", "event_timestamp"]).reset_index(drop=True)
    # 1001 at 12:30 still sees its source row of 11:00 (created 11:30); at 24:30 the pushed one.
    assert list(got["conv_rate"].round(6)) == [0.75, 0.0625, 0.5]
    assert got["avg_daily_trips"].isna().tolist() == [False, True, True]
