#!/usr/bin/env python3
"""Feast 0.67's own code for the work benches/benches/codecs.rs measures, timed the same way.

Run with the venv from compat/setup-venv.sh (numbers in RESULTS.md come from one session
that ran both):

    target/feast-venv/bin/python benches/feast_baseline.py

Each line: the benchmark name shared with the Rust bench, then the median time per call over
several timeit repeats.
"""

import statistics
import timeit
from pathlib import Path

from feast.feature_server_utils import convert_response_to_dict
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.protos.feast.serving.ServingService_pb2 import (
    FieldStatus,
    GetOnlineFeaturesResponse,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, Int32List, Value
from feast.feature_view import FeatureView
from google.protobuf.timestamp_pb2 import Timestamp

import json

ROOT = Path(__file__).resolve().parents[1]


def redis_key(entity_key: EntityKey, project: str) -> bytes:
    # What feast.infra.online_stores.helpers._redis_key does: key bytes + project.
    return serialize_entity_key(entity_key, entity_key_serialization_version=3) + project.encode("utf8")


def cell(f: int, e: int) -> Value:
    i = f * 10 + e
    kind = f % 4
    if kind == 0:
        return Value(float_val=i * 0.1)
    if kind == 1:
        return Value(int64_val=i)
    if kind == 2:
        return Value(string_val=f"zone-{i}")
    return Value(int32_list_val=Int32List(val=[1, 2, 3]))


def response_10x10() -> GetOnlineFeaturesResponse:
    resp = GetOnlineFeaturesResponse()
    resp.metadata.feature_names.val.extend(f"feature_{f}" for f in range(10))
    for f in range(10):
        vec = resp.results.add()
        for e in range(10):
            vec.values.append(cell(f, e))
            vec.statuses.append(FieldStatus.PRESENT)
            vec.event_timestamps.append(Timestamp(seconds=1_714_564_800 + e))
    return resp


def bench(name: str, fn, number: int) -> None:
    runs = timeit.repeat(fn, number=number, repeat=7)
    per_call = statistics.median(runs) / number
    unit, scale = ("ns", 1e9) if per_call < 1e-6 else ("µs", 1e6)
    print(f"{name:<36} {per_call * scale:10.2f} {unit}")


def main() -> None:
    single = EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=1001)])
    composite = EntityKey(
        join_keys=["driver_id", "customer_id"],
        entity_values=[Value(int64_val=1001), Value(string_val="c-000123")],
    )
    float_bytes = Value(float_val=0.8057102).SerializeToString()
    list_bytes = Value(double_list_val=DoubleList(val=[float(i) for i in range(16)])).SerializeToString()
    response = response_10x10()
    registry_bytes = (ROOT / "registry-sync/tests/fixtures/feast_quickstart_registry.db").read_bytes()

    def load_registry() -> int:
        reg = RegistryProto()
        reg.ParseFromString(registry_bytes)
        views = [FeatureView.from_proto(fv) for fv in reg.feature_views if fv.spec.project == "quickstart"]
        return len(views)

    bench("entity_key/redis_key_int64", lambda: redis_key(single, "quickstart"), 20_000)
    bench("entity_key/redis_key_composite", lambda: redis_key(composite, "quickstart"), 20_000)
    bench("layout/redis_field", lambda: _mmh3("driver_hourly_stats:conv_rate"), 50_000)
    bench("value/decode_float", lambda: Value.FromString(float_bytes), 50_000)
    bench("value/decode_double_list16", lambda: Value.FromString(list_bytes), 50_000)
    bench("json/response_10x10", lambda: json.dumps(convert_response_to_dict(response)), 2_000)
    bench("registry/decode_and_load_project", load_registry, 200)


if __name__ == "__main__":
    main()
