"""Feast 0.67's own `feast init` template, whose `driver_hourly_stats` view has a Map
(`driver_metadata`), a Json (`driver_config`) and a Struct (`driver_profile`) feature, against
quiver, on a redis-server of the test's own:

- Feast materializes, quiver serves: `quiver serve` answers what `feast serve` answers;
- quiver materializes, Feast reads: the Redis hashes hold the values Feast's materialize wrote
  (map entries compared as protobuf maps: Feast's own order is a per-process hash order), and
  Feast's `get_online_features` reads them back as it reads its own;
- Feast's remote online store client writes through quiver (`write_to_online_store` with
  `online_store: {type: remote}` pointed at `quiver serve --enable-push`): Map and Struct values
  travel as JSON text, and land as Feast's local write lands them.
"""

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture_helpers import feast_serve, post_json, strict_json_loads  # noqa: E402
from test_materialize_compat import (  # noqa: E402
    FEAST_CLI,
    QUIVER,
    QuiverServer,
    redis_dump,
    redis_server,  # noqa: F401 (a fixture)
    run,
)

VIEW = "driver_hourly_stats"
TYPED = ["driver_metadata", "driver_config", "driver_profile"]
FEATURES = [f"{VIEW}:{f}" for f in TYPED + ["conv_rate", "avg_daily_trips"]]
DRIVERS = [1001, 1002, 1003, 1004, 1005]


def template_repo(tmp_path: Path, port: int) -> Path:
    """`feast init` untouched but for the online store: a redis-server of the test's own."""
    run([str(FEAST_CLI), "init", "demo_repo"], tmp_path)
    repo = tmp_path / "demo_repo" / "feature_repo"
    config = (repo / "feature_store.yaml").read_text()
    start = config.index("online_store:")
    end = config.index("entity_key_serialization_version")
    (repo / "feature_store.yaml").write_text(
        config[:start]
        + f"online_store:\n    type: redis\n    connection_string: 127.0.0.1:{port}\n"
        + config[end:]
    )
    run([str(FEAST_CLI), "apply"], repo)
    return repo


def window() -> tuple:
    end = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    return (end - timedelta(days=3650)).isoformat(), end.isoformat()


def values_by_name(answer: dict) -> dict:
    names = answer["metadata"]["feature_names"]
    return {n: answer["results"][i]["values"] for i, n in enumerate(names)}


def request() -> dict:
    return {"features": FEATURES, "entities": {"driver_id": DRIVERS}}


def as_protos(dump: dict) -> dict:
    """Redis hashes with every value parsed: protobuf map fields compare as maps."""
    from feast.protos.feast.types.Value_pb2 import Value

    return {
        key: {
            field: (value if field.startswith(b"_ts:") else Value.FromString(value))
            for field, value in fields.items()
        }
        for key, fields in dump.items()
    }


def test_quiver_serves_the_templates_map_json_and_struct_as_feast_serve_does(
    tmp_path: Path, redis_server  # noqa: F811
) -> None:
    port, _client = redis_server
    repo = template_repo(tmp_path, port)
    start, end = window()
    run([str(FEAST_CLI), "materialize", start, end], repo)
    with feast_serve(repo, tmp_path / "feast-serve.log") as base:
        status, text = post_json(base + "/get-online-features", request())
        assert status == 200, text
        feast = values_by_name(strict_json_loads(text))
    with QuiverServer(repo) as server:
        quiver = values_by_name(server.post("/get-online-features", request()))
    for name in TYPED + ["conv_rate", "avg_daily_trips"]:
        assert quiver[name] == feast[name], name
    # Real values, not nulls: a Map and a Struct as objects, Json as its text.
    assert isinstance(quiver["driver_metadata"][0], dict)
    assert set(quiver["driver_profile"][0]) == {"name", "age"}
    assert isinstance(quiver["driver_config"][0], str)


def test_quiver_materializes_the_template_as_feast_does_and_feast_reads_it(
    tmp_path: Path, redis_server  # noqa: F811
) -> None:
    from feast import FeatureStore

    port, client = redis_server
    repo = template_repo(tmp_path, port)
    start, end = window()
    run([str(FEAST_CLI), "materialize", start, end], repo)
    by_feast = redis_dump(client)
    feast_read = FeatureStore(repo_path=str(repo)).get_online_features(
        features=FEATURES, entity_rows=[{"driver_id": d} for d in DRIVERS]
    ).to_dict()
    client.flushall()

    run([str(QUIVER), "materialize", "--repo", str(repo), start, end], repo)
    by_quiver = redis_dump(client)
    assert by_quiver.keys() == by_feast.keys()
    assert as_protos(by_quiver) == as_protos(by_feast)
    # Byte for byte wherever the value has no map in it.
    from feast.protos.feast.types.Value_pb2 import Value

    for key, fields in by_feast.items():
        for field, value in fields.items():
            if field.startswith(b"_ts:") or Value.FromString(value).WhichOneof("val") not in (
                "map_val",
                "struct_val",
            ):
                assert by_quiver[key][field] == value

    quiver_read = FeatureStore(repo_path=str(repo)).get_online_features(
        features=FEATURES, entity_rows=[{"driver_id": d} for d in DRIVERS]
    ).to_dict()
    assert quiver_read == feast_read
    assert isinstance(quiver_read["driver_metadata"][0], dict)


def test_feasts_remote_client_writes_map_json_and_struct_through_quiver(
    tmp_path: Path, redis_server  # noqa: F811
) -> None:
    import pandas as pd
    from feast import FeatureStore

    port, client = redis_server
    repo = template_repo(tmp_path, port)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    df = pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": [now, now],
            "created": [now, now],
            "conv_rate": pd.Series([0.5, 0.25], dtype="float32"),
            "acc_rate": pd.Series([0.75, 0.5], dtype="float32"),
            "avg_daily_trips": [10, 20],
            "driver_metadata": [
                {"vehicle_type": "van", "rating": "4.9"},
                {"vehicle_type": "bike", "rating": "3.5"},
            ],
            "driver_config": [
                '{"max_distance_km": 5, "preferred_zones": ["north"]}',
                '{"max_distance_km": 9, "preferred_zones": []}',
            ],
            "driver_profile": [{"name": "ann", "age": "31"}, {"name": "bo", "age": "42"}],
        }
    )
    # Feast's local write: the reference bytes.
    FeatureStore(repo_path=str(repo)).write_to_online_store(VIEW, df)
    by_feast = redis_dump(client)
    client.flushall()

    remote = tmp_path / "remote"
    shutil.copytree(repo, remote)
    with QuiverServer(repo, "--enable-push") as server:
        config = (remote / "feature_store.yaml").read_text()
        start = config.index("online_store:")
        end = config.index("entity_key_serialization_version")
        (remote / "feature_store.yaml").write_text(
            config[:start]
            + f"online_store:\n    type: remote\n    path: http://127.0.0.1:{server.port}\n"
            + config[end:]
        )
        FeatureStore(repo_path=str(remote)).write_to_online_store(VIEW, df)
        answer = values_by_name(
            server.post(
                "/get-online-features",
                {"features": FEATURES, "entities": {"driver_id": [1001, 1002]}},
            )
        )
    by_quiver = redis_dump(client)
    assert as_protos(by_quiver) == as_protos(by_feast)
    assert answer["driver_metadata"] == [
        {"vehicle_type": "van", "rating": "4.9"},
        {"vehicle_type": "bike", "rating": "3.5"},
    ]
    assert answer["driver_config"][1] == '{"max_distance_km": 9, "preferred_zones": []}'


def test_feast_reads_the_struct_schema_of_a_quiver_applied_view(tmp_path: Path) -> None:
    """`quiver apply` of a YAML view with Struct and Array(Struct) features: Feast lists them
    with their fields (Feast keeps them in a `feast:struct_schema` tag; without it a Struct
    reads as Struct({_value: String}))."""
    from feast import FeatureStore

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        "project: structs\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n    type: sqlite\n    path: data/online.db\n"
        "entity_key_serialization_version: 3\n"
    )
    (repo / "features.yaml").write_text(
        """
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: profiles
    entities: [driver]
    ttl: 1d
    source: stats
    schema:
      - {name: profile, dtype: 'Struct({"name": String, "age": Int64})'}
      - {name: history, dtype: 'Array(Struct({"zone": String, "trips": Array(Int32)}))'}
      - {name: metadata, dtype: Map}
"""
    )
    run([str(QUIVER), "apply", "--repo", str(repo)], repo)
    view = FeatureStore(repo_path=str(repo)).get_feature_view("profiles")
    dtypes = {f.name: str(f.dtype) for f in view.features}
    assert dtypes == {
        "profile": "Struct({name: String, age: Int64})",
        "history": "Array(Struct({zone: String, trips: Array(Int32)}))",
        "metadata": "Map",
    }
