#!/usr/bin/env bash
# The Spark benchmark (issue 20): one feature view (5 features, ttl 2 days, a created column) of
# FEATURE_ROWS rows over FEATURE_ROWS/10 drivers in 30 days, joined point-in-time to ENTITY_ROWS
# entity rows (5% unknown drivers), in one run, by
#   quiver        `quiver historical` on its DataFusion engine (release build), to Parquet
#   spark-sql     the scalable Spark SQL formulation (one union, one window; spark_sql_join.py)
#                 through Spark Connect, written by Spark to Parquet: the plan quiver on Spark
#                 is meant to run, and what docs/spark.md's sizing extrapolates from
#   feast-spark   Feast 0.67's Spark offline store (offline_store: type: spark, spark.remote),
#                 get_historical_features(...).to_arrow() to Parquet (SKIP_FEAST=1 skips it)
#   quiver-spark  `quiver historical` on that Feast-applied repo (type: spark, a SparkSource) as
#                 it is: quiver's union-and-window join run by Spark, the result streamed back
# each Spark leg on a fresh Spark Connect server (pyspark's own jar, local[2], driver memory
# SPARK_MEMORY, event log on), so its peak RSS and event-log totals are its own; then the
# materialization of the same view into a private redis-server, unsharded and as 1, 2 and 4
# `quiver materialize --shard i/N` processes at once.
# Wall time and peak RSS from /usr/bin/time (Spark legs: the client's wall time, plus the server
# JVM's VmHWM); shuffle bytes, spill and per-task peak execution memory from the event log
# (eventlog.py). quiver's, spark-sql's, quiver-spark's and Feast's answers are compared.
#
# Usage: benches/spark/run.sh [FEATURE_ROWS=1000000] [ENTITY_ROWS=100000]
# Env: SKIP_FEAST=1, FEAST_TIMEOUT (s, default 1800), SKIP_MATERIALIZE=1, SPARK_MEMORY (default 4g),
# QUIVER_BIN=path (skips the release build).
# Needs: Java 17; pyspark 4.3.0 (compat/setup-spark.sh's venv, or QUIVER_SPARK_VENV); the Feast
# venv (compat/setup-venv.sh: pyarrow for the data); feast[spark] (compat/setup-feast-spark-venv.sh,
# or QUIVER_FEAST_SPARK_VENV);
# redis-server.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/lib.sh
feature_rows="${1:-1000000}"
entity_rows="${2:-100000}"
spark_memory="${SPARK_MEMORY:-4g}"
target_dir="${CARGO_TARGET_DIR:-target}"
feast_venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$HOME/.cache/quiver-ci/feast-venv}" | tail -n 1)"
py="$feast_venv/bin/python"
spark_venv="${QUIVER_SPARK_VENV:-$HOME/.cache/quiver-ci/spark-venv}"
if [ -x compat/setup-spark.sh ]; then spark_venv="$(compat/setup-spark.sh "$spark_venv" | tail -n 1)"; fi
spark_home="$("$spark_venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
[ -x "$spark_home/sbin/start-connect-server.sh" ] || { echo "no Spark Connect server in $spark_home" >&2; exit 1; }
# The Spark Connect client (pyspark[connect], with pandas) and Feast's Spark store.
bench_venv="$(compat/setup-feast-spark-venv.sh | tail -n 1)"
mkdir -p "$target_dir"
out="$(cd "$target_dir" && pwd)/bench-spark/${feature_rows}x${entity_rows}"
rm -rf "$out" && mkdir -p "$out/data"
if [ -n "${QUIVER_BIN:-}" ]; then
  quiver="$(realpath "$QUIVER_BIN")"
else
  cargo build --release --locked -p quiver --bin quiver >&2
  quiver="$(cd "$target_dir" && pwd)/release/quiver"
fi
data="$out/data"
# quiver reads sources inside its repo or where the operator allows: here, the data folder.
export QUIVER_ALLOW_LOCATIONS="$data"
"$py" benches/spark/gen.py "$data" "$feature_rows" "$entity_rows"

# quiver's repo: YAML definitions over the Parquet file.
mkdir -p "$out/quiver/data"
cat > "$out/quiver/features.yaml" <<YAML
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: driver_stats_source, type: file, path: $data/driver_stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 2d
    source: driver_stats_source
    online: true
    schema:
      - {name: f0, dtype: Float32}
      - {name: f1, dtype: Float64}
      - {name: f2, dtype: Int64}
      - {name: f3, dtype: Int64}
      - {name: f4, dtype: String}
YAML
quiver_config() { # the online store's lines
  printf 'project: bench\nregistry: data/registry.db\nprovider: local\nonline_store:\n%s\noffline_store:\n  type: file\nentity_key_serialization_version: 3\n' \
    "$1" > "$out/quiver/feature_store.yaml"
}
quiver_config "$(printf '  type: sqlite\n  path: data/online.db')"
"$quiver" apply --repo "$out/quiver" >/dev/null

measure() { # name, command...: prints "name wall_s peak_mib"; fails when the command does
  local name="$1"; shift
  local t="$out/$name.time"
  if /usr/bin/time -f '%e %M' -o "$t" "$@" >"$out/$name.log" 2>&1; then
    awk -v n="$name" '{printf "%-14s %8.2f s %8.0f MiB peak RSS (client)\n", n, $1, $2/1024}' "$t"
  else
    echo "$name failed or timed out (see $out/$name.log)"; tail -3 "$out/$name.log" >&2
    return 1
  fi
}

# Every process below `$1` (this script's own children only).
descendants() { local p; for p in $(pgrep -P "$1" || true); do echo "$p"; descendants "$p"; done; }

# A Spark Connect server of pyspark's own on a free loopback port, its event log in
# $out/events-NAME; sets spark_port and spark_pid (its JVM, found among this script's children).
start_spark() {
  local name="$1" launcher p
  spark_port="$(free_port)"
  mkdir -p "$out/events-$name" "$out/spark-$name"
  SPARK_NO_DAEMONIZE=1 SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$out/spark-$name" \
    SPARK_PID_DIR="$out/spark-$name" SPARK_HOME="$spark_home" \
    "$spark_home/sbin/start-connect-server.sh" --master 'local[2]' --driver-memory "$spark_memory" \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port="$spark_port" \
    --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
    --conf spark.ui.enabled=false --conf spark.local.dir="$out/spark-$name" \
    --conf spark.sql.session.timeZone=UTC \
    --conf spark.eventLog.enabled=true --conf spark.eventLog.compress=false \
    --conf spark.eventLog.dir="file://$out/events-$name" \
    >"$out/spark-$name/server.log" 2>&1 &
  launcher=$!
  pids+=("$launcher")
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$spark_port") 2>/dev/null && break
    sleep 0.2
  done
  spark_pid=""
  for p in "$launcher" $(descendants "$launcher"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = java ] && { spark_pid="$p"; break; }
  done
  [ -n "$spark_pid" ] || { echo "the Spark server did not start: $out/spark-$name/server.log" >&2; exit 1; }
  pids+=("$spark_pid")
}
stop_spark() { # name: prints the JVM's peak RSS and the event-log totals
  local hwm
  hwm="$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$spark_pid/status" 2>/dev/null || echo "?")"
  kill "$spark_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$spark_pid" 2>/dev/null || break; sleep 0.1; done
  echo "               server JVM peak RSS ${hwm} MiB; $("$py" benches/spark/eventlog.py "$out/events-$1")"
}

echo "== ${feature_rows} feature rows x ${entity_rows} entity rows; $(nproc) cores (load average $(cut -d" " -f1-3 /proc/loadavg)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/2^20}' /proc/meminfo); Spark local[2], driver memory $spark_memory; $(date -u +%FT%TZ)"
features=driver_stats:f0,driver_stats:f1,driver_stats:f2,driver_stats:f3,driver_stats:f4
# A debug build says so in every line it measures: its times are not quiver's.
qname=quiver
case "$quiver" in */debug/*) qname="quiver(debug)";; esac
measure "$qname" "$quiver" historical --repo "$out/quiver" --entities "$data/entities.parquet" \
  --features "$features" --out "$out/quiver.parquet" || true

start_spark sql
measure spark-sql "$bench_venv/bin/python" benches/spark/spark_sql_join.py "sc://127.0.0.1:$spark_port" \
  "$data/driver_stats.parquet" "$data/entities.parquet" "$out/spark-sql.parquet" || true
stop_spark sql

# Feast's repo: offline_store type spark, a SparkSource, applied by Feast; quiver-spark reads it
# as it is.
feast_repo="$out/feast"
mkdir -p "$feast_repo/data"
cat > "$feast_repo/features.py" <<PY
from datetime import timedelta
from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float32, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = SparkSource(name="driver_stats_source", path="$data/driver_stats.parquet", file_format="parquet",
                     timestamp_field="event_timestamp", created_timestamp_column="created")
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(days=2), source=source,
    schema=[Field(name="f0", dtype=Float32), Field(name="f1", dtype=Float64),
            Field(name="f2", dtype=Int64), Field(name="f3", dtype=Int64),
            Field(name="f4", dtype=String)],
)
PY
feast_config() { # the Spark server's port
  printf 'project: bench\nregistry: data/registry.db\nprovider: local\nonline_store:\n  type: sqlite\n  path: data/online.db\noffline_store:\n  type: spark\n  spark_conf:\n    spark.remote: "sc://127.0.0.1:%s"\n    spark.sql.session.timeZone: UTC\nentity_key_serialization_version: 3\n' \
    "$1" > "$feast_repo/feature_store.yaml"
}

if [ "${SKIP_FEAST:-0}" != "1" ]; then
  start_spark feast
  feast_config "$spark_port"
  (cd "$feast_repo" && "$bench_venv/bin/feast" apply >"$out/feast-apply.log" 2>&1)
  measure feast-spark timeout "${FEAST_TIMEOUT:-1800}" "$bench_venv/bin/python" benches/spark/feast_spark.py "$feast_repo" \
    "$data/entities.parquet" "$out/feast-spark.parquet" || true
  stop_spark feast
else
  echo "feast-spark    skipped (SKIP_FEAST=1)"
fi

# quiver on Spark: the same Feast-applied repo, unmodified, on a fresh server (applied here when
# the Feast leg was skipped).
start_spark quiver
feast_config "$spark_port"
if [ -f "$feast_repo/data/registry.db" ] ||
    (cd "$feast_repo" && "$bench_venv/bin/feast" apply >"$out/feast-apply.log" 2>&1); then
  measure "$qname-spark" "$quiver" historical --repo "$feast_repo" --entities "$data/entities.parquet" \
    --features "$features" --out "$out/quiver-spark.parquet" || true
else
  echo "quiver-spark   not run: feast apply failed (see $out/feast-apply.log)"
fi
stop_spark quiver

"$py" benches/spark/check.py "$out"

if [ "${SKIP_MATERIALIZE:-0}" != "1" ]; then
  start_redis
  quiver_config "$(printf '  type: redis\n  connection_string: 127.0.0.1:%s' "$redis_port")"
  echo "-- quiver materialize of the whole 30 days into a private redis-server (N shards: N processes at once)"
  for shards in 0 1 2 4; do
    redis-cli -p "$redis_port" flushall >/dev/null
    began=$(date +%s.%N)
    mpids=()
    if [ "$shards" = 0 ]; then
      "$quiver" materialize --repo "$out/quiver" 2026-01-01T00:00:00 2026-02-01T00:00:00 >"$out/mat-0.log" 2>&1 &
      mpids+=($!)
      name="unsharded"
    else
      for i in $(seq 0 $((shards - 1))); do
        "$quiver" materialize --repo "$out/quiver" --shard "$i/$shards" 2026-01-01T00:00:00 2026-02-01T00:00:00 \
          >"$out/mat-$shards-$i.log" 2>&1 &
        mpids+=($!)
      done
      name="$shards shard(s)"
    fi
    failed=0
    for p in "${mpids[@]}"; do wait "$p" || failed=$((failed + 1)); done
    ended=$(date +%s.%N)
    if [ "$failed" != 0 ]; then
      echo "$name: $failed process(es) failed: $(grep -h -m1 '^error' "$out"/mat-*.log | head -n 1)"
      continue
    fi
    # Entity keys: every key but a sharded run's one marker (--shard 0/1 is unsharded).
    keys=$(( $(redis-cli -p "$redis_port" dbsize) - (shards > 1 ? 1 : 0) ))
    awk -v n="$name" -v a="$began" -v b="$ended" -v k="$keys" \
      'BEGIN {printf "%-14s %8.2f s  %d keys  %.0f keys/s\n", n, b - a, k, k / (b - a)}'
  done
fi
