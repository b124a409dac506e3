#!/usr/bin/env python3
"""The value-type matrix, written by the REAL Feast (0.67.0): what quiver's materialize, push
and reads are checked against (offline/tests/feast_types.rs, core/tests/feast_types.rs).

How to run (from the repository root, with compat/setup-venv.sh's venv):

    ~/.cache/quiver-ci/feast-venv/bin/python compat/generate_types_fixtures.py

Needs `redis-server` on PATH and free localhost ports. Re-executes itself with TZ=UTC and
PYTHONHASHSEED=0 (Feast builds sets through Python sets).

One feature view, `types`, with a feature of every value type Feast 0.67 can materialize from
a file: the scalars, their Array(...) and Set(...), Map, Array(Map), Json, Array(Json),
Struct({...}), Array(Struct({...})), Uuid, TimeUuid and their arrays and sets. Three drivers:
1 and 2 hold values, 3 is null in every feature (Null). The Parquet source is written the way
pyarrow writes pandas' dicts and lists: a Map or Struct as a struct column, Json as a string
column, UnixTimestamp as a timestamp column, lists as list columns. (No list inside the Map:
Feast 0.67's materialize fails on one, `python_type_to_feast_value_type` testing a numpy
array's truth value. Nor a list<struct> column for Array(Map): it wants a list and gets a
numpy array; its JSON text, which Feast `json.loads`, is what it takes. An Int64 column with a
null reaches Feast as float64, so its values stay below 2**53.)

What Feast did with it, recorded (nothing here is computed by hand):
- `feast materialize` into SQLite and into Redis: every row and every hash field;
- `feast serve`'s JSON for every feature of the three drivers;
- the body Feast's remote online store client sends for the same rows to
  `/write-to-online-store` (its own `_proto_value_to_transport_value`: Map and Struct values
  as JSON text), and the SQLite rows `feast serve` wrote for that body.

Map entries: Python's protobuf (upb) writes them in a per-process hash order, so their order
in these bytes is one of many Feast produces; quiver's tests compare map entries as a set and
everything else byte for byte.

Outputs: offline/tests/fixtures/feast_types/{registry.db, data/types.parquet, expected.json}
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_helpers import reexec_with_stable_env  # noqa: E402

reexec_with_stable_env()

import json  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import redis  # noqa: E402

from fixture_helpers import (  # noqa: E402
    FEAST_CLI,
    ROOT,
    feast_serve,
    post_json,
    redis_server,
    strict_json_loads,
    write_json,
)

OUT = ROOT / "offline" / "tests" / "fixtures" / "feast_types"
PROJECT = "types_demo"
START, END = "2026-01-01T00:00:00", "2026-01-02T00:00:00"
EVENT = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
T1 = datetime(2025, 6, 1, 8, 30, tzinfo=timezone.utc)
T2 = datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone.utc)
U1 = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
U2 = "a8098c1a-f86e-11da-bd1a-00112444be1e"

DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import (Array, Bool, Bytes, Float32, Float64, Int32, Int64, Json, Map, Set,
                         String, Struct, TimeUuid, UnixTimestamp, Uuid)

driver = Entity(name="driver", join_keys=["driver_id"])
source = FileSource(name="types_source", path="data/types.parquet",
                    timestamp_field="event_timestamp")
PROFILE = Struct({"name": String, "age": Int64})
types = FeatureView(
    name="types",
    entities=[driver],
    ttl=timedelta(0),
    source=source,
    schema=[
        Field(name="f_bytes", dtype=Bytes),
        Field(name="f_string", dtype=String),
        Field(name="f_int32", dtype=Int32),
        Field(name="f_int64", dtype=Int64),
        Field(name="f_float64", dtype=Float64),
        Field(name="f_float32", dtype=Float32),
        Field(name="f_bool", dtype=Bool),
        Field(name="f_unix_timestamp", dtype=UnixTimestamp),
        Field(name="f_bytes_list", dtype=Array(Bytes)),
        Field(name="f_string_list", dtype=Array(String)),
        Field(name="f_int32_list", dtype=Array(Int32)),
        Field(name="f_int64_list", dtype=Array(Int64)),
        Field(name="f_float64_list", dtype=Array(Float64)),
        Field(name="f_float32_list", dtype=Array(Float32)),
        Field(name="f_bool_list", dtype=Array(Bool)),
        Field(name="f_unix_timestamp_list", dtype=Array(UnixTimestamp)),
        Field(name="f_bytes_set", dtype=Set(Bytes)),
        Field(name="f_string_set", dtype=Set(String)),
        Field(name="f_int32_set", dtype=Set(Int32)),
        Field(name="f_int64_set", dtype=Set(Int64)),
        Field(name="f_float64_set", dtype=Set(Float64)),
        Field(name="f_float32_set", dtype=Set(Float32)),
        Field(name="f_bool_set", dtype=Set(Bool)),
        Field(name="f_unix_timestamp_set", dtype=Set(UnixTimestamp)),
        Field(name="f_map", dtype=Map),
        Field(name="f_map_list", dtype=Array(Map)),
        Field(name="f_json", dtype=Json),
        Field(name="f_json_list", dtype=Array(Json)),
        Field(name="f_struct", dtype=PROFILE),
        Field(name="f_struct_list", dtype=Array(PROFILE)),
        Field(name="f_uuid", dtype=Uuid),
        Field(name="f_time_uuid", dtype=TimeUuid),
        Field(name="f_uuid_list", dtype=Array(Uuid)),
        Field(name="f_time_uuid_list", dtype=Array(TimeUuid)),
        Field(name="f_uuid_set", dtype=Set(Uuid)),
        Field(name="f_time_uuid_set", dtype=Set(TimeUuid)),
    ],
    online=True,
)
# What Feast's remote online store client can send (see UNSENDABLE): feast serve's
# /write-to-online-store wants every feature of the view in the body.
sendable = FeatureView(
    name="sendable",
    entities=[driver],
    ttl=timedelta(0),
    source=source,
    schema=[f for f in types.schema if f.name not in UNSENDABLE],
    online=True,
)
'''

ts = pa.timestamp("us", tz="UTC")
MAP_TYPE = pa.struct(
    [
        ("vehicle_type", pa.string()),
        ("rating", pa.float64()),
        ("active", pa.bool_()),
        ("trips", pa.int64()),
        ("home", pa.struct([("lat", pa.float64()), ("lon", pa.float64())])),
    ]
)
PROFILE_TYPE = pa.struct([("name", pa.string()), ("age", pa.int64())])

# (column, arrow type, [driver 1, driver 2, driver 3 = null]). Sets are given in the order a
# Python set (PYTHONHASHSEED=0) iterates them, duplicates included, so that the order Feast
# writes is also the first-occurrence order quiver keeps.
COLUMNS = [
    ("f_bytes", pa.binary(), [b"\x00\xffhi", b""]),
    ("f_string", pa.string(), ["héllo 🚕", ""]),
    ("f_int32", pa.int32(), [-7, 2**31 - 1]),
    ("f_int64", pa.int64(), [2**40 + 1, -(2**40)]),
    ("f_float64", pa.float64(), [0.1, -2.5e-7]),
    ("f_float32", pa.float32(), [0.8057102, 1e10]),
    ("f_bool", pa.bool_(), [True, False]),
    ("f_unix_timestamp", ts, [T1, T2]),
    ("f_bytes_list", pa.list_(pa.binary()), [[b"a", b"\x00"], []]),
    ("f_string_list", pa.list_(pa.string()), [["x", "", "ü"], []]),
    ("f_int32_list", pa.list_(pa.int32()), [[1, -2, 3], []]),
    ("f_int64_list", pa.list_(pa.int64()), [[2**40, -1], [0]]),
    ("f_float64_list", pa.list_(pa.float64()), [[0.5, 1e300], []]),
    ("f_float32_list", pa.list_(pa.float32()), [[0.25, -1.5], [3.0]]),
    ("f_bool_list", pa.list_(pa.bool_()), [[True, False, True], []]),
    ("f_unix_timestamp_list", pa.list_(ts), [[T1, T2], []]),
    ("f_bytes_set", pa.list_(pa.binary()), [[b"s", b"s"], [b"t"]]),
    ("f_string_set", pa.list_(pa.string()), [["only", "only"], ["one"]]),
    ("f_int32_set", pa.list_(pa.int32()), [[1, 2, 2, 3], [5]]),
    ("f_int64_set", pa.list_(pa.int64()), [[4, 4, 6], [0]]),
    ("f_float64_set", pa.list_(pa.float64()), [[1.5, 1.5], [2.5]]),
    ("f_float32_set", pa.list_(pa.float32()), [[0.5], [0.75, 0.75]]),
    ("f_bool_set", pa.list_(pa.bool_()), [[False, True, True], [True]]),
    ("f_unix_timestamp_set", pa.list_(ts), [[T1, T1], [T2]]),
    (
        "f_map",
        MAP_TYPE,
        [
            {
                "vehicle_type": "truck",
                "rating": 4.5,
                "active": True,
                "trips": 12,
                "home": {"lat": 52.5, "lon": 13.25},
            },
            {
                "vehicle_type": "",
                "rating": None,
                "active": False,
                "trips": -1,
                "home": None,
            },
        ],
    ),
    ("f_map_list", pa.string(), ['[{"k": "b", "v": 2}, {"k": "a", "v": 1}]', "[]"]),
    ("f_json", pa.string(), ['{"z": 1, "a": [1, 2.5, "x"], "n": null}', "[]"]),
    ("f_json_list", pa.list_(pa.string()), [['{"k": true}', "3"], []]),
    (
        "f_struct",
        PROFILE_TYPE,
        [{"name": "driver_1", "age": 37}, {"name": "", "age": None}],
    ),
    (
        "f_struct_list",
        pa.list_(PROFILE_TYPE),
        [[{"name": "a", "age": 1}, {"name": "b", "age": 2}], []],
    ),
    ("f_uuid", pa.string(), [U1, U2]),
    ("f_time_uuid", pa.string(), [U2, U1]),
    ("f_uuid_list", pa.list_(pa.string()), [[U1, U2], []]),
    ("f_time_uuid_list", pa.list_(pa.string()), [[U2], [U1, U1]]),
    ("f_uuid_set", pa.list_(pa.string()), [[U1, U1], [U2]]),
    ("f_time_uuid_set", pa.list_(pa.string()), [[U2], [U1]]),
]
FEATURES = [name for name, _, _ in COLUMNS]
# Features Feast's remote online store client cannot send: their transport values are bytes or
# Python sets, which are not JSON (checked against the client's own conversion below).
UNSENDABLE = [
    "f_bytes",
    "f_bytes_list",
    "f_bytes_set",
    "f_string_set",
    "f_int32_set",
    "f_int64_set",
    "f_float64_set",
    "f_float32_set",
    "f_bool_set",
]
# Sent by the client, refused by `feast serve` itself ("MapList can only contain dictionaries,
# got <class 'str'>": the client sends each map as JSON text). quiver accepts them; the
# fixtures keep the client's body for them, without Feast's bytes.
REFUSED_BY_FEAST_SERVE = ["f_map_list", "f_struct_list"]


def write_source(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "driver_id": pa.array([1, 2, 3], pa.int64()),
        "event_timestamp": pa.array([EVENT] * 3, pa.timestamp("us", tz="UTC")),
    }
    for name, typ, values in COLUMNS:
        arrays[name] = pa.array(values + [None], typ)
    pq.write_table(pa.table(arrays), path)


def make_repo(root: Path, online_store: str) -> Path:
    repo = root / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {PROJECT}\nregistry: data/registry.db\nprovider: local\n"
        f"online_store:\n{online_store}\nentity_key_serialization_version: 3\n"
    )
    (repo / "definitions.py").write_text(
        f"UNSENDABLE = {UNSENDABLE + REFUSED_BY_FEAST_SERVE!r}\n" + DEFINITIONS
    )
    write_source(repo / "data" / "types.parquet")
    run([str(FEAST_CLI), "apply"], repo)
    return repo


def run(cmd: list, cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


def sqlite_rows(path: Path, view: str = "types") -> list:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        f'SELECT entity_key, feature_name, value, event_ts FROM "{PROJECT}_{view}" '
        "ORDER BY entity_key, feature_name"
    ).fetchall()
    conn.close()
    return [
        {"entity_key_hex": k.hex(), "feature": f, "value_hex": v.hex(), "event_ts": str(t)}
        for k, f, v, t in rows
    ]


def serve_json(base: str) -> dict:
    status, text = post_json(
        base + "/get-online-features",
        {
            "features": [f"types:{f}" for f in FEATURES],
            "entities": {"driver_id": [1, 2, 3]},
        },
    )
    assert status == 200, text
    body = strict_json_loads(text)
    names = body["metadata"]["feature_names"]
    return {
        name: {"values": r["values"], "statuses": r["statuses"]}
        for name, r in zip(names, body["results"])
        if name != "driver_id"
    }


def transport_body() -> dict:
    """The body Feast's remote online store sends to /write-to-online-store for the view's
    rows: the same values a materialize converts, through the client's own transport
    conversion (feast.infra.online_stores.remote)."""
    from feast import FeatureStore
    from feast.infra.online_stores.remote import RemoteOnlineStore
    from feast.type_map import python_values_to_proto_values

    store = FeatureStore(repo_path=str(REPO))
    view = store.get_feature_view("types")
    table = pq.read_table(REPO / "data" / "types.parquet")
    df = {"driver_id": [1, 2, 3]}
    unsendable = []
    for field in view.features:
        protos = python_values_to_proto_values(
            table.column(field.name).to_numpy(zero_copy_only=False), field.dtype.to_value_type()
        )
        column = [RemoteOnlineStore._proto_value_to_transport_value(p) for p in protos]
        try:
            # What `requests.post(json=...)` does with it: bytes and Python sets are not JSON,
            # and Feast's client fails on them before sending anything.
            json.dumps(column)
        except TypeError:
            unsendable.append(field.name)
            continue
        df[field.name] = column
    # The client's timestamp columns and body keys (RemoteOnlineStore.online_write_batch).
    df["event_timestamp"] = [EVENT.replace(tzinfo=None).isoformat()] * 3
    df["created"] = [None] * 3
    assert unsendable == UNSENDABLE, unsendable
    return {"feature_view_name": "sendable", "df": df, "allow_registry_cache": False}


def main() -> None:
    global REPO
    tmp = Path(tempfile.mkdtemp(prefix="quiver-types-"))
    try:
        # SQLite: materialize, serve, record.
        REPO = make_repo(tmp / "sqlite", "    type: sqlite\n    path: data/online.db")
        run([str(FEAST_CLI), "materialize", START, END], REPO)
        materialized_sqlite = sqlite_rows(REPO / "data" / "online.db")
        with feast_serve(REPO, tmp / "serve.log") as base:
            served = serve_json(base)
        body = transport_body()

        # The client's body, written by a real `feast serve` into a fresh SQLite store.
        pushed_repo = make_repo(tmp / "pushed", "    type: sqlite\n    path: data/online.db")
        with feast_serve(pushed_repo, tmp / "serve-push.log") as base:
            sent = dict(body, df={
                k: v for k, v in body["df"].items() if k not in REFUSED_BY_FEAST_SERVE
            })
            status, text = post_json(base + "/write-to-online-store", sent)
            assert status == 200, text
        pushed_sqlite = sqlite_rows(pushed_repo / "data" / "online.db", "sendable")

        # Redis: materialize, record every hash.
        with redis_server(tmp) as port:
            redis_repo = make_repo(
                tmp / "redis", f"    type: redis\n    connection_string: 127.0.0.1:{port}"
            )
            run([str(FEAST_CLI), "materialize", START, END], redis_repo)
            client = redis.Redis(port=port)
            hashes = {
                key.hex(): {f.hex(): v.hex() for f, v in sorted(client.hgetall(key).items())}
                for key in sorted(client.scan_iter())
            }

        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "data").mkdir(exist_ok=True)
        shutil.copy(REPO / "data" / "registry.db", OUT / "registry.db")
        shutil.copy(REPO / "data" / "types.parquet", OUT / "data" / "types.parquet")
        from feast import FeatureStore

        view = FeatureStore(repo_path=str(REPO)).get_feature_view("types")
        write_json(
            OUT / "expected.json",
            {
                "project": PROJECT,
                "view": "types",
                "window": [START + "Z", END + "Z"],
                "features": [
                    {"name": f.name, "value_type": f.dtype.to_value_type().name}
                    for f in view.features
                ],
                "materialized_sqlite": materialized_sqlite,
                "materialized_redis": hashes,
                "serve": served,
                "write_to_online_store_body": body,
                "unsendable_by_feast_client": UNSENDABLE,
                "refused_by_feast_serve": REFUSED_BY_FEAST_SERVE,
                "written_sqlite": pushed_sqlite,
            },
        )
        print(f"wrote {OUT}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


REPO = Path()

if __name__ == "__main__":
    main()
