"""Historical retrieval, quiver against the real Feast 0.67, on one Feast-applied repo.

- `quiver historical` equals a brute-force reading of the rules (feast-compat.md section 5) on
  generated data, and equals Feast's file offline store `get_historical_features` wherever Feast
  is right: Feast 0.67's file store collapses duplicate entity rows (feast issue 6787) and picks
  an arbitrary row among event-time ties, ignoring the created timestamp; there quiver follows
  the documented rules and the test says so.
- The real Feast SDK, configured with `offline_store: {type: remote}`, reads the same dataset
  through `quiver offline serve` (Arrow Flight); a feature service with an alias works; errors
  arrive as Feast's exception classes; a bearer token is enforced.
- `POST /v1/historical` answers the same rows as an Arrow IPC stream.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.flight as fl
import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
FEAST_CLI = Path(sys.executable).parent / "feast"
sys.path.insert(0, str(ROOT / "compat"))

from fixture_helpers import log_of, spawn  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)

driver_source = FileSource(
    name="driver_source", path="data/driver.parquet", timestamp_field="event_timestamp",
    created_timestamp_column="created", field_mapping={"conv": "conv_rate"},
)
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(hours=2), source=driver_source,
    schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype=Int64)],
)
pair_source = FileSource(name="pair_source", path="data/pair.parquet", timestamp_field="event_timestamp")
pair = FeatureView(
    name="pair", entities=[driver, customer], ttl=timedelta(days=1), source=pair_source,
    schema=[Field(name="rides", dtype=Int64), Field(name="segment", dtype=String)],
)
service = FeatureService(
    name="scoring",
    features=[driver_stats[["trips"]].with_name("recent"), pair[["rides"]]],
)
'''

DRIVERS = 40
CUSTOMERS = ["c%d" % i for i in range(8)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_sources(data: Path, rng: np.random.Generator, ties: bool) -> None:
    data.mkdir(parents=True, exist_ok=True)
    n = 3000
    ids = rng.integers(0, DRIVERS, n)
    # Minutes over two days; without ties, (driver, event time) is unique.
    minutes = rng.integers(0, 48 * 60, n)
    if not ties:
        seen = set()
        keep = []
        for i, (d, m) in enumerate(zip(ids, minutes)):
            if (d, m) not in seen:
                seen.add((d, m))
                keep.append(i)
        ids, minutes = ids[keep], minutes[keep]
        n = len(ids)
    created = minutes * 60 + rng.integers(0, 10_000, n)
    pd.DataFrame(
        {
            "driver_id": ids.astype("int64"),
            "event_timestamp": pd.to_datetime([T0 + timedelta(minutes=int(m)) for m in minutes]),
            "created": pd.to_datetime([T0 + timedelta(seconds=int(c)) for c in created]),
            "conv": rng.random(n),
            "trips": np.arange(n, dtype="int64"),
        }
    ).to_parquet(data / "driver.parquet")
    m = 800
    pd.DataFrame(
        {
            "driver_id": rng.integers(0, DRIVERS, m).astype("int64"),
            "customer_id": rng.choice(CUSTOMERS, m),
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(minutes=int(x)) for x in rng.integers(0, 48 * 60, m)]
            ),
            "rides": np.arange(m, dtype="int64"),
            "segment": [f"s{i % 5}" for i in range(m)],
        }
    ).drop_duplicates(["driver_id", "customer_id", "event_timestamp"]).to_parquet(data / "pair.parquet")


def entity_df(rng: np.random.Generator, n: int, duplicates: bool) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "driver_id": rng.integers(0, DRIVERS + 5, n).astype("int64"),  # some unknown
            "customer_id": rng.choice(CUSTOMERS + ["nobody"], n),
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(minutes=int(x)) for x in rng.integers(0, 50 * 60, n)]
            ),
        }
    )
    if duplicates:
        df = pd.concat([df, df.iloc[: n // 5]], ignore_index=True)
    else:
        df = df.drop_duplicates(["driver_id", "customer_id", "event_timestamp"]).reset_index(drop=True)
    df["row_id"] = np.arange(len(df), dtype="int64")
    return df


def reference(data: Path, entities: pd.DataFrame) -> pd.DataFrame:
    """The rules, row by row."""
    d = pd.read_parquet(data / "driver.parquet")
    p = pd.read_parquet(data / "pair.parquet")
    out = entities.copy()
    conv, trips, rides, segment = [], [], [], []
    for r in entities.itertuples():
        c = d[(d.driver_id == r.driver_id) & (d.event_timestamp <= r.event_timestamp)
              & (d.event_timestamp >= r.event_timestamp - timedelta(hours=2))]
        if len(c):
            best = c.sort_values(["event_timestamp", "created"]).iloc[-1]
            conv.append(best.conv)
            trips.append(best.trips)
        else:
            conv.append(None)
            trips.append(None)
        c = p[(p.driver_id == r.driver_id) & (p.customer_id == r.customer_id)
              & (p.event_timestamp <= r.event_timestamp)
              & (p.event_timestamp >= r.event_timestamp - timedelta(days=1))]
        if len(c):
            best = c.sort_values("event_timestamp").iloc[-1]
            rides.append(best.rides)
            segment.append(best.segment)
        else:
            rides.append(None)
            segment.append(None)
    out["driver_stats__conv_rate"] = pd.array(conv, dtype="Float64")
    out["driver_stats__trips"] = pd.array(trips, dtype="Int64")
    out["pair__rides"] = pd.array(rides, dtype="Int64")
    out["pair__segment"] = segment
    return out


FEATURES = ["driver_stats:conv_rate", "driver_stats:trips", "pair:rides", "pair:segment"]
FEATURE_COLUMNS = ["driver_stats__conv_rate", "driver_stats__trips", "pair__rides", "pair__segment"]


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Comparable frames: by row_id, nullable dtypes, UTC times."""
    df = df.sort_values("row_id").reset_index(drop=True).copy()
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    for c in ["driver_stats__conv_rate"]:
        df[c] = df[c].astype("Float64")
    for c in ["driver_stats__trips", "pair__rides", "driver_id", "row_id"]:
        df[c] = df[c].astype("Int64")
    df["pair__segment"] = df["pair__segment"].astype(object).where(df["pair__segment"].notna(), None)
    return df[["driver_id", "customer_id", "event_timestamp", "row_id"] + FEATURE_COLUMNS]


def make_repo(tmp_path: Path, ties: bool, seed: int) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: hist\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    (repo / "features.py").write_text(DEFINITIONS)
    write_sources(repo / "data", np.random.default_rng(seed), ties)
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, capture_output=True)
    return repo


def quiver_historical(repo: Path, entities: pd.DataFrame, *extra: str) -> pd.DataFrame:
    entities.to_parquet(repo / "entities.parquet")
    out = repo / "out.parquet"
    done = subprocess.run(
        [str(QUIVER), "historical", "--repo", str(repo), "--entities", str(repo / "entities.parquet"),
         "--out", str(out), *extra],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    return pd.read_parquet(out)


def feast_historical(repo: Path, entities: pd.DataFrame, features, full=True) -> pd.DataFrame:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    return store.get_historical_features(
        entity_df=entities, features=features, full_feature_names=full
    ).to_df()


def test_equal_to_feast_where_feast_is_right(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ties=False, seed=1)
    rng = np.random.default_rng(2)
    entities = entity_df(rng, 600, duplicates=False)
    ours = quiver_historical(repo, entities, "--full-feature-names",
                             "--features", ",".join(FEATURES))
    # Input order, entity columns first, every row kept.
    assert list(ours.columns) == list(entities.columns) + FEATURE_COLUMNS
    assert list(ours["row_id"]) == list(entities["row_id"])
    expected = normalize(reference(repo / "data", entities))
    pd.testing.assert_frame_equal(normalize(ours), expected)
    theirs = normalize(feast_historical(repo, entities, FEATURES))
    # Where Feast returns a row, it must be ours; rows Feast drops must be rows without matches.
    merged = theirs.merge(normalize(ours), on="row_id", suffixes=("_feast", "_quiver"))
    assert len(merged) == len(theirs)
    for c in FEATURE_COLUMNS:
        a, b = merged[c + "_feast"], merged[c + "_quiver"]
        same = (a.isna() & b.isna()) | (a.astype(object) == b.astype(object))
        assert same.all(), merged.loc[~same, ["row_id", c + "_feast", c + "_quiver"]]
    # Feast's file store drops entity rows that some view has no match for; every row it
    # dropped is such a row in quiver's answer (where it is kept, with nulls).
    dropped = normalize(ours)
    dropped = dropped[~dropped["row_id"].isin(theirs["row_id"])]
    no_match = dropped["driver_stats__trips"].isna() | dropped["pair__rides"].isna()
    assert no_match.all(), dropped[~no_match]
    assert len(theirs) + len(dropped) == len(entities)


def test_duplicates_and_created_ties_follow_the_rules(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ties=True, seed=3)
    rng = np.random.default_rng(4)
    entities = entity_df(rng, 400, duplicates=True)
    ours = quiver_historical(repo, entities, "--full-feature-names",
                             "--features", ",".join(FEATURES))
    assert len(ours) == len(entities)  # duplicates kept (Feast collapses them)
    pd.testing.assert_frame_equal(normalize(ours), normalize(reference(repo / "data", entities)))
    theirs = feast_historical(repo, entities, FEATURES)
    # Feast's file store is known to lose rows here; quiver does not.
    assert len(theirs) <= len(ours)


def start_server(repo: Path, *extra: str):
    port, http_port = free_port(), free_port()
    proc = spawn([QUIVER, "offline", "serve", "--repo", repo, "--port", str(port), "--http-port", str(http_port),
                  *extra])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            return proc, port, http_port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log_of(proc))
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("quiver offline serve did not start")


def remote_repo(tmp_path: Path, repo: Path, port: int) -> Path:
    client = tmp_path / "client"
    client.mkdir()
    (client / "feature_store.yaml").write_text(
        f"project: hist\nregistry: {repo / 'data' / 'registry.db'}\nprovider: local\n"
        f"online_store:\n  type: sqlite\n  path: {client / 'online.db'}\n"
        f"offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {port}\n"
        "entity_key_serialization_version: 3\n"
    )
    return client


def test_feast_sdk_reads_through_quiver_flight_server_and_http(tmp_path: Path) -> None:
    from feast import FeatureStore
    from feast.errors import FeastError

    repo = make_repo(tmp_path, ties=False, seed=5)
    rng = np.random.default_rng(6)
    entities = entity_df(rng, 300, duplicates=True)
    ours = quiver_historical(repo, entities, "--full-feature-names",
                             "--features", ",".join(FEATURES))
    proc, port, http_port = start_server(repo)
    try:
        store = FeatureStore(repo_path=str(remote_repo(tmp_path, repo, port)))
        got = store.get_historical_features(
            entity_df=entities, features=FEATURES, full_feature_names=True
        ).to_df()
        assert list(got["row_id"]) == list(entities["row_id"])  # input order, duplicates kept
        pd.testing.assert_frame_equal(normalize(got), normalize(ours))

        # A feature service with an alias: its projection's name prefixes the columns.
        svc = store.get_historical_features(
            entity_df=entities, features=store.get_feature_service("scoring"),
            full_feature_names=True,
        ).to_df()
        assert "recent__trips" in svc.columns and "pair__rides" in svc.columns
        assert svc["recent__trips"].astype("Int64").equals(ours["driver_stats__trips"].astype("Int64"))

        # Server-side errors come back as Feast exceptions, with quiver's message.
        with pytest.raises(FeastError) as e:
            store.get_historical_features(
                entity_df=entities.drop(columns=["customer_id"]), features=["pair:rides"]
            ).to_df()
        assert "customer_id" in str(e.value)

        # POST /v1/historical: the same rows as an Arrow IPC stream.
        body = {
            "features": FEATURES,
            "full_feature_names": True,
            "entities": {
                "driver_id": entities["driver_id"].tolist(),
                "customer_id": entities["customer_id"].tolist(),
                "event_timestamp": [t.isoformat() for t in entities["event_timestamp"]],
                "row_id": entities["row_id"].tolist(),
            },
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/historical",
            data=json.dumps(body).encode(), method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            assert resp.headers["content-type"] == "application/vnd.apache.arrow.stream"
            table = pa.ipc.open_stream(resp.read()).read_all()
        pd.testing.assert_frame_equal(normalize(table.to_pandas()), normalize(ours))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_flight_bearer_token(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ties=False, seed=7)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    proc, port, _ = start_server(repo, "--token-file", str(token))
    try:
        client = fl.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
        command = {
            "command_id": "1", "api": "get_historical_features",
            "feature_view_names": ["driver_stats"], "name_aliases": [None],
            "feature_refs": ["driver_stats:trips"], "project": "hist",
            "full_feature_names": False,
        }
        table = pa.table({
            "driver_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(hours=20)] * 2, pa.timestamp("us", "UTC")),
        })

        def exchange(options):
            writer, reader = client.do_exchange(
                fl.FlightDescriptor.for_command(json.dumps(command)), options=options)
            writer.begin(table.schema)
            writer.write_table(table)
            writer.done_writing()
            return reader.read_all()

        with pytest.raises(fl.FlightError) as e:
            exchange(None)
        assert "FeastPermissionError" in str(e.value)
        with pytest.raises(fl.FlightError):
            exchange(fl.FlightCallOptions(headers=[(b"authorization", b"Bearer wrong")]))
        # The scheme in any case (RFC 9110), as gRPC metadata carries it.
        lower = exchange(fl.FlightCallOptions(headers=[(b"authorization", b"bearer s3cret")]))
        assert lower.num_rows == 2
        good = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer s3cret")])
        result = exchange(good)
        assert result.column_names == ["driver_id", "event_timestamp", "trips"]
        assert result.num_rows == 2

        # The older DoPut → GetFlightInfo → DoGet sequence.
        descriptor = fl.FlightDescriptor.for_command(json.dumps({**command, "command_id": "2"}))
        writer, _ = client.do_put(descriptor, table.schema, options=good)
        writer.write_table(table)
        writer.close()
        info = client.get_flight_info(descriptor, options=good)
        via_get = client.do_get(info.endpoints[0].ticket, options=good).read_all()
        assert via_get.equals(result)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
