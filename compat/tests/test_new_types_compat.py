"""Feast 0.67's newer value types, quiver against the real Feast: Decimal, Array(Decimal),
Set(Decimal), PdfBytes, ImageBytes, nested lists (Array(Array(T)) → `list_val`, Set(Array(T))
→ `set_val`), ZonedTimestamp and ScalarMap.

- Materialize: a Parquet source as pyarrow writes it (a decimal128 column, lists of strings,
  binary columns, lists of lists), `feast materialize` on one copy of the repo and `quiver
  materialize` on another: equal SQLite rows, byte for byte.
- Serving: `feast serve` and `quiver serve` on the same repo and SQLite file answer the same
  JSON for every feature, including a view of ZonedTimestamp and ScalarMap values. Feast 0.67
  cannot materialize or write those through its SDK (a tz-aware Parquet column reaches its
  converter as numpy.datetime64 and is refused; pyarrow refuses a dict with int keys), so their
  rows are written by Feast's own SQLite store (`online_write_batch`) with values Feast's
  `python_values_to_proto_values` made. Feast's server answers a ScalarMap as null ("not yet
  supported"); quiver does the same.
"""

import decimal
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_write_time_odfv_compat import FEAST_CLI, QUIVER, Quiver, post  # noqa: E402
from fixture_helpers import feast_serve  # noqa: E402

DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import (Array, Decimal, ImageBytes, Int64, PdfBytes, ScalarMap, Set, String,
                         ZonedTimestamp)

driver = Entity(name="driver", join_keys=["driver_id"])
source = FileSource(name="nt_source", path="data/nt.parquet", timestamp_field="event_timestamp")
newtypes = FeatureView(
    name="newtypes", entities=[driver], ttl=timedelta(0), source=source, online=True,
    schema=[
        Field(name="f_decimal", dtype=Decimal),
        Field(name="f_decimal_text", dtype=Decimal),
        Field(name="f_decimal_list", dtype=Array(Decimal)),
        Field(name="f_decimal_set", dtype=Set(Decimal)),
        Field(name="f_pdf", dtype=PdfBytes),
        Field(name="f_image", dtype=ImageBytes),
        Field(name="f_nested", dtype=Array(Array(Int64))),
        Field(name="f_nested_set", dtype=Set(Array(String))),
    ],
)
zoned = FeatureView(
    name="zoned", entities=[driver], ttl=timedelta(0), source=source, online=True,
    schema=[
        Field(name="f_zoned", dtype=ZonedTimestamp),
        Field(name="f_scalar_map", dtype=ScalarMap),
    ],
)
'''

FEATURES = [
    f"newtypes:{f}"
    for f in ("f_decimal", "f_decimal_text", "f_decimal_list", "f_decimal_set", "f_pdf", "f_image",
              "f_nested", "f_nested_set")
] + ["zoned:f_zoned", "zoned:f_scalar_map"]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}
    e["TZ"] = "UTC"
    return e


def write_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    table = pa.table({
        "driver_id": pa.array([1, 2, 3], pa.int64()),
        "event_timestamp": pa.array([t, t, t], pa.timestamp("us", tz="UTC")),
        "f_decimal": pa.array([decimal.Decimal("3.140"), decimal.Decimal("-0.001"), None], pa.decimal128(10, 3)),
        "f_decimal_text": pa.array(["12.5", "-7", None], pa.string()),
        "f_decimal_list": pa.array([["1.5", "2"], [], None], pa.list_(pa.string())),
        "f_decimal_set": pa.array([["1.5", "1.5"], ["7"], None], pa.list_(pa.string())),
        "f_pdf": pa.array([b"%PDF-1.4 x", b"", None], pa.binary()),
        "f_image": pa.array([b"\x89PNG\r\n", b"\xff\xd8", None], pa.binary()),
        "f_nested": pa.array([[[1, 2], [3]], [[]], None], pa.list_(pa.list_(pa.int64()))),
        "f_nested_set": pa.array([[["a"], ["b", "c"]], [["x"]], None], pa.list_(pa.list_(pa.string()))),
    })
    pq.write_table(table, path)


def make_repo(root: Path, name: str) -> Path:
    repo = root / name
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        "project: nt\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n    type: sqlite\n    path: data/online_store.db\n"
        "offline_store:\n    type: file\nentity_key_serialization_version: 3\n"
    )
    (repo / "definitions.py").write_text(DEFINITIONS)
    write_parquet(repo / "data" / "nt.parquet")
    done = subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, capture_output=True, text=True, env=env())
    assert done.returncode == 0, done.stderr
    return repo


def rows(repo: Path, table: str):
    import sqlite3

    conn = sqlite3.connect(repo / "data" / "online_store.db")
    out = conn.execute(
        f"SELECT entity_key, feature_name, value FROM {table} ORDER BY entity_key, feature_name"
    ).fetchall()
    conn.close()
    return out


def test_materialize_equal_rows(tmp_path: Path) -> None:
    feast_repo = make_repo(tmp_path, "feast_side")
    quiver_repo = make_repo(tmp_path, "quiver_side")
    window = ["2025-12-31T00:00:00", "2026-01-02T00:00:00"]
    done = subprocess.run(
        [str(FEAST_CLI), "materialize", *window, "--views", "newtypes"],
        cwd=feast_repo, capture_output=True, text=True, env=env(),
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [str(QUIVER), "materialize", *window, "--repo", str(quiver_repo), "--views", "newtypes"],
        capture_output=True, text=True, env=env(),
    )
    assert done.returncode == 0, done.stderr
    theirs, ours = rows(feast_repo, "nt_newtypes"), rows(quiver_repo, "nt_newtypes")
    assert len(theirs) == 24  # three drivers, eight features
    assert ours == theirs


def write_zoned_rows(repo: Path) -> None:
    """ZonedTimestamp and ScalarMap rows, written by Feast's own SQLite store."""
    from zoneinfo import ZoneInfo

    from feast import FeatureStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    fs = FeatureStore(repo_path=str(repo))
    view = fs.get_feature_view("zoned")
    zoned = python_values_to_proto_values(
        [
            datetime(2026, 3, 8, 12, 0, tzinfo=ZoneInfo("America/New_York")),
            datetime(2026, 1, 1, 5, 30, tzinfo=timezone.utc),
            datetime(2025, 7, 1, 0, 0, 7),
        ],
        ValueType.ZONED_TIMESTAMP,
    )
    maps = python_values_to_proto_values([{1: "a", 2: "b"}, {True: 1.5}, {2.5: None}], ValueType.SCALAR_MAP)
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    data = []
    for i, driver in enumerate([1, 2, 3]):
        key = EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=driver)])
        data.append((key, {"f_zoned": zoned[i], "f_scalar_map": maps[i]}, now, now))
    fs._get_provider().online_write_batch(fs.config, view, data, None)


def test_serving_answers_as_feast(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "repo")
    done = subprocess.run(
        [str(FEAST_CLI), "materialize", "2025-12-31T00:00:00", "2026-01-02T00:00:00", "--views", "newtypes"],
        cwd=repo, capture_output=True, text=True, env=env(),
    )
    assert done.returncode == 0, done.stderr
    write_zoned_rows(repo)
    body = {"features": FEATURES, "entities": {"driver_id": [1, 2, 3, 4]}}
    with feast_serve(repo, tmp_path / "feast_serve.log") as feast:
        status, theirs = post(feast, "/get-online-features", body)
        assert status == 200, theirs
    quiver = Quiver(repo)
    try:
        status, ours = post(quiver.base, "/get-online-features", body)
        assert status == 200, ours
    finally:
        quiver.stop()
    # Feast's order inside a view is not stable; names are compared as a set.
    assert sorted(ours["metadata"]["feature_names"]) == sorted(theirs["metadata"]["feature_names"])
    by_name = lambda answer: dict(zip(answer["metadata"]["feature_names"], answer["results"]))  # noqa: E731
    theirs, ours = by_name(theirs), by_name(ours)
    for name in theirs:
        assert ours[name]["values"] == theirs[name]["values"], (name, ours[name], theirs[name])
    # What the values are, as Feast's server prints them.
    assert ours["f_decimal"]["values"][:3] == ["3.140", "-0.001", None]
    assert ours["f_nested"]["values"][:2] == [[[1, 2], [3]], [None]]
    assert ours["f_zoned"]["values"][:3] == [
        "2026-03-08T12:00:00-04:00",
        "2026-01-01T05:30:00+00:00",
        "2025-07-01T00:00:07+00:00",
    ]
    assert ours["f_scalar_map"]["values"][:3] == [None, None, None]
