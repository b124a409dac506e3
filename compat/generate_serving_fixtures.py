#!/usr/bin/env python3
"""Golden fixtures for `quiver serve`, produced by the REAL Feast (0.67.0).

How to run (from the repository root):

    compat/setup-venv.sh                      # creates target/feast-venv (idempotent)
    TZ=UTC target/feast-venv/bin/python compat/generate_serving_fixtures.py

(The script re-executes itself with TZ=UTC and PYTHONHASHSEED=0 when they are
not set, like compat/generate_fixtures.py.) Needs `redis-server` on PATH: a
private, non-persistent instance is started on a free localhost port and
stopped at the end. `feast serve` also runs on free localhost ports. No network
access beyond localhost is used.

What it does, in a temporary folder:

1. writes a Feast repo (project `serving`, the definitions in FEATURE_REPO_PY
   below) and its Parquet sources, twice: once with the SQLite online store and
   once with a Redis one;
2. runs the Feast CLI in each: `feast apply`, then
   `feast materialize 2024-01-01T00:00:00 2024-12-31T00:00:00`;
3. starts `feast serve` on each and POSTs every request of SERVE_CASES to
   `/get-online-features`.

Outputs, in sidecar/tests/fixtures/feast_serving/:

    feature_repo.py      the Python definitions given to `feast apply` (reference copy)
    registry.db          the registry Feast wrote (SQLite repo, after materialize;
                         the Redis repo's registry holds the same definitions: checked)
    online_store.db      Feast's SQLite online store after materialize
    redis_dump.json      every Redis key Feast wrote: key, TTL, hash fields and values
    responses.json       each request (and the exact text sent) with, per store, the
                         status code, Content-Type, parsed body and raw text

Every expected value comes from Feast: nothing in the outputs is written by
hand. The registry differs between runs (timestamps, uuids, temporary paths in
its `infra` section); online_store.db, redis_dump.json and responses.json are
identical between runs.
README.md in the same folder is written by hand from what Feast answered.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_helpers import reexec_with_stable_env  # noqa: E402

reexec_with_stable_env()

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple, Union  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import redis  # noqa: E402
from google.protobuf.message import Message  # noqa: E402

import feast  # noqa: E402
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto  # noqa: E402

from fixture_helpers import (  # noqa: E402
    FEAST_CLI,
    ROOT,
    feast_serve,
    http_post,
    redis_server,
    strict_json_loads,
    write_json,
)

FIXTURES = ROOT / "sidecar" / "tests" / "fixtures" / "feast_serving"
PROJECT = "serving"
MATERIALIZE_START = "2024-01-01T00:00:00"
MATERIALIZE_END = "2024-12-31T00:00:00"
MAX_ONLINE_STORE_BYTES = 1_000_000
UTC = timezone.utc

# ---------------------------------------------------------------------------
# The feature repo
# ---------------------------------------------------------------------------

FEATURE_REPO_PY = '''\
"""Feast definitions of the `serving` project: quiver's sidecar serving fixtures.

Written by compat/generate_serving_fixtures.py, which gives this file and small
Parquet sources (data/*.parquet, not kept) to `feast apply` and
`feast materialize`. Edit the script, not this copy.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    Json,
    String,
    UnixTimestamp,
)

NEVER_EXPIRES = timedelta(0)

# Entities. store_id is an Int32 key: a JSON 7 must be typed by the registry.

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
store = Entity(name="store", join_keys=["store_id"], value_type=ValueType.INT32)


def parquet_source(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=f"data/{name}.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )


driver_stats_source = parquet_source("driver_stats")

# Feature views

driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=NEVER_EXPIRES,
    online=True,
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="rating", dtype=Float64),
        Field(name="active", dtype=Bool),
        Field(name="name", dtype=String),
        Field(name="photo", dtype=Bytes),
        Field(name="last_trip", dtype=UnixTimestamp),
        Field(name="zones", dtype=Array(Int32)),
        Field(name="scores", dtype=Array(Float32)),
        Field(name="tags", dtype=Array(String)),
        Field(name="trip_ids", dtype=Array(Int64)),
        Field(name="weights", dtype=Array(Float64)),
        Field(name="flags", dtype=Array(Bool)),
        Field(name="visited", dtype=Array(UnixTimestamp)),
        Field(name="blobs", dtype=Array(Bytes)),
        Field(name="meta", dtype=Json),
    ],
    source=driver_stats_source,
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=NEVER_EXPIRES,
    online=True,
    schema=[
        Field(name="tier", dtype=String),
        Field(name="ltv", dtype=Float64),
        Field(name="vip", dtype=Bool),
    ],
    source=parquet_source("customer_profile"),
)

driver_customer = FeatureView(
    name="driver_customer",
    entities=[driver, customer],
    ttl=NEVER_EXPIRES,
    online=True,
    schema=[
        Field(name="rides", dtype=Int64),
        Field(name="avg_rating", dtype=Float64),
    ],
    source=parquet_source("driver_customer"),
)

store_stats = FeatureView(
    name="store_stats",
    entities=[store],
    ttl=NEVER_EXPIRES,
    online=True,
    schema=[Field(name="footfall", dtype=Int64)],
    source=parquet_source("store_stats"),
)

# Same source as driver_stats, but a one-hour TTL: every materialized row is old.
driver_stats_ttl = FeatureView(
    name="driver_stats_ttl",
    entities=[driver],
    ttl=timedelta(hours=1),
    online=True,
    schema=[Field(name="conv_rate", dtype=Float32)],
    source=driver_stats_source,
)

# Feature services

svc_plain = FeatureService(
    name="svc_plain",
    features=[driver_stats[["conv_rate", "acc_rate"]], customer_profile],
)

svc_alias = FeatureService(
    name="svc_alias",
    features=[
        driver_stats[["conv_rate"]].with_name("ds"),
        driver_customer,
        store_stats,
    ],
)
'''


def feature_store_yaml(kind: str, redis_port: Optional[int]) -> str:
    if kind == "sqlite":
        online_store = "  type: sqlite\n  path: data/online_store.db\n"
    else:
        online_store = f'  type: redis\n  connection_string: "127.0.0.1:{redis_port}"\n'
    return (
        f"project: {PROJECT}\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        f"online_store:\n{online_store}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


# ---------------------------------------------------------------------------
# Source data: Arrow tables with explicit types, so that nulls stay nulls and
# NaN stays NaN (pandas would mix them up). Several rows per entity; where two
# rows of an entity share the latest event time, the one with the later
# `created` comes FIRST in the file, so that picking by file order would give
# the other one.
# ---------------------------------------------------------------------------


def t(iso: str) -> datetime:
    """A UTC instant: 'MM-DDTHH:MM[:SS[.ffffff]]' in 2024, or a full ISO date and time."""
    if not iso[:4].isdigit():
        iso = f"2024-{iso}"
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


TS = pa.timestamp("us", tz="UTC")
TIME_COLUMNS = [("event_timestamp", TS), ("created", TS)]
NAN, INF = float("nan"), float("inf")

DRIVER_STATS_SCHEMA = pa.schema(
    [
        ("driver_id", pa.int64()),
        *TIME_COLUMNS,
        ("conv_rate", pa.float32()),
        ("acc_rate", pa.float32()),
        ("avg_daily_trips", pa.int64()),
        ("rating", pa.float64()),
        ("active", pa.bool_()),
        ("name", pa.string()),
        ("photo", pa.binary()),
        ("last_trip", TS),
        ("zones", pa.list_(pa.int32())),
        ("scores", pa.list_(pa.float32())),
        ("tags", pa.list_(pa.string())),
        ("trip_ids", pa.list_(pa.int64())),
        ("weights", pa.list_(pa.float64())),
        ("flags", pa.list_(pa.bool_())),
        ("visited", pa.list_(TS)),
        ("blobs", pa.list_(pa.binary())),
        ("meta", pa.string()),
    ]
)


def driver_row(driver_id: int, event: str, created: str, **features: Any) -> Dict[str, Any]:
    """A driver_stats row; features not given are null."""
    return {"driver_id": driver_id, "event_timestamp": t(event), "created": t(created), **features}


def full_driver_features(seed: int) -> Dict[str, Any]:
    """A driver_stats row with every feature set, values derived from `seed`."""
    return {
        "conv_rate": seed / 100 + 0.005,
        "acc_rate": 1 - seed / 1000,
        "avg_daily_trips": seed,
        "rating": 3.5 + seed / 100,
        "active": seed % 2 == 0,
        "name": f"driver-{seed}",
        "photo": bytes([seed % 256, 0, 255]),
        "last_trip": t("02-01T08:30") + timedelta(hours=seed),
        "zones": [seed, -seed, 7],
        "scores": [0.5, seed / 10],
        "tags": [f"t{seed}", "", "ünï"],
        "trip_ids": [seed * 1_000_000_007, -1],
        "weights": [0.1, 0.2 + seed],
        "flags": [True, False, seed % 2 == 1],
        "visited": [t("01-15T00:00"), t("03-01T12:00") + timedelta(seconds=seed)],
        "blobs": [b"", bytes([seed % 256]), b"\x00\xff"],
        "meta": json.dumps({"seed": seed, "nested": {"ok": True, "list": [1, None]}}),
    }


DRIVER_STATS_ROWS = [
    # 1001: the latest event time has two rows; created 12:30 must win over 12:10.
    driver_row(1001, "03-01T10:00", "03-01T10:05", **full_driver_features(11)),
    driver_row(1001, "06-01T12:00", "06-01T12:30", **full_driver_features(12)),
    driver_row(1001, "06-01T12:00", "06-01T12:10", **full_driver_features(13)),
    # ... and a newer row after the materialization window, never materialized.
    driver_row(1001, "2025-01-15T00:00", "2025-01-15T00:00", **full_driver_features(14)),
    # 1002: the latest row has NaN, null and empty values; nothing is taken from older rows.
    driver_row(1002, "02-01T09:00", "02-01T09:00", **full_driver_features(21)),
    driver_row(
        1002,
        "07-04T18:45:30.250000",
        "07-04T18:46",
        **{
            **full_driver_features(22),
            "rating": NAN,
            "name": None,
            "zones": None,
            "scores": [NAN, INF, -INF, 0.8057102],
            "tags": [],
            "photo": b"",
            "meta": None,
        },
    ),
    # 1003: the latest row has every feature null.
    driver_row(1003, "01-20T00:00", "01-20T00:00", **full_driver_features(31)),
    driver_row(1003, "08-08T08:08", "08-08T08:08"),
    # 1004: a null rating (not NaN), extreme numbers. avg_daily_trips stays below 2**53:
    # Feast reads an int64 column holding a null as float64 (2**63 - 1 fails to materialize).
    driver_row(
        1004,
        "05-05T05:05:05",
        "05-05T05:05:05",
        **{
            **full_driver_features(41),
            "rating": None,
            "conv_rate": 0.1,
            "avg_daily_trips": 2**40 + 1,
            "trip_ids": [-(2**63), 2**53 + 1],
            "weights": [1e308, 5e-324, -0.0],
            "zones": [2**31 - 1, -(2**31)],
        },
    ),
    # 1005: a single row; its `created` is before the window, only event times are filtered.
    driver_row(1005, "12-30T23:59:59", "2023-12-31T00:00", **full_driver_features(51)),
]

CUSTOMER_PROFILE_SCHEMA = pa.schema(
    [("customer_id", pa.string()), *TIME_COLUMNS,
     ("tier", pa.string()), ("ltv", pa.float64()), ("vip", pa.bool_())]
)
CUSTOMER_PROFILE_ROWS = [
    {"customer_id": "c1", "event_timestamp": t("01-10T10:00"), "created": t("01-10T10:00"),
     "tier": "bronze", "ltv": 10.0, "vip": False},
    {"customer_id": "c1", "event_timestamp": t("04-10T10:00"), "created": t("04-10T10:00"),
     "tier": "gold", "ltv": 1234.5, "vip": True},
    {"customer_id": "c2", "event_timestamp": t("04-11T11:00"), "created": t("04-11T11:30"),
     "tier": "silver", "ltv": 99.99, "vip": False},
    {"customer_id": "c2", "event_timestamp": t("04-11T11:00"), "created": t("04-11T11:05"),
     "tier": "bronze", "ltv": 1.0, "vip": True},
    {"customer_id": "c3", "event_timestamp": t("09-09T09:09"), "created": t("09-09T09:09"),
     "tier": None, "ltv": 0.0, "vip": None},
]

DRIVER_CUSTOMER_SCHEMA = pa.schema(
    [("driver_id", pa.int64()), ("customer_id", pa.string()), *TIME_COLUMNS,
     ("rides", pa.int64()), ("avg_rating", pa.float64())]
)
DRIVER_CUSTOMER_ROWS = [
    {"driver_id": 1001, "customer_id": "c1", "event_timestamp": t("02-02T02:00"),
     "created": t("02-02T02:00"), "rides": 1, "avg_rating": 5.0},
    {"driver_id": 1001, "customer_id": "c1", "event_timestamp": t("03-03T03:00"),
     "created": t("03-03T03:00"), "rides": 2, "avg_rating": 4.5},
    {"driver_id": 1001, "customer_id": "c2", "event_timestamp": t("03-03T03:00"),
     "created": t("03-03T03:00"), "rides": 7, "avg_rating": 3.25},
    {"driver_id": 1002, "customer_id": "c1", "event_timestamp": t("06-06T06:00"),
     "created": t("06-06T06:00"), "rides": 12, "avg_rating": None},
    {"driver_id": 1003, "customer_id": "c3", "event_timestamp": t("10-10T10:00"),
     "created": t("10-10T10:00"), "rides": 0, "avg_rating": 1.0},
]

STORE_STATS_SCHEMA = pa.schema(
    [("store_id", pa.int32()), *TIME_COLUMNS, ("footfall", pa.int64())]
)
STORE_STATS_ROWS = [
    {"store_id": 1, "event_timestamp": t("01-01T12:00"), "created": t("01-01T12:00"),
     "footfall": 100},
    {"store_id": 1, "event_timestamp": t("11-01T12:00"), "created": t("11-01T12:00"),
     "footfall": 150},
    {"store_id": 2, "event_timestamp": t("11-02T12:00"), "created": t("11-02T12:00"),
     "footfall": 0},
    {"store_id": 3, "event_timestamp": t("11-03T12:00"), "created": t("11-03T12:00"),
     "footfall": -5},
]

SOURCES = {
    "driver_stats": (DRIVER_STATS_SCHEMA, DRIVER_STATS_ROWS),
    "customer_profile": (CUSTOMER_PROFILE_SCHEMA, CUSTOMER_PROFILE_ROWS),
    "driver_customer": (DRIVER_CUSTOMER_SCHEMA, DRIVER_CUSTOMER_ROWS),
    "store_stats": (STORE_STATS_SCHEMA, STORE_STATS_ROWS),
}


def write_sources(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, (schema, rows) in SOURCES.items():
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, data_dir / f"{name}.parquet")


# ---------------------------------------------------------------------------
# Building the two repos with the Feast CLI
# ---------------------------------------------------------------------------


def feast_cli(repo: Path, *args: str) -> None:
    print(f"[{repo.name}] feast {' '.join(args)}", flush=True)
    subprocess.run([str(FEAST_CLI), *args], cwd=repo, check=True)


def build_repo(repo: Path, kind: str, redis_port: Optional[int]) -> None:
    repo.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(feature_store_yaml(kind, redis_port))
    (repo / "feature_repo.py").write_text(FEATURE_REPO_PY)
    write_sources(repo / "data")
    feast_cli(repo, "apply")
    feast_cli(repo, "materialize", MATERIALIZE_START, MATERIALIZE_END)


def clear_timestamps(message: Message) -> Message:
    """Clear every google.protobuf.Timestamp inside `message` (in place) and return it."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.full_name == "google.protobuf.Timestamp":
            message.ClearField(field.name)
        elif isinstance(value, Message):
            clear_timestamps(value)
        else:  # a repeated field or a map
            items = value.values() if field.message_type.GetOptions().map_entry else value
            for item in items:
                if isinstance(item, Message):
                    clear_timestamps(item)
    return message


def registry_definitions(registry_db: Path) -> Dict[str, List[Tuple[str, str]]]:
    """The object specs of a registry file, by kind and name, without their timestamps."""
    registry = RegistryProto()
    registry.ParseFromString(registry_db.read_bytes())
    definitions = {}
    for kind in [
        "projects",
        "entities",
        "data_sources",
        "feature_views",
        "stream_feature_views",
        "on_demand_feature_views",
        "feature_services",
    ]:
        specs = [
            obj.spec if "spec" in obj.DESCRIPTOR.fields_by_name else obj  # data sources
            for obj in getattr(registry, kind)
        ]
        definitions[kind] = sorted(
            (spec.name, str(clear_timestamps(spec))) for spec in specs
        )
    return definitions


def redis_dump(port: int) -> List[Dict[str, Any]]:
    client = redis.Redis(host="127.0.0.1", port=port)
    dump = []
    for key in sorted(client.scan_iter(count=1000)):
        fields = client.hgetall(key)
        dump.append(
            {
                "key_hex": key.hex(),
                "ttl": client.ttl(key),
                "fields": [
                    {"field_hex": field.hex(), "value_hex": fields[field].hex()}
                    for field in sorted(fields)
                ],
            }
        )
    return dump


# ---------------------------------------------------------------------------
# Requests to `feast serve`. A request given as a string is sent as that raw
# body (it is not JSON); the others are sent as JSON, keys in the order written
# here (responses.json sorts object keys, so it also keeps the exact body sent
# as "request_text").
# ---------------------------------------------------------------------------

DRIVER_STATS_FEATURES = [
    "conv_rate", "acc_rate", "avg_daily_trips", "rating", "active", "name", "photo",
    "last_trip", "zones", "scores", "tags", "trip_ids", "weights", "flags", "visited",
    "blobs", "meta",
]
ALL_DRIVER_STATS = [f"driver_stats:{name}" for name in DRIVER_STATS_FEATURES]
NEVER_WRITTEN_DRIVER = 9999

Request = Union[Dict[str, Any], str]

SERVE_CASES: List[Tuple[str, Request]] = [
    (
        "driver_stats_all_features",
        {
            "features": ALL_DRIVER_STATS,
            "entities": {"driver_id": [1001, 1002, 1003, NEVER_WRITTEN_DRIVER]},
        },
    ),
    (
        "driver_stats_all_features_full_names",
        {
            "features": ALL_DRIVER_STATS,
            "entities": {"driver_id": [1001, 1002, 1003, NEVER_WRITTEN_DRIVER]},
            "full_feature_names": True,
        },
    ),
    (
        "driver_stats_other_drivers",
        {"features": ALL_DRIVER_STATS, "entities": {"driver_id": [1004, 1005]}},
    ),
    (
        "several_views_composite_key",
        {
            "features": [
                "driver_stats:conv_rate",
                "customer_profile:tier",
                "driver_customer:rides",
            ],
            "entities": {"driver_id": [1001, 1002, 1003], "customer_id": ["c1", "c1", "c2"]},
        },
    ),
    (
        "duplicate_entity_rows",
        {
            "features": ["driver_stats:conv_rate", "driver_stats:name"],
            "entities": {"driver_id": [1001, 1001, 1002, 1001]},
        },
    ),
    (
        "int32_entity",
        {"features": ["store_stats:footfall"], "entities": {"store_id": [1, 2, 99]}},
    ),
    (
        "feature_service_plain",
        {
            "feature_service": "svc_plain",
            "entities": {"driver_id": [1001, 1002, NEVER_WRITTEN_DRIVER],
                         "customer_id": ["c1", "c2", "c3"]},
        },
    ),
    (
        "feature_service_alias",
        {
            "feature_service": "svc_alias",
            "entities": {
                "driver_id": [1001, 1001, 1003],
                "customer_id": ["c1", "c2", "c1"],
                "store_id": [1, 3, 99],
            },
        },
    ),
    (
        "feature_service_alias_full_names",
        {
            "feature_service": "svc_alias",
            "entities": {
                "driver_id": [1001, 1001, 1003],
                "customer_id": ["c1", "c2", "c1"],
                "store_id": [1, 3, 99],
            },
            "full_feature_names": True,
        },
    ),
    (
        "ttl_view",
        {"features": ["driver_stats_ttl:conv_rate"], "entities": {"driver_id": [1001, 1002]}},
    ),
    (
        "error_unknown_view",
        {"features": ["no_such_view:conv_rate"], "entities": {"driver_id": [1001]}},
    ),
    (
        "error_unknown_feature",
        {"features": ["driver_stats:no_such_feature"], "entities": {"driver_id": [1001]}},
    ),
    (
        "error_unknown_feature_service",
        {"feature_service": "no_such_service", "entities": {"driver_id": [1001]}},
    ),
    (
        "error_missing_join_key",
        {"features": ["driver_stats:conv_rate"], "entities": {"customer_id": ["c1"]}},
    ),
    (
        "error_wrong_entity_type",
        {"features": ["driver_stats:conv_rate"], "entities": {"driver_id": ["abc"]}},
    ),
    (
        "error_ragged_entity_columns",
        {
            "features": ["driver_customer:rides"],
            "entities": {"driver_id": [1001, 1002], "customer_id": ["c1", "c2", "c3"]},
        },
    ),
    ("error_malformed_json", '{"features": ['),
    ("error_empty_features", {"features": [], "entities": {"driver_id": [1001]}}),
]


def request_bytes(request: Request) -> bytes:
    if isinstance(request, str):
        return request.encode("utf-8")
    return json.dumps(request).encode("utf-8")


def serve_all(repo: Path, kind: str, log_dir: Path) -> Dict[str, Dict[str, Any]]:
    """Answers of `feast serve` on `repo` to every case, by case name."""
    answers = {}
    with feast_serve(repo, log_dir / f"feast-serve-{kind}.log") as base:
        for name, request in SERVE_CASES:
            status, content_type, text = http_post(
                base + "/get-online-features", request_bytes(request)
            )
            try:
                body = strict_json_loads(text)
            except ValueError:
                body = text
            answers[name] = {
                "status_code": status,
                "content_type": content_type,
                "body": body,
                "text": text,
            }
    return answers


def print_summary(responses: List[Dict[str, Any]]) -> None:
    """One line per case and store: the status code and the statuses or error."""
    for case in responses:
        for kind in ("sqlite", "redis"):
            answer = case[kind]
            body = answer["body"]
            if answer["status_code"] == 200:
                detail = " ".join(
                    f"{name}={','.join(result['statuses'])}"
                    for name, result in zip(body["metadata"]["feature_names"], body["results"])
                )
            else:
                detail = json.dumps(body)[:200]
            print(f"{case['name']:40} {kind:6} {answer['status_code']} {detail}")


# ---------------------------------------------------------------------------


def main() -> int:
    if feast.__version__ != "0.67.0":
        print(f"warning: expected feast 0.67.0, running {feast.__version__}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="quiver-feast-serving-") as tmp:
        workdir = Path(tmp)
        with redis_server(workdir) as redis_port:
            sqlite_repo = workdir / "sqlite"
            redis_repo = workdir / "redis"
            build_repo(sqlite_repo, "sqlite", None)
            build_repo(redis_repo, "redis", redis_port)

            sqlite_registry = sqlite_repo / "data" / "registry.db"
            if registry_definitions(sqlite_registry) != registry_definitions(
                redis_repo / "data" / "registry.db"
            ):
                raise SystemExit("the SQLite and Redis repos' registries define different objects")

            answers = {
                "sqlite": serve_all(sqlite_repo, "sqlite", workdir),
                "redis": serve_all(redis_repo, "redis", workdir),
            }
            dump = redis_dump(redis_port)

        online_store = sqlite_repo / "data" / "online_store.db"
        size = online_store.stat().st_size
        if size >= MAX_ONLINE_STORE_BYTES:
            raise SystemExit(f"{online_store} is {size} bytes, expected < 1 MB")

        FIXTURES.mkdir(parents=True, exist_ok=True)
        (FIXTURES / "feature_repo.py").write_text(FEATURE_REPO_PY)
        print(f"wrote {(FIXTURES / 'feature_repo.py').relative_to(ROOT)}")
        for source, target in [(sqlite_registry, "registry.db"), (online_store, "online_store.db")]:
            shutil.copyfile(source, FIXTURES / target)
            print(f"wrote {(FIXTURES / target).relative_to(ROOT)}")
        write_json(FIXTURES / "redis_dump.json", dump)

    responses = [
        {
            "name": name,
            "request": request,
            "request_text": request_bytes(request).decode("utf-8"),
            **{kind: answers[kind][name] for kind in answers},
        }
        for name, request in SERVE_CASES
    ]
    write_json(FIXTURES / "responses.json", responses)
    print_summary(responses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
