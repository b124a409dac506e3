"""A Feast repo with `offline_store: type: spark` and SparkSources, applied by the real Feast 0.67,
run by quiver unmodified: `quiver historical` and `quiver materialize` go through Spark and
answer what Feast's own Spark offline store answers on the same data.

The test starts its own Spark Connect server (pyspark 4.3.0's, from QUIVER_SPARK_VENV, made by
compat/setup-spark.sh) on a free loopback port. Feast with its Spark extra lives in its own venv
(QUIVER_FEAST_SPARK_VENV, made by compat/setup-feast-spark-venv.sh); this test drives it in
subprocesses, as the KServe tests drive their venv. The repo has three SparkSources, one of each
kind Feast documents: a path with file_format parquet, a query, and a table in Spark's catalog
(created here through Spark Connect), the table one with a field_mapping.

The data holds the point-in-time edge cases: two rows at one event time told apart by the
created timestamp, an entity row at exactly a feature row's time (inclusive), one past the ttl,
unknown keys, a view without ttl, and a duplicate entity row (quiver keeps every row in input
order; Feast answers in its own order, so the answers are compared per distinct entity row). Materialization: Feast materializes one copy of the applied repo, quiver the
other (SQLite online stores), and the two stores hold the same rows byte for byte, which Feast
also reads back as the same online features. The historical test also runs quiver with the
entity rows read by Spark (`--entities-sql`) and the output written by Spark (`--spark-out`), and
Feast's remote offline store client asks `quiver offline serve` on the repo for the same rows
with `entity_df` as SQL (which Spark runs).
"""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
CACHE = Path.home() / ".cache" / "quiver-ci"
# Absolute (not resolved: a venv's python is a symlink out of it), as the subprocesses below run
# in other folders.
FEAST_SPARK_VENV = Path(os.environ.get("QUIVER_FEAST_SPARK_VENV", CACHE / "feast-spark-venv")).absolute()
SPARK_VENV = Path(os.environ.get("QUIVER_SPARK_VENV", CACHE / "spark-venv")).absolute()
FEAST_PYTHON = FEAST_SPARK_VENV / "bin" / "python"

H = 3600
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
START, END = "2025-12-31T00:00:00", "2026-01-10T00:00:00"
FEATURES = [
    "driver_stats:conv_rate",
    "driver_stats:trips",
    "driver_stats:note",
    "customer_profile:tier",
    "customer_profile:spend",
    "driver_daily:score",
]


def requirement_missing(message):
    """Fails under CI=1 (CI installs everything), skips elsewhere."""
    if os.environ.get("CI") not in (None, "", "0"):
        pytest.fail(message)
    pytest.skip(message)


def spark_home():
    for site in sorted((SPARK_VENV / "lib").glob("python*/site-packages/pyspark")):
        if (site / "sbin" / "start-connect-server.sh").is_file():
            return site
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """A Spark Connect server of the test's own: yields its port; stopped at the end."""
    if shutil.which("java") is None:
        requirement_missing("java is missing: run compat/setup-spark.sh")
    home = spark_home()
    if home is None:
        requirement_missing(f"no pyspark Spark Connect server in {SPARK_VENV}: run compat/setup-spark.sh")
    if not FEAST_PYTHON.exists() or subprocess.run(
        [FEAST_PYTHON, "-c", "import feast, pyspark.sql.connect.session"], capture_output=True
    ).returncode != 0:
        requirement_missing(
            f"no Feast with pyspark in {FEAST_SPARK_VENV}: run compat/setup-feast-spark-venv.sh"
        )
    if not QUIVER.exists():
        requirement_missing(f"no quiver binary at {QUIVER}")
    work = tmp_path_factory.mktemp("spark")
    port = free_port()
    log = open(work / "server.log", "wb")
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1",
               SPARK_LOG_DIR=str(work), SPARK_PID_DIR=str(work))
    confs = [
        "spark.connect.grpc.binding.address=127.0.0.1",
        f"spark.connect.grpc.binding.port={port}",
        "spark.driver.host=127.0.0.1",
        "spark.driver.bindAddress=127.0.0.1",
        "spark.ui.enabled=false",
        "spark.sql.shuffle.partitions=4",
        f"spark.local.dir={work / 'local'}",
        f"spark.sql.warehouse.dir={work / 'warehouse'}",
    ]
    args = [str(home / "sbin" / "start-connect-server.sh"), "--master", "local[2]"]
    for c in confs:
        args += ["--conf", c]
    # Its own process group, so stopping it stops the launcher and the JVM together.
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(
                        f"the Spark Connect server did not start: {(work / 'server.log').read_text()[-4000:]}")
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def ts(seconds):
    return pa.array([s * 1_000_000 for s in seconds], pa.timestamp("us", "UTC"))


def write_data(data):
    """The sources' Parquet files and the entity table."""
    # driver 1: two rows at T0+1h told apart by created (the later created wins); driver 2: one
    # row, asked for past its 1-day ttl and at exactly its time; driver 3 only in driver_daily.
    pq.write_table(pa.table({
        "driver_id": pa.array([1, 1, 1, 1, 2, 2], pa.int64()),
        "event_timestamp": ts([T0, T0 + H, T0 + H, T0 + 5 * H, T0 + 2 * H, T0 + 30 * H]),
        "created": ts([T0, T0 + H, T0 + H + 60, T0 + 5 * H, T0 + 2 * H, T0 + 30 * H]),
        "conv_rate": pa.array([0.5, 0.25, 0.75, 0.125, 1.5, 2.5], pa.float32()),
        "trips": pa.array([10, 20, 21, 30, 40, 50], pa.int64()),
        "note": pa.array(["a", "b-old", "b-new", "c", "d", None], pa.string()),
    }), data / "driver_stats.parquet")
    pq.write_table(pa.table({
        "customer_id": pa.array(["C1", "C1", "C2", "C3"], pa.string()),
        "ts": ts([T0 - 100 * 24 * H, T0 + 3 * H, T0, T0 + 100 * H]),
        "tier": pa.array(["bronze", "gold", "silver", "late"], pa.string()),
        "spend": pa.array([1.0, 99.5, 12.25, 7.0], pa.float64()),
    }), data / "customer_profile.parquet")
    pq.write_table(pa.table({
        "drv": pa.array([1, 2, 3, 3], pa.int64()),
        "day": ts([T0, T0, T0 - 24 * H, T0 + 24 * H]),
        "raw_score": pa.array([7, 8, 9, 10], pa.int64()),
    }), data / "driver_daily.parquet")
    pq.write_table(pa.table({
        "driver_id": pa.array([1, 1, 1, 2, 2, 2, 3, 99, 1, 3], pa.int64()),
        "customer_id": pa.array(["C1", "C1", "C2", "C2", "C3", "C9", "C1", "C1", "C1", "C3"]),
        "event_timestamp": ts([T0 + H, T0 + 2 * H, T0 + 30 * H, T0 + 2 * H, T0 + 27 * H,
                               T0 + 26 * H, T0 + 30 * H, T0 + 4 * H, T0 + H, T0 + 200 * H]),
    }), data / "entities.parquet")


FEATURES_PY = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float32, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)

driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(days=1), online=True,
    source=SparkSource(name="driver_stats_source", path="{data}/driver_stats.parquet",
                       file_format="parquet", timestamp_field="event_timestamp",
                       created_timestamp_column="created"),
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="trips", dtype=Int64),
            Field(name="note", dtype=String)],
)
customer_profile = FeatureView(
    name="customer_profile", entities=[customer], ttl=timedelta(0), online=True,
    source=SparkSource(name="customer_source",
                       query="SELECT customer_id, ts, tier, spend FROM parquet.`{data}/customer_profile.parquet`",
                       timestamp_field="ts"),
    schema=[Field(name="tier", dtype=String), Field(name="spend", dtype=Float64)],
)
driver_daily = FeatureView(
    name="driver_daily", entities=[driver], ttl=timedelta(days=2), online=True,
    source=SparkSource(name="driver_daily_source", table="driver_daily",
                       timestamp_field="day", field_mapping={{"drv": "driver_id", "raw_score": "score"}}),
    schema=[Field(name="score", dtype=Int64)],
)
'''

FEATURE_STORE_YAML = '''project: spark_compat
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: spark
  spark_conf:
    spark.remote: "sc://127.0.0.1:{port}"
    spark.sql.session.timeZone: UTC
entity_key_serialization_version: 3
'''

# Feast's side, run in the Feast+Spark venv: the table source's table, apply, the historical
# join, materialization and the online read.
FEAST_SCRIPT = r'''
import json, sys
from datetime import datetime, timezone
import pandas as pd
from feast import FeatureStore

step, repo = sys.argv[1], sys.argv[2]
if step == "table":
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(sys.argv[3]).getOrCreate()
    spark.read.parquet(sys.argv[4]).write.mode("overwrite").saveAsTable("driver_daily")
    print(spark.table("driver_daily").count())
elif step == "historical":
    store = FeatureStore(repo_path=repo)
    entity_df = pd.read_parquet(sys.argv[3])
    table = store.get_historical_features(entity_df=entity_df, features=json.loads(sys.argv[4])).to_arrow()
    import pyarrow.parquet as pq
    pq.write_table(table, sys.argv[5])
elif step == "remote_historical":
    store = FeatureStore(repo_path=repo)
    table = store.get_historical_features(entity_df=sys.argv[3], features=json.loads(sys.argv[4])).to_arrow()
    import pyarrow.parquet as pq
    pq.write_table(table, sys.argv[5])
elif step == "materialize":
    store = FeatureStore(repo_path=repo)
    utc = lambda s: datetime.fromisoformat(s).replace(tzinfo=timezone.utc)
    store.materialize(utc(sys.argv[3]), utc(sys.argv[4]))
elif step == "online":
    store = FeatureStore(repo_path=repo)
    rows = json.loads(sys.argv[4])
    out = store.get_online_features(features=json.loads(sys.argv[3]), entity_rows=rows).to_dict()
    print(json.dumps(out, sort_keys=True, default=str))
'''


def feast(step, repo, *args):
    r = subprocess.run([FEAST_PYTHON, "-c", FEAST_SCRIPT, step, str(repo), *map(str, args)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"Feast {step} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r.stdout


def quiver(*args, cwd=None):
    r = subprocess.run([QUIVER, *map(str, args)], capture_output=True, text=True, timeout=900, cwd=cwd)
    assert r.returncode == 0, f"quiver {args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def applied(spark, tmp_path_factory):
    """The Feast repo, applied by Feast: (repo, data folder)."""
    repo = tmp_path_factory.mktemp("feast_spark_repo")
    data = repo / "data"
    data.mkdir()
    write_data(data)
    (repo / "features.py").write_text(textwrap.dedent(FEATURES_PY.format(data=data)))
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(port=spark))
    assert feast("table", repo, f"sc://127.0.0.1:{spark}", data / "driver_daily.parquet").strip() == "4"
    r = subprocess.run([FEAST_SPARK_VENV / "bin" / "feast", "apply"], cwd=repo, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"feast apply failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return repo, data


def as_rows(table, keys, features):
    """{(keys..., event time in µs): (features...)} with floats as Python floats."""
    d = table.to_pydict()
    times = [t.timestamp() if t is not None else None for t in d["event_timestamp"]]
    return {
        tuple(d[k][i] for k in keys) + (times[i],): tuple(d[f][i] for f in features)
        for i in range(table.num_rows)
    }


def test_historical_on_spark_equals_feasts(applied, tmp_path):
    repo, data = applied
    entities = data / "entities.parquet"
    feast("historical", repo, entities, json.dumps(FEATURES), tmp_path / "feast.parquet")
    quiver("historical", "--repo", repo, "--entities", entities, "--features", ",".join(FEATURES),
           "--out", tmp_path / "quiver.parquet")
    ours = pq.read_table(tmp_path / "quiver.parquet")
    theirs = pq.read_table(tmp_path / "feast.parquet")
    keys = ["driver_id", "customer_id"]
    features = [f.split(":")[1] for f in FEATURES]
    # Every entity row, in input order, duplicates included; Feast answers in its own order, so
    # the two are compared per distinct entity row.
    given = pq.read_table(entities)
    assert ours.num_rows == given.num_rows == 10
    assert ours.select(keys + ["event_timestamp"]).to_pylist() == given.to_pylist()
    q, f = as_rows(ours, keys, features), as_rows(theirs, keys, features)
    assert len(q) == 9
    assert q == f
    # With the entity rows read by Spark where they are and the output written by Spark itself
    # (a folder of Parquet parts): the same answers, in the same order.
    spark_out = tmp_path / "spark-out"
    said = quiver("historical", "--repo", repo, "--entities-sql",
                  f"SELECT * FROM parquet.`{entities}`", "--features", ",".join(FEATURES),
                  "--spark-out", spark_out)
    assert "10 rows" in said and "written by Spark" in said, said
    written = pq.read_table(sorted(str(p) for p in spark_out.glob("part-*.parquet")))
    assert written.select(keys).to_pylist() == given.select(keys).to_pylist()
    assert as_rows(written, keys, features) == f
    # Feast's remote offline store client, entity_df as SQL, against `quiver offline serve` on
    # the repo: Spark runs the query.
    port = free_port()
    client = tmp_path / "client"
    client.mkdir()
    (client / "feature_store.yaml").write_text(
        f"project: spark_compat\nregistry: {repo / 'data' / 'registry.db'}\nprovider: local\n"
        f"offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {port}\n"
        "entity_key_serialization_version: 3\n")
    log = open(tmp_path / "offline-serve.log", "wb")
    server = subprocess.Popen([QUIVER, "offline", "serve", "--repo", repo, "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, \
                    (tmp_path / "offline-serve.log").read_text()
                time.sleep(0.1)
        feast("remote_historical", client, f"SELECT * FROM parquet.`{entities}`",
              json.dumps(FEATURES), tmp_path / "remote.parquet")
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    remote = pq.read_table(tmp_path / "remote.parquet")
    assert remote.select(keys).to_pylist() == given.select(keys).to_pylist()
    assert as_rows(remote, keys, features) == f
    # And the answers are the rules', not just the same mistakes: spot checks.
    rows = dict(zip(range(10), ours.select(features).to_pylist()))
    assert rows[0] == {"conv_rate": 0.75, "trips": 21, "note": "b-new", "tier": "bronze",
                       "spend": 1.0, "score": 7}, "created breaks the event-time tie"
    assert rows[3]["trips"] == 40, "an entity row at exactly the feature row's time sees it"
    assert rows[4]["trips"] is None and rows[4]["tier"] is None, "past the ttl; C3 not yet"
    assert rows[5]["tier"] is None and rows[7]["trips"] is None, "unknown keys are null"
    assert rows[9] == {"conv_rate": None, "trips": None, "note": None, "tier": "late", "spend": 7.0,
                       "score": None}, "no ttl on customer_profile; driver_daily's 2 days passed"


def sqlite_rows(repo):
    with sqlite3.connect(repo / "data" / "online.db") as db:
        tables = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
        return {t: sorted(db.execute(
            f'SELECT entity_key, feature_name, value, event_ts FROM "{t}"').fetchall()) for t in tables}


def test_materialize_on_spark_equals_feasts(applied, tmp_path):
    repo, _ = applied
    # Two copies of the applied repo (registry and the online store's tables as `feast apply`
    # made them), one for each materializer; the sources stay where they are.
    copies = {}
    for who in ("feast", "quiver"):
        copy = tmp_path / who
        copy.mkdir()
        shutil.copy(repo / "feature_store.yaml", copy)
        shutil.copy(repo / "features.py", copy)
        (copy / "data").mkdir()
        shutil.copy(repo / "data" / "registry.db", copy / "data")
        shutil.copy(repo / "data" / "online.db", copy / "data")
        copies[who] = copy
    feast("materialize", copies["feast"], START, END)
    out = quiver("materialize", "--repo", copies["quiver"], START, END)
    ours, theirs = sqlite_rows(copies["quiver"]), sqlite_rows(copies["feast"])
    views = ["spark_compat_customer_profile", "spark_compat_driver_daily", "spark_compat_driver_stats"]
    assert all(v in theirs for v in views), theirs.keys()
    for v in views:
        assert ours[v] == theirs[v], f"{v}: quiver wrote {ours.get(v)}, Feast {theirs[v]}"
    # 2 drivers × 3 features, 3 customers × 2, 3 drivers × 1.
    assert [len(theirs[v]) for v in views] == [6, 3, 6], out
    # Feast reads what quiver wrote as what it wrote itself.
    rows = [{"driver_id": d, "customer_id": c} for d, c in [(1, "C1"), (2, "C3"), (3, "C2"), (7, "C9")]]
    read = {who: json.loads(feast("online", copies[who], json.dumps(FEATURES), json.dumps(rows)))
            for who in copies}
    assert read["quiver"] == read["feast"]
    assert read["quiver"]["trips"] == [30, 50, None, None]
    assert read["quiver"]["tier"] == ["gold", "late", "silver", None]
