#!/usr/bin/env python3
"""Generate quiver's golden Feast fixtures with the REAL Feast (0.67.0).

How to run (from the repository root):

    compat/setup-venv.sh                      # creates target/feast-venv (idempotent)
    target/feast-venv/bin/python compat/generate_fixtures.py

Needs `redis-server` on PATH (a private instance is started on a free localhost
port and stopped at the end) and free localhost ports for `feast serve`. No
network access beyond localhost is used. The script re-executes itself with
TZ=UTC and PYTHONHASHSEED=0 so that outputs are stable (Feast's SQLite store
converts naive datetimes with the machine's local zone, and Feast builds sets
through Python sets, whose string order depends on the hash seed). Outputs are
identical between runs except for the registry files (timestamps, uuid, temp
paths) and the entry order inside serialized Map/Struct values and their JSON
objects: protobuf leaves map order unspecified and Python's protobuf varies it
from process to process.

Every expected value below is produced by Feast's own code: its key
serialization, its Redis and SQLite online stores (read back from the stores),
its type mapping, its registry, and the JSON of a real `feast serve`. Nothing
is computed by hand here; the script only chooses inputs and records outputs.

Outputs (relative to the repository root):

    core/tests/fixtures/feast/entity_keys.json      serialize_entity_key v3 + Redis key
    core/tests/fixtures/feast/field_hashes.json     Redis hash field names (murmur3, _ts:)
    core/tests/fixtures/feast/timestamps.json       `_ts:{view}` Timestamp bytes
    core/tests/fixtures/feast/values.json           Value bytes and their `feast serve` JSON
    core/tests/fixtures/feast/serve_responses.json  requests/responses of `feast serve`
    core/tests/fixtures/feast/sqlite_rows.json      rows of Feast's SQLite online store
    core/tests/fixtures/feast/redis_hashes.json     hashes of Feast's Redis online store
    registry-sync/tests/fixtures/feast_quickstart_registry.db
    registry-sync/tests/fixtures/feast_quickstart_registry.txt
    registry-sync/tests/fixtures/feast_quickstart_expected.json
    registry-sync/tests/fixtures/feast_template_registry.db     `feast init` + `feast apply`
    registry-sync/tests/fixtures/feast_template_expected.json   (its label view, Map/Struct)

`--template-only` writes just the last two.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_helpers import reexec_with_stable_env  # noqa: E402

reexec_with_stable_env()

import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

import pandas as pd  # noqa: E402
import redis  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

import feast  # noqa: E402
from feast import (  # noqa: E402
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    RepoConfig,
    ValueType,
)
from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: E402
from feast.infra.online_stores.helpers import _mmh3, _redis_key  # noqa: E402
from feast.infra.online_stores.redis import (  # noqa: E402
    RedisOnlineStore,
    RedisOnlineStoreConfig,
)
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto  # noqa: E402
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto  # noqa: E402
from feast.protos.feast.types.Value_pb2 import Value as ValueProto  # noqa: E402
from feast.type_map import python_values_to_proto_values  # noqa: E402
from feast.types import (  # noqa: E402
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    Json,
    Map,
    Set,
    String,
    Struct,
    UnixTimestamp,
)

from fixture_helpers import (  # noqa: E402
    COMPAT_DIR,
    FEAST_CLI,
    ROOT,
    b64,
    feast_serve,
    post_json,
    redis_server,
    strict_json_loads,
    write_json,
)
import feast_summary  # noqa: E402
from quickstart_data import write_quickstart_parquet  # noqa: E402

CORE_FIXTURES = ROOT / "core" / "tests" / "fixtures" / "feast"
REGISTRY_FIXTURES = ROOT / "registry-sync" / "tests" / "fixtures"
FEAST_REPO = COMPAT_DIR / "feast_repo"
SERIALIZATION_VERSION = 3
UTC = timezone.utc


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


# ---------------------------------------------------------------------------
# (a) Entity keys
# ---------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# (project, [(join_key, value type, python value), ...]) with join keys in the
# order a caller would give them (Feast sorts them itself).
ENTITY_KEY_CASES: List[Tuple[str, List[Tuple[str, str, Any]]]] = [
    ("demo", [("driver_id", "INT64", 1001)]),
    ("quickstart", [("driver_id", "INT64", 0)]),
    ("quickstart", [("driver_id", "INT64", -1)]),
    ("quickstart", [("driver_id", "INT64", INT64_MIN)]),
    ("quickstart", [("driver_id", "INT64", INT64_MAX)]),
    ("quickstart", [("driver_id", "INT64", 2**53 + 1)]),
    ("quickstart", [("zone_id", "INT32", 0)]),
    ("quickstart", [("zone_id", "INT32", 42)]),
    ("quickstart", [("zone_id", "INT32", -1)]),
    ("quickstart", [("zone_id", "INT32", INT32_MIN)]),
    ("quickstart", [("zone_id", "INT32", INT32_MAX)]),
    ("quickstart", [("customer_id", "STRING", "")]),
    ("quickstart", [("customer_id", "STRING", "c_42")]),
    ("quickstart", [("customer_id", "STRING", "héllo wörld")]),
    ("quickstart", [("customer_id", "STRING", "日本語のキー")]),
    ("quickstart", [("customer_id", "STRING", "taxi 🚕")]),
    ("quickstart", [("customer_id", "STRING", "{tag}in-braces")]),
    ("quickstart", [("customer_id", "STRING", "nul\x00inside")]),
    ("quickstart", [("clé_unicode", "STRING", "value")]),
    ("quickstart", [("payload", "BYTES", b"")]),
    ("quickstart", [("payload", "BYTES", b"\x00\x00\x01\x00")]),
    ("quickstart", [("payload", "BYTES", b"\xff\xfe\x00\x80 not utf8")]),
    ("quickstart", [("signup_ts", "UNIX_TIMESTAMP", 0)]),
    ("quickstart", [("signup_ts", "UNIX_TIMESTAMP", 1714564800)]),
    ("quickstart", [("signup_ts", "UNIX_TIMESTAMP", -86400)]),
    ("a", [("driver_id", "INT64", 7)]),
    (
        "quickstart",
        [("driver_id", "INT64", 1001), ("customer_id", "STRING", "c_42")],
    ),
    (
        "quickstart",
        [("customer_id", "STRING", "c_42"), ("driver_id", "INT64", 1001)],
    ),
    (
        "quickstart",
        [("zone_id", "INT32", -7), ("customer_id", "STRING", "ü"), ("app", "BYTES", b"\x00\xff")],
    ),
    (
        "quickstart",
        [
            ("user_id", "INT64", INT64_MAX),
            ("user", "STRING", ""),
            ("Zeta", "UNIX_TIMESTAMP", 1714564800),
        ],
    ),
]

_PROTO_FIELD_BY_TYPE = {
    "INT64": "int64_val",
    "INT32": "int32_val",
    "STRING": "string_val",
    "BYTES": "bytes_val",
    "UNIX_TIMESTAMP": "unix_timestamp_val",
}


def entity_key_proto(join_keys: List[Tuple[str, str, Any]]) -> EntityKeyProto:
    return EntityKeyProto(
        join_keys=[name for name, _, _ in join_keys],
        entity_values=[
            ValueProto(**{_PROTO_FIELD_BY_TYPE[vtype]: value})
            for _, vtype, value in join_keys
        ],
    )


def json_entity_value(vtype: str, value: Any) -> Any:
    return b64(value) if vtype == "BYTES" else value


def entity_key_fixtures() -> List[Dict[str, Any]]:
    cases = []
    for project, join_keys in ENTITY_KEY_CASES:
        key = entity_key_proto(join_keys)
        cases.append(
            {
                "project": project,
                "join_keys": [name for name, _, _ in join_keys],
                "values": [
                    {"type": vtype, "value": json_entity_value(vtype, value)}
                    for _, vtype, value in join_keys
                ],
                "serialized_hex": serialize_entity_key(
                    key, entity_key_serialization_version=SERIALIZATION_VERSION
                ).hex(),
                "redis_key_hex": _redis_key(
                    project, key, entity_key_serialization_version=SERIALIZATION_VERSION
                ).hex(),
            }
        )
    return cases


# ---------------------------------------------------------------------------
# (b), (c) Redis field names and `_ts:` timestamps, read back from Redis after
# writes through Feast's RedisOnlineStore.online_write_batch
# ---------------------------------------------------------------------------

FIELD_HASH_CASES: List[Tuple[str, str]] = [
    ("driver_hourly_stats", "conv_rate"),
    ("driver_hourly_stats", "acc_rate"),
    ("driver_hourly_stats", "avg_daily_trips"),
    ("driver_hourly_stats", "recent_zones"),
    ("driver_hourly_stats_fresh", "conv_rate"),
    ("driver_hourly_stats_fresh", "acc_rate"),
    ("customer_profile", "tier"),
    ("customer_profile", "lifetime_value"),
    ("customer_profile", "is_vip"),
    ("customer_profile", "signup_ts"),
    ("driver_customer_affinity", "rides_together"),
    ("driver_customer_affinity", "avg_rating"),
    ("driver_hourly_stats", ""),
    ("", "conv_rate"),
    ("", ""),
    ("vue_été", "caractéristique"),
    ("特徴ビュー", "特徴"),
    ("emoji_view", "🚕🚕"),
    ("view:with:colons", "feature:x"),
    ("v", "f" * 257),
    ("long_" + "v" * 300, "long_" + "f" * 300),
]

TIMESTAMP_CASES: List[str] = [
    "1970-01-01T00:00:00+00:00",
    "2024-05-01T12:00:00+00:00",
    "2024-05-01T12:00:00.123456+00:00",
    "2024-05-01T12:00:00.000001+00:00",
    "2024-05-01T12:00:00.5+00:00",
    "2024-05-01T14:00:00.250000+02:00",
    "2024-05-01T12:00:00",
    "1969-12-31T23:59:59.500000+00:00",
    "1900-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59.999999+00:00",
]

PROBE_ENTITY = Entity(name="probe", join_keys=["probe_id"], value_type=ValueType.INT64)
PROBE_SOURCE = FileSource(name="probe_source", path="probe.parquet", timestamp_field="ts")


def redis_repo_config(port: int, project: str, workdir: Path) -> RepoConfig:
    return RepoConfig(
        project=project,
        provider="local",
        registry=str(workdir / "probe_registry.db"),
        online_store=RedisOnlineStoreConfig(connection_string=f"127.0.0.1:{port}"),
        entity_key_serialization_version=SERIALIZATION_VERSION,
    )


def probe_view(name: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[PROBE_ENTITY],
        schema=[Field(name="x", dtype=Int64)],
        source=PROBE_SOURCE,
    )


def probe_key(i: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["probe_id"], entity_values=[ValueProto(int64_val=i)])


def redis_probe_fixtures(port: int, workdir: Path) -> Tuple[List[Dict], List[Dict]]:
    """Write single-feature rows through Feast's Redis store and read the hashes back."""
    config = redis_repo_config(port, "probe", workdir)
    store = RedisOnlineStore()
    client = redis.Redis(host="127.0.0.1", port=port)
    client.flushall()
    value = ValueProto(int64_val=1)

    written_at = utc("2024-05-01T12:00:00+00:00")

    field_hashes: List[Dict[str, Any]] = []
    ts_views_seen = set()
    for i, (view, feature) in enumerate(FIELD_HASH_CASES, start=1):
        key = probe_key(i)
        store.online_write_batch(
            config, probe_view(view), [(key, {feature: value}, written_at, None)], None
        )
        fields = client.hgetall(_redis_key("probe", key))
        ts_field = f"_ts:{view}".encode("utf-8")
        assert ts_field in fields, f"no {ts_field!r} field written for {view!r}"
        (feature_field,) = [f for f in fields if f != ts_field]
        # Cross-check against the helper the store uses for reads.
        assert feature_field == _mmh3(f"{view}:{feature}")
        field_hashes.append(
            {
                "kind": "feature",
                "view": view,
                "feature": feature,
                "hashed_string": f"{view}:{feature}",
                "field_hex": feature_field.hex(),
            }
        )
        if view not in ts_views_seen:
            ts_views_seen.add(view)
            field_hashes.append(
                {
                    "kind": "ts",
                    "view": view,
                    "field": ts_field.decode("utf-8"),
                    "field_hex": ts_field.hex(),
                }
            )

    timestamps: List[Dict[str, Any]] = []
    view = probe_view("ts_probe")
    for i, iso in enumerate(TIMESTAMP_CASES, start=1):
        key = probe_key(10_000 + i)
        when = datetime.fromisoformat(iso)
        store.online_write_batch(config, view, [(key, {"x": value}, when, None)], None)
        raw = client.hget(_redis_key("probe", key), "_ts:ts_probe")
        assert raw is not None, f"Feast did not write a timestamp for {iso}"
        parsed = Timestamp()
        parsed.ParseFromString(raw)
        timestamps.append(
            {
                "iso": iso,
                "naive_input": when.tzinfo is None,
                "seconds": parsed.seconds,
                "nanos": parsed.nanos,
                "proto_hex": raw.hex(),
            }
        )
    client.flushall()
    return field_hashes, timestamps


# ---------------------------------------------------------------------------
# (d)-(g) A repo with one feature view per value type, written through
# FeatureStore.write_to_online_store into SQLite and Redis, then served by the
# real `feast serve`. The repo is applied with FeatureStore.apply (what `feast
# apply` calls after importing the repo's Python files), so the value types
# below need no Python source rendering.
# ---------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
F32_NOT_REPRESENTABLE = 0.8057102  # widens to 0.8057101964950562 as f32


def ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# (slug, Feast dtype, values). Feature `slug` of view `types_{slug}`; value i is
# written for driver_id = i + 1. A list column whose first value is None is
# fine; integer columns never hold None (pandas would turn them into floats).
TYPE_CASES: List[Tuple[str, Any, List[Any]]] = [
    ("bytes", Bytes, [b"hello", b"", b"\x00\xff\xfe\x80", None]),
    ("string", String, ["hello", "", "héllo 🚕 日本", 'line\nbreak "quoted" \\', None]),
    ("int32", Int32, [0, 7, -1, INT32_MIN, INT32_MAX]),
    ("int64", Int64, [0, -1, 2**53 + 1, INT64_MIN, INT64_MAX]),
    (
        "float64",
        Float64,
        [0.1, 0.30000000000000004, -0.0, 1e308, 5e-324, INF, -INF, NAN, 1.0],
    ),
    (
        "float32",
        Float32,
        [F32_NOT_REPRESENTABLE, 0.1, 1.0, -0.0, 3.4028234663852886e38, 1e-45, INF, -INF, NAN],
    ),
    ("bool", Bool, [True, False, None]),
    (
        "unix_timestamp",
        UnixTimestamp,
        [
            ts("2024-05-01T12:00:00+00:00"),
            ts("2024-05-01T12:00:00.999999+00:00"),
            ts("1970-01-01T00:00:00+00:00"),
            ts("1969-12-31T23:59:59.500000+00:00"),
            ts("2024-05-01T14:00:00+02:00"),
        ],
    ),
    ("array_bytes", Array(Bytes), [[b"a", b"", b"\x00\xff"], [], None]),
    ("array_string", Array(String), [["a", "", "é 🚕"], [], None]),
    ("array_int32", Array(Int32), [[1, -2, INT32_MAX, INT32_MIN], [], None]),
    ("array_int64", Array(Int64), [[2**53 + 1, -1, INT64_MAX, INT64_MIN], [], None]),
    ("array_float64", Array(Float64), [[0.1, -0.0, NAN, INF, -INF], [], None]),
    ("array_float32", Array(Float32), [[F32_NOT_REPRESENTABLE, -0.0, NAN, INF, -INF], [], None]),
    ("array_bool", Array(Bool), [[True, False, True], [], None]),
    (
        "array_unix_timestamp",
        Array(UnixTimestamp),
        [[ts("2024-05-01T12:00:00+00:00"), ts("1970-01-01T00:00:00+00:00")], [], None],
    ),
    ("set_bytes", Set(Bytes), [[b"a", b"\x00\xff", b"a"], []]),
    ("set_string", Set(String), [["b", "a", "b"], [], None]),
    ("set_int32", Set(Int32), [[3, 1, 3], []]),
    ("set_int64", Set(Int64), [[3, 1, 2, 3], [], None]),
    ("set_float64", Set(Float64), [[0.5, 0.5, NAN], []]),
    ("set_float32", Set(Float32), [[F32_NOT_REPRESENTABLE, 1.0], []]),
    ("set_bool", Set(Bool), [[True, False, True], []]),
    (
        "set_unix_timestamp",
        Set(UnixTimestamp),
        [[ts("2024-05-01T12:00:00+00:00"), ts("2024-05-01T12:00:00+00:00")], []],
    ),
    (
        "map",
        Map,
        [
            {"int": 1, "float": 0.5, "str": "x", "bool": True, "none": None, "list": [1, 2]},
            {"nested": {"a": "b"}},
            {},
            None,
        ],
    ),
    (
        "array_map",
        Array(Map),
        [[{"a": 1}, {"b": "two"}], [], None],
    ),
    (
        "json",
        Json,
        ['{"a": [1, 2, {"b": null}], "c": "d"}', "[1, 2.5, true]", '"just a string"', "3", None],
    ),
    ("array_json", Array(Json), [['{"a": 1}', "[true]", "null"], [], None]),
    (
        "struct",
        Struct({"name": String, "age": Int32}),
        [{"name": "Ada", "age": 36}, {"name": "", "age": 0}, None],
    ),
    (
        "array_struct",
        Array(Struct({"name": String, "age": Int32})),
        [[{"name": "Ada", "age": 36}, {"name": "Bob", "age": 7}], [], None],
    ),
]

# pandas/Arrow turn a column of dicts into one struct type: every row gets every
# key (missing ones null) and ints become doubles, and a column of lists of dicts
# reaches Feast as ndarrays, which its MAP_LIST conversion rejects. These values
# are written with the provider's online_write_batch, from the protos of Feast's
# python type mapping, instead of write_to_online_store (see values.json
# "written_via").
DIRECT_WRITE = {"map", "array_map"}

TYPES_PROJECT = "fixtures"
DRIVER = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.INT64,
    description="driver",
)
CUSTOMER = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="customer",
)
NEVER_WRITTEN_DRIVER = 999_999
BASE_EVENT_TIME = utc("2024-05-01T12:00:00+00:00")


def event_time(row: int) -> datetime:
    """Even rows get a whole-second event time, odd rows a fractional one."""
    t = BASE_EVENT_TIME + timedelta(hours=row)
    return t + timedelta(microseconds=123456) if row % 2 else t


def types_view(slug: str, dtype: Any) -> FeatureView:
    return FeatureView(
        name=f"types_{slug}",
        entities=[DRIVER],
        ttl=timedelta(0),
        schema=[Field(name=slug, dtype=dtype)],
        source=FileSource(
            name=f"types_{slug}_source",
            path=f"data/types_{slug}.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )


AFFINITY_VIEW = FeatureView(
    name="affinity",
    entities=[DRIVER, CUSTOMER],
    ttl=timedelta(hours=1),
    schema=[Field(name="rides", dtype=Int64), Field(name="note", dtype=String)],
    source=FileSource(
        name="affinity_source",
        path="data/affinity.parquet",
        timestamp_field="event_timestamp",
    ),
)
AFFINITY_ROWS = [
    {"driver_id": 1, "customer_id": "c1", "rides": 3, "note": "first"},
    {"driver_id": 1, "customer_id": "c2", "rides": 5, "note": "ünïcode"},
    {"driver_id": 2, "customer_id": "c1", "rides": 8, "note": ""},
]


def types_feature_service(views: Dict[str, FeatureView]) -> FeatureService:
    return FeatureService(
        name="types_service",
        description="projections with and without an alias",
        features=[
            views["float32"],
            views["string"][["string"]].with_name("renamed"),
            views["int64"],
        ],
    )


def types_dataframe(slug: str, values: List[Any]) -> pd.DataFrame:
    rows = range(len(values))
    return pd.DataFrame(
        {
            "driver_id": pd.Series([r + 1 for r in rows], dtype="int64"),
            "event_timestamp": [event_time(r) for r in rows],
            "created": [event_time(r) + timedelta(minutes=5) for r in rows],
            slug: pd.Series(values, dtype=object),
        }
    )


def affinity_dataframe() -> pd.DataFrame:
    df = pd.DataFrame(AFFINITY_ROWS)
    df["event_timestamp"] = [event_time(r) for r in range(len(df))]
    return df


def write_through_provider(
    store: FeatureStore, view: FeatureView, slug: str, dtype: Any, values: List[Any]
) -> None:
    protos = python_values_to_proto_values(values, dtype.to_value_type())
    rows = [
        (
            driver_key(row + 1),
            {slug: proto},
            event_time(row),
            event_time(row) + timedelta(minutes=5),
        )
        for row, proto in enumerate(protos)
    ]
    store._get_provider().online_write_batch(store.config, view, rows, None)


def driver_key(driver_id: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(int64_val=driver_id)])


def online_store_yaml(kind: str, redis_port: Optional[int]) -> str:
    if kind == "sqlite":
        return "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
    return (
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "127.0.0.1:{redis_port}"\n'
    )


def build_types_repo(repo: Path, kind: str, redis_port: Optional[int]) -> FeatureStore:
    """Create, apply and fill the all-types repo with the given online store."""
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {TYPES_PROJECT}\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        + online_store_yaml(kind, redis_port)
        + "offline_store:\n  type: file\n"
        f"entity_key_serialization_version: {SERIALIZATION_VERSION}\n"
    )
    views = {slug: types_view(slug, dtype) for slug, dtype, _ in TYPE_CASES}
    store = FeatureStore(repo_path=str(repo))
    store.apply(
        [DRIVER, CUSTOMER, AFFINITY_VIEW, *views.values(), types_feature_service(views)]
    )
    for slug, dtype, values in TYPE_CASES:
        if slug in DIRECT_WRITE:
            write_through_provider(store, views[slug], slug, dtype, values)
        else:
            store.write_to_online_store(f"types_{slug}", types_dataframe(slug, values))
    store.write_to_online_store("affinity", affinity_dataframe())
    return store


def serve_requests() -> List[Tuple[str, Dict[str, Any]]]:
    all_features = [f"types_{slug}:{slug}" for slug, _, _ in TYPE_CASES]
    max_rows = max(len(values) for _, _, values in TYPE_CASES)
    drivers = list(range(1, max_rows + 1))
    return [
        ("plain_features", {"features": all_features, "entities": {"driver_id": drivers}}),
        (
            "full_feature_names",
            {
                "features": all_features,
                "entities": {"driver_id": drivers},
                "full_feature_names": True,
            },
        ),
        (
            "never_written_entity",
            {
                "features": ["types_int64:int64", "types_string:string", "types_map:map"],
                "entities": {"driver_id": [NEVER_WRITTEN_DRIVER, 1]},
            },
        ),
        (
            "feature_service",
            {"feature_service": "types_service", "entities": {"driver_id": [1, 2]}},
        ),
        (
            "feature_service_full_feature_names",
            {
                "feature_service": "types_service",
                "entities": {"driver_id": [1, 2]},
                "full_feature_names": True,
            },
        ),
        (
            "composite_key_ttl_expired",
            {
                "features": ["affinity:rides", "affinity:note"],
                "entities": {"driver_id": [1, 2, 1], "customer_id": ["c2", "c1", "c9"]},
            },
        ),
        (
            "unknown_feature_view",
            {"features": ["no_such_view:x"], "entities": {"driver_id": [1]}},
        ),
        (
            "unknown_feature",
            {"features": ["types_int64:no_such_feature"], "entities": {"driver_id": [1]}},
        ),
        (
            "unknown_feature_service",
            {"feature_service": "no_such_service", "entities": {"driver_id": [1]}},
        ),
    ]


def run_serve_requests(repo: Path, kind: str, workdir: Path) -> List[Dict[str, Any]]:
    pairs = []
    with feast_serve(repo, workdir / f"feast-serve-{kind}.log") as base:
        for name, body in serve_requests():
            status, text = post_json(base + "/get-online-features", body)
            try:
                parsed = strict_json_loads(text)
            except ValueError:
                parsed = None
            pairs.append(
                {
                    "name": name,
                    "online_store": kind,
                    "request": body,
                    "status_code": status,
                    "response": parsed,
                    "response_text": text,
                }
            )
    return pairs


def response_column(response: Dict[str, Any], feature_name: str) -> Dict[str, Any]:
    names = response["metadata"]["feature_names"]
    return response["results"][names.index(feature_name)]


def value_field(value_bytes: bytes) -> Optional[str]:
    value = ValueProto()
    value.ParseFromString(value_bytes)
    return value.WhichOneof("val")


def sqlite_fixture(repo: Path) -> Dict[str, Any]:
    conn = sqlite3.connect(repo / "data" / "online_store.db")
    try:
        schema = [
            {"type": kind, "name": name, "table": table, "sql": sql}
            for kind, name, table, sql in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            )
        ]
        rows = []
        for entry in schema:
            if entry["type"] != "table":
                continue
            table = entry["name"]
            query = (
                "SELECT entity_key, feature_name, value, value_text, typeof(value_text),"
                " vector_value, typeof(vector_value), event_ts, typeof(event_ts),"
                " created_ts, typeof(created_ts)"
                f' FROM "{table}" ORDER BY entity_key, feature_name'
            )
            for (
                entity_key, feature_name, value, value_text, value_text_type,
                vector_value, vector_value_type, event_ts, event_ts_type,
                created_ts, created_ts_type,
            ) in conn.execute(query):
                rows.append(
                    {
                        "table": table,
                        "entity_key_hex": entity_key.hex(),
                        "feature_name": feature_name,
                        "value_hex": value.hex(),
                        "value_field": value_field(value),
                        "value_text": value_text,
                        "value_text_type": value_text_type,
                        "vector_value": vector_value,
                        "vector_value_type": vector_value_type,
                        "event_ts": event_ts,
                        "event_ts_type": event_ts_type,
                        "created_ts": created_ts,
                        "created_ts_type": created_ts_type,
                    }
                )
    finally:
        conn.close()
    return {"project": TYPES_PROJECT, "schema": schema, "rows": rows}


def written_entity_keys() -> Dict[bytes, Dict[str, Any]]:
    """Redis key -> readable entity, for every entity written to the types repo."""
    keys: Dict[Tuple, EntityKeyProto] = {}
    max_rows = max(len(values) for _, _, values in TYPE_CASES)
    for driver_id in range(1, max_rows + 1):
        keys[(("driver_id", driver_id),)] = driver_key(driver_id)
    for row in AFFINITY_ROWS:
        keys[(("driver_id", row["driver_id"]), ("customer_id", row["customer_id"]))] = (
            EntityKeyProto(
                join_keys=["driver_id", "customer_id"],
                entity_values=[
                    ValueProto(int64_val=row["driver_id"]),
                    ValueProto(string_val=row["customer_id"]),
                ],
            )
        )
    return {
        _redis_key(TYPES_PROJECT, proto, SERIALIZATION_VERSION): dict(entity)
        for entity, proto in keys.items()
    }


def redis_fixture(port: int) -> Dict[str, Any]:
    client = redis.Redis(host="127.0.0.1", port=port)
    entities = written_entity_keys()
    hashes = []
    for key in sorted(client.scan_iter(count=1000)):
        fields = client.hgetall(key)
        hashes.append(
            {
                "key_hex": key.hex(),
                "entity": entities.get(key),
                "ttl": client.ttl(key),
                "fields": [
                    {
                        "field_hex": field.hex(),
                        "field_text": (
                            field.decode("utf-8") if field.startswith(b"_ts:") else None
                        ),
                        "value_hex": fields[field].hex(),
                    }
                    for field in sorted(fields)
                ],
            }
        )
    return {"project": TYPES_PROJECT, "hashes": hashes}


def value_fixtures(
    sqlite_rows: List[Dict[str, Any]], plain_response: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """Pair every written value with its stored bytes and its `feast serve` JSON."""
    stored = {
        (row["table"], row["entity_key_hex"], row["feature_name"]): row["value_hex"]
        for row in sqlite_rows
    }
    cases = []
    for slug, dtype, values in TYPE_CASES:
        column = response_column(plain_response, slug)
        for row, value in enumerate(values):
            entity_hex = serialize_entity_key(driver_key(row + 1), SERIALIZATION_VERSION).hex()
            stored_hex = stored[(f"{TYPES_PROJECT}_types_{slug}", entity_hex, slug)]
            (direct,) = python_values_to_proto_values([value], dtype.to_value_type())
            case = {
                "feast_dtype": str(dtype),
                "value_type": dtype.to_value_type().name,
                "python_repr": repr(value),
                "proto_hex": stored_hex,
                "proto_field": value_field(bytes.fromhex(stored_hex)),
                "json": column["values"][row],
                "status": column["statuses"][row],
                "event_timestamp": column["event_timestamps"][row],
                "written_via": (
                    "online_write_batch" if slug in DIRECT_WRITE else "write_to_online_store"
                ),
            }
            if direct.SerializeToString().hex() != stored_hex:
                # write_to_online_store goes through pandas/Arrow, which can
                # change a value before Feast's type mapping sees it.
                case["python_values_to_proto_values_hex"] = direct.SerializeToString().hex()
            cases.append(case)
    return cases


# ---------------------------------------------------------------------------
# (h) The registry of compat/feast_repo
# ---------------------------------------------------------------------------


def registry_fixtures(workdir: Path) -> None:
    repo = workdir / "feast_repo"
    shutil.copytree(FEAST_REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_quickstart_parquet(repo / "data")
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True)

    registry_db = repo / "data" / "registry.db"
    REGISTRY_FIXTURES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry_db, REGISTRY_FIXTURES / "feast_quickstart_registry.db")
    print("wrote registry-sync/tests/fixtures/feast_quickstart_registry.db")

    registry = RegistryProto()
    registry.ParseFromString(registry_db.read_bytes())
    text_path = REGISTRY_FIXTURES / "feast_quickstart_registry.txt"
    text_path.write_text(text_format.MessageToString(registry, as_utf8=True), encoding="utf-8")
    print(f"wrote {text_path.relative_to(ROOT)}")

    write_json(
        REGISTRY_FIXTURES / "feast_quickstart_expected.json",
        feast_summary.summarize(str(repo)),
    )


def template_registry_fixtures(workdir: Path) -> None:
    """The untouched `feast init` template (label view, on-demand views), as Feast applies it."""
    subprocess.run([str(FEAST_CLI), "init", "demo_repo"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    repo = workdir / "demo_repo" / "feature_repo"
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    REGISTRY_FIXTURES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(repo / "data" / "registry.db",
                    REGISTRY_FIXTURES / "feast_template_registry.db")
    print("wrote registry-sync/tests/fixtures/feast_template_registry.db")
    write_json(REGISTRY_FIXTURES / "feast_template_expected.json",
               feast_summary.summarize(str(repo)))


# ---------------------------------------------------------------------------


def main() -> int:
    if "--template-only" in sys.argv:
        with tempfile.TemporaryDirectory(prefix="quiver-feast-fixtures-") as tmp:
            template_registry_fixtures(Path(tmp))
        return 0
    if feast.__version__ != "0.67.0":
        print(f"warning: expected feast 0.67.0, running {feast.__version__}", file=sys.stderr)

    write_json(CORE_FIXTURES / "entity_keys.json", entity_key_fixtures())

    with tempfile.TemporaryDirectory(prefix="quiver-feast-fixtures-") as tmp:
        workdir = Path(tmp)
        with redis_server(workdir) as redis_port:
            field_hashes, timestamps = redis_probe_fixtures(redis_port, workdir)
            write_json(CORE_FIXTURES / "field_hashes.json", field_hashes)
            write_json(CORE_FIXTURES / "timestamps.json", timestamps)

            sqlite_repo = workdir / "types_sqlite"
            build_types_repo(sqlite_repo, "sqlite", None)
            sqlite_data = sqlite_fixture(sqlite_repo)
            write_json(CORE_FIXTURES / "sqlite_rows.json", sqlite_data)

            redis_repo = workdir / "types_redis"
            build_types_repo(redis_repo, "redis", redis_port)
            write_json(CORE_FIXTURES / "redis_hashes.json", redis_fixture(redis_port))

            serve_pairs = run_serve_requests(sqlite_repo, "sqlite", workdir)
            serve_pairs += run_serve_requests(redis_repo, "redis", workdir)
        write_json(CORE_FIXTURES / "serve_responses.json", serve_pairs)

        plain = next(
            p["response"]
            for p in serve_pairs
            if p["name"] == "plain_features" and p["online_store"] == "sqlite"
        )
        write_json(
            CORE_FIXTURES / "values.json", value_fixtures(sqlite_data["rows"], plain)
        )

        registry_fixtures(workdir)
        template_registry_fixtures(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
