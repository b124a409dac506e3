"""Materializing write-time on-demand views (`write_to_online_store=True`), quiver against the
real Feast 0.67.

`feast init`'s template plus one pandas on-demand view with write_to_online_store=True over
three features of the template's driver_hourly_stats (no request data: Feast's materialize
reads none). Feast's `_materialize_odfv` takes the latest source row of each driver in the
window, joins the view's inputs at those times, runs the function and writes the outputs and
the join key stamped with the time of the write; quiver does the same with the function run by
Feast's transformation service (`feast serve_transformations`). One output adds a Python float
to a Float32 feature, which pandas computes in float32: equal bytes need the inputs typed as
Feast types them. (It is widened to float64 in the function: Feast 0.67's write refuses a
numpy.float32 output, for a Float32 or a Float64 feature alike.)

- Redis, `feast materialize START END` against `quiver materialize START END
  --transformation-service`: every view of the template and the write-time view, each repo with
  its own redis-server. Every field of every key is equal, except the write-time view's `_ts`
  (the time of each write: checked to be that time); the other views' Map features are compared
  as values (Feast writes their entries in its process's hash order).
- Redis, Feast's SDK `materialize_incremental(END, [view])` against `POST
  /materialize-incremental` to `quiver serve --role ingest --transformation-service`: equal bytes.
- Without a transformation service `quiver materialize` refuses, naming the view and the flag,
  before writing anything.
- SQLite: Feast 0.67's apply creates no table for a write-time view (its materialize then fails
  with "no such table"), so its own `SqliteOnlineStore.update` creates the table first; quiver
  creates it on write. Equal rows (key, feature name, value).
"""

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_write_time_odfv_compat import (  # noqa: E402
    FEAST_CLI,
    QUIVER,
    Quiver,
    post,
    redis_server,
    transformations,  # noqa: F401 (a fixture)
)

VIEW = "driver_stats_stored"
OUTPUTS = ["conv_rate_plus", "acc_plus_trips", "trips_doubled"]

WRITE_TIME_VIEW = f'''

@on_demand_feature_view(
    sources=[driver_stats_fv[["conv_rate", "acc_rate", "avg_daily_trips"]]],
    schema=[
        Field(name="conv_rate_plus", dtype=Float64),
        Field(name="acc_plus_trips", dtype=Float64),
        Field(name="trips_doubled", dtype=Int64),
    ],
    entities=[driver],
    write_to_online_store=True,
)
def {VIEW}(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["conv_rate_plus"] = (inputs["conv_rate"] + 0.1).astype("float64")
    df["acc_plus_trips"] = inputs["acc_rate"] + inputs["avg_daily_trips"]
    df["trips_doubled"] = inputs["avg_daily_trips"] * 2
    return df
'''


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}
    e["TZ"] = "UTC"
    return e


def make_repo(root: Path, side: str, online_store: str, data_of: Path = None) -> Path:
    """`feast init demo` (the template's data ends about now) plus the write-time view, applied
    by Feast. Both sides are project demo: Redis keys end in it. `feast init` makes random data:
    with `data_of`, that repo's data file replaces it."""
    (root / side).mkdir()
    subprocess.run([str(FEAST_CLI), "init", "demo"], cwd=root / side, check=True, capture_output=True, env=env())
    repo = root / side / "demo" / "feature_repo"
    if data_of is not None:
        shutil.copyfile(data_of / "data" / "driver_stats.parquet", repo / "data" / "driver_stats.parquet")
    with open(repo / "feature_definitions.py", "a") as f:
        f.write(WRITE_TIME_VIEW)
    config = (repo / "feature_store.yaml").read_text()
    config = config.replace("online_store:\n    type: sqlite\n    path: data/online_store.db\n", online_store)
    assert online_store in config, config
    (repo / "feature_store.yaml").write_text(config)
    done = subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, capture_output=True, text=True, env=env())
    assert done.returncode == 0, done.stderr
    return repo


def redis_store(port: int) -> str:
    return f'online_store:\n    type: redis\n    connection_string: "127.0.0.1:{port}"\n'


def window():
    """The last ten days up to a minute ago, as naive UTC ISO text (both CLIs read it so)."""
    end = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(minutes=1)
    return (end - timedelta(days=10)).isoformat(), end.isoformat()


def dump(port: int) -> dict:
    import redis

    db = redis.Redis(port=port)
    return {key: db.hgetall(key) for key in db.keys()}


def check_equal(theirs: dict, ours: dict, began: float, ended: float) -> int:
    """Every key and field equal: the write-time view's fields byte for byte, except its `_ts`
    (the time of each write, checked to be that time); the other views' as values (a Map
    feature's entries are in the hash order of the Python process that wrote it, in Feast
    itself). Returns how many keys hold the view."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value

    assert sorted(ours) == sorted(theirs)
    ts_field = f"_ts:{VIEW}".encode()
    view_fields = {_mmh3(f"{VIEW}:{f}") for f in OUTPUTS + ["driver_id"]}
    holding = 0
    for key, fields in theirs.items():
        assert set(ours[key]) == set(fields), (key, set(ours[key]) ^ set(fields))
        for field, value in fields.items():
            if field == ts_field:
                holding += 1
                ts = Timestamp()
                ts.ParseFromString(ours[key][field])
                assert began - 1 <= ts.seconds <= ended + 1, (key, ts.seconds, began, ended)
            elif field in view_fields or field.startswith(b"_ts:"):
                assert ours[key][field] == value, (key, field, ours[key][field], value)
            else:
                assert Value.FromString(ours[key][field]) == Value.FromString(value), (key, field)
    return holding


def test_redis_materialize_equal_bytes(tmp_path: Path, transformations) -> None:  # noqa: F811
    with redis_server(tmp_path) as feast_port, redis_server(tmp_path) as quiver_port:
        feast_repo = make_repo(tmp_path, "feast_side", redis_store(feast_port))
        quiver_repo = make_repo(tmp_path, "quiver_side", redis_store(quiver_port), feast_repo)
        start, end = window()

        # Without the transformation service: refused before anything is written.
        done = subprocess.run(
            [str(QUIVER), "materialize", start, end, "--repo", str(quiver_repo)],
            capture_output=True, text=True, env=env(),
        )
        assert done.returncode != 0
        assert VIEW in done.stderr and "--transformation-service" in done.stderr, done.stderr
        assert dump(quiver_port) == {}

        began = time.time()
        done = subprocess.run(
            [str(FEAST_CLI), "materialize", start, end], cwd=feast_repo, capture_output=True, text=True, env=env()
        )
        assert done.returncode == 0, done.stderr
        service = transformations(quiver_repo)
        done = subprocess.run(
            [str(QUIVER), "materialize", start, end, "--repo", str(quiver_repo), "--transformation-service", service],
            capture_output=True, text=True, env=env(),
        )
        assert done.returncode == 0, done.stderr
        assert VIEW in done.stdout, done.stdout
        ended = time.time()

        theirs, ours = dump(feast_port), dump(quiver_port)
        # Five drivers in the template's data, each with the view's fields beside the others.
        assert check_equal(theirs, ours, began, ended) == 5
        import redis

        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = serialize_entity_key(
            EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=1001)]), 3
        ) + b"demo"
        fields = redis.Redis(port=quiver_port).hgetall(key)
        assert f"_ts:{VIEW}".encode() in fields


def test_redis_materialize_incremental_through_the_ingest_role(tmp_path: Path, transformations) -> None:  # noqa: F811
    from feast import FeatureStore

    with redis_server(tmp_path) as feast_port, redis_server(tmp_path) as quiver_port:
        feast_repo = make_repo(tmp_path, "feast_side", redis_store(feast_port))
        quiver_repo = make_repo(tmp_path, "quiver_side", redis_store(quiver_port), feast_repo)
        _, end = window()

        began = time.time()
        FeatureStore(repo_path=str(feast_repo)).materialize_incremental(
            datetime.fromisoformat(end), feature_views=[VIEW]
        )
        quiver = Quiver(quiver_repo, "--role", "ingest", "--transformation-service", transformations(quiver_repo))
        try:
            status, answer = post(quiver.base, "/materialize-incremental", {"end_ts": end, "feature_views": [VIEW]})
            assert status == 200, answer
            assert [v["name"] for v in answer["feature_views"]] == [VIEW], answer
            assert answer["feature_views"][0]["written"] == 5, answer
        finally:
            quiver.stop()
        ended = time.time()
        theirs, ours = dump(feast_port), dump(quiver_port)
        assert len(theirs) == 5
        assert check_equal(theirs, ours, began, ended) == 5


def test_sqlite_materialize_equal_rows(tmp_path: Path, transformations) -> None:  # noqa: F811
    import sqlite3

    from feast import FeatureStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    sqlite = "online_store:\n    type: sqlite\n    path: data/online_store.db\n"
    feast_repo = make_repo(tmp_path, "feast_side", sqlite)
    quiver_repo = make_repo(tmp_path, "quiver_side", sqlite, feast_repo)
    start, end = window()

    fs = FeatureStore(repo_path=str(feast_repo))
    # Feast 0.67's apply leaves the view's table out; its own store creates it.
    SqliteOnlineStore().update(fs.config, [], [fs.get_on_demand_feature_view(VIEW)], [], [], partial=False)
    fs.materialize(datetime.fromisoformat(start), datetime.fromisoformat(end), feature_views=[VIEW])

    done = subprocess.run(
        [str(QUIVER), "materialize", start, end, "--repo", str(quiver_repo), "--views", VIEW,
         "--transformation-service", transformations(quiver_repo)],
        capture_output=True, text=True, env=env(),
    )
    assert done.returncode == 0, done.stderr

    def rows(repo: Path):
        conn = sqlite3.connect(repo / "data" / "online_store.db")
        out = conn.execute(
            f"SELECT entity_key, feature_name, value, event_ts = created_ts FROM demo_{VIEW} "
            "ORDER BY entity_key, feature_name"
        ).fetchall()
        conn.close()
        return out

    theirs, ours = rows(feast_repo), rows(quiver_repo)
    assert len(theirs) == 20  # five drivers: three outputs and the join key each
    assert ours == theirs


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
