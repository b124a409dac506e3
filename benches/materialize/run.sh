#!/usr/bin/env bash
# The materialization benchmark: N entities x 8 features (one Parquet file, one row per entity
# plus 10% older rows that lose), into the same fresh redis-server, by
#   feast     feast materialize START END            (Feast 0.67, the Python SDK)
#   quiver    quiver materialize --repo DIR START END (release build)
# and the ceiling of the machine for the same write shape:
#   redis-benchmark -P 64 HSET of 9 fields (8 features + _ts) on random keys.
# Wall time and peak RSS come from /usr/bin/time; rows/s = entities / wall time.
#
# Usage: benches/materialize/run.sh [ENTITIES=100000] [SKIP_FEAST=0] [RESOLUTION=s]
# RESOLUTION: event times in whole seconds (s: ~280 rows share each second at 1M) or with
# microseconds (us: nearly every row its own time, as in most event logs); the rows, keys and
# values are the same either way.
# Needs: redis-server, redis-benchmark, the Feast venv (compat/setup-venv.sh). QUIVER_BIN=path
# skips the release build and measures that binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
entities="${1:-100000}"
skip_feast="${2:-0}"
resolution="${3:-s}"
target_dir="${CARGO_TARGET_DIR:-target}"
venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$target_dir/feast-venv}" | tail -n 1)"
out="$target_dir/bench-materialize/$entities"
rm -rf "$out" && mkdir -p "$out/repo/data"
if [ -n "${QUIVER_BIN:-}" ]; then
  quiver="$(realpath "$QUIVER_BIN")"   # a release binary built earlier (e.g. of another commit)
else
  cargo build --release --locked -p quiver --bin quiver >&2
  quiver="$(cd "$target_dir" && pwd)/release/quiver"
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

repo="$out/repo"
cat > "$repo/feature_store.yaml" <<EOF
project: bench
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: 127.0.0.1:$port
offline_store:
  type: file
entity_key_serialization_version: 3
EOF
cat > "$repo/features.py" <<'EOF'
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
source = FileSource(name="user_stats_source", path="data/user_stats.parquet",
                    timestamp_field="event_timestamp", created_timestamp_column="created")
user_stats = FeatureView(
    name="user_stats", entities=[user], ttl=timedelta(days=7), source=source,
    schema=[Field(name=f"f{i}", dtype=t) for i, t in enumerate(
        [Float32, Float32, Float64, Float64, Int64, Int64, String, Int64])],
)
EOF
"$venv/bin/python" - "$repo/data/user_stats.parquet" "$entities" "$resolution" <<'EOF'
import sys
from datetime import datetime, timedelta, timezone
import numpy as np
import pandas as pd
path, n, resolution = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(7)
t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
older = n // 10
ids = np.concatenate([np.arange(n), rng.integers(0, n, older)])
seconds = np.concatenate([rng.integers(3600, 7200, n), rng.integers(0, 3600, older)])
m = len(ids)
# From a generator of their own: both resolutions have the same rows, keys and values.
micros = np.random.default_rng(11).integers(0, 1_000_000, m) if resolution == "us" else np.zeros(m, dtype=int)
ts = [t0 + timedelta(seconds=int(s), microseconds=int(u)) for s, u in zip(seconds, micros)]
pd.DataFrame({
    "user_id": ids.astype("int64"),
    "event_timestamp": pd.to_datetime(ts),
    "created": pd.to_datetime(ts),
    "f0": rng.random(m).astype("float32"), "f1": rng.random(m).astype("float32"),
    "f2": rng.random(m), "f3": rng.random(m),
    "f4": rng.integers(0, 1000, m), "f5": rng.integers(0, 10**9, m),
    "f6": [f"segment-{i % 50}" for i in range(m)], "f7": rng.integers(0, 2, m),
}).sort_values("event_timestamp").to_parquet(path, row_group_size=100_000)
EOF
(cd "$repo" && "$venv/bin/feast" apply >/dev/null)
start=2026-01-01T00:00:00
end=2026-01-02T00:00:00

measure() { # name, command...
  local name="$1"; shift
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$@" > "$out/$name.log" 2>&1
  read -r wall rss_kb < "$out/$name.time"
  local keys; keys="$(redis-cli -p "$port" dbsize)"
  printf '%-8s %8s entities  %7.2f s  %9.0f rows/s  peak RSS %6.0f MB  keys %s\n' \
    "$name" "$entities" "$wall" "$(echo "$entities / $wall" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)" "$keys"
}

if [ "$skip_feast" != 1 ]; then
  redis-cli -p "$port" flushall >/dev/null
  measure feast bash -c "cd '$repo' && '$venv/bin/feast' materialize $start $end"
fi
redis-cli -p "$port" flushall >/dev/null
measure quiver "$quiver" materialize --repo "$repo" "$start" "$end"
# Everything is stored already: every row is read back and skipped.
measure rerun "$quiver" materialize --repo "$repo" "$start" "$end"

# The ceiling: pipelined HSET of the same 9 fields (values of similar sizes) on random keys.
redis-cli -p "$port" flushall >/dev/null
fields=()
for i in $(seq 0 7); do fields+=("f$i" "vvvvvvvvv"); done
ceiling="$(redis-benchmark -p "$port" -P 64 -c 50 -n 1000000 -r "$entities" -q \
  HSET "key:__rand_int__" "${fields[@]}" _ts tttttttt | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)"
echo "ceiling  redis-benchmark -P 64 HSET 9 fields: $ceiling"
