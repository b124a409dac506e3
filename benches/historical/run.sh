#!/usr/bin/env bash
# The historical-retrieval benchmark: one feature view (5 features, ttl 2 days, a created
# column) of FEATURE_ROWS rows over FEATURE_ROWS/50 drivers in 30 days, joined point-in-time to
# ENTITY_ROWS entity rows (5% unknown drivers), result written to Parquet, by
#   quiver   quiver historical (release build)
#   duckdb   DuckDB's ASOF LEFT JOIN with the same rules (created breaks event-time ties, the ttl
#            applied after, input order kept), COPY to Parquet
#   feast    Feast 0.67's file offline store, get_historical_features(...).to_df() to Parquet
#            (skipped with SKIP_FEAST=1, and stopped after 15 minutes)
# Wall time and peak RSS from /usr/bin/time; quiver's and DuckDB's outputs are compared.
# With MEMORY_LIMIT set (e.g. 2GiB) quiver runs with --memory-limit.
#
# Usage: benches/historical/run.sh [FEATURE_ROWS=200000] [ENTITY_ROWS=100000] [SKIP_FEAST=0]
# Needs: the Feast venv (compat/setup-venv.sh, which installs duckdb).
set -euo pipefail
cd "$(dirname "$0")/../.."
feature_rows="${1:-200000}"
entity_rows="${2:-100000}"
skip_feast="${3:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$target_dir/feast-venv}" | tail -n 1)"
py="$venv/bin/python"
out="$target_dir/bench-historical/${feature_rows}x${entity_rows}"
rm -rf "$out" && mkdir -p "$out/repo/data"
cargo build --release --locked -p quiver --bin quiver >&2
quiver="$(cd "$target_dir" && pwd)/release/quiver"
repo="$(cd "$out/repo" && pwd)"

cat > "$repo/feature_store.yaml" <<EOF
project: bench
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
EOF
cat > "$repo/features.py" <<'EOF'
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="driver_stats_source", path="data/driver_stats.parquet",
                    timestamp_field="event_timestamp", created_timestamp_column="created")
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(days=2), source=source,
    schema=[Field(name="f0", dtype=Float32), Field(name="f1", dtype=Float64),
            Field(name="f2", dtype=Int64), Field(name="f3", dtype=Int64),
            Field(name="f4", dtype=String)],
)
EOF
"$py" - "$repo" "$feature_rows" "$entity_rows" <<'EOF'
import sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
repo, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(11)
drivers = max(n // 50, 1)
t0 = np.datetime64("2026-01-01T00:00:00", "us").astype("int64")
span = 30 * 86400 * 10**6
ts = t0 + rng.integers(0, span // 10**6, n) * 10**6   # whole seconds: some ties on (driver, ts)
chunk = 1_000_000
writer = None
for s in range(0, n, chunk):
    e = min(n, s + chunk)
    k = e - s
    t = pa.table({
        "driver_id": pa.array(rng.integers(0, drivers, k), pa.int64()),
        "event_timestamp": pa.array(ts[s:e], pa.timestamp("us", "UTC")),
        "created": pa.array(ts[s:e] + rng.integers(0, 3600 * 10**6, k), pa.timestamp("us", "UTC")),
        "f0": pa.array(rng.random(k).astype("float32")),
        "f1": pa.array(rng.random(k)),
        "f2": pa.array(rng.integers(0, 1000, k), pa.int64()),
        "f3": pa.array(np.arange(s, e), pa.int64()),
        "f4": pa.array([f"segment-{i % 50}" for i in range(s, e)]),
    })
    if writer is None:
        writer = pq.ParquetWriter(f"{repo}/data/driver_stats.parquet", t.schema)
    writer.write_table(t, row_group_size=256 * 1024)
writer.close()
pq.write_table(pa.table({
    "driver_id": pa.array(rng.integers(0, int(drivers * 1.05) + 1, m), pa.int64()),
    "event_timestamp": pa.array(t0 + rng.integers(0, span, m), pa.timestamp("us", "UTC")),
}), f"{repo}/entities.parquet")
EOF
(cd "$repo" && "$venv/bin/feast" apply >/dev/null)

measure() { # name, command...: prints "name wall_s peak_mib"
  local name="$1"; shift
  local t="$out/$name.time"
  if /usr/bin/time -f '%e %M' -o "$t" "$@" >"$out/$name.log" 2>&1; then
    awk -v n="$name" '{printf "%-8s %8.2f s %8.0f MiB\n", n, $1, $2/1024}' "$t"
  else
    echo "$name failed or timed out (see $out/$name.log)"; tail -3 "$out/$name.log" >&2
  fi
}

limit_args=()
[ -n "${MEMORY_LIMIT:-}" ] && limit_args=(--memory-limit "$MEMORY_LIMIT")
echo "== ${feature_rows} feature rows x ${entity_rows} entity rows; $(nproc) cores; $(date -u +%FT%TZ)"
measure quiver "$quiver" historical --repo "$repo" --entities "$repo/entities.parquet" \
  --features driver_stats:f0,driver_stats:f1,driver_stats:f2,driver_stats:f3,driver_stats:f4 \
  "${limit_args[@]}" --out "$out/quiver.parquet"

cat > "$out/duck.py" <<EOF
import duckdb
duckdb.sql("""
COPY (
  WITH e AS (SELECT *, row_number() OVER () AS rid FROM '$repo/entities.parquet'),
  f AS (SELECT * FROM '$repo/data/driver_stats.parquet'
        QUALIFY row_number() OVER (PARTITION BY driver_id, event_timestamp ORDER BY created DESC) = 1)
  SELECT e.driver_id, e.event_timestamp,
    CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN f.f0 END AS f0,
    CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN f.f1 END AS f1,
    CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN f.f2 END AS f2,
    CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN f.f3 END AS f3,
    CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN f.f4 END AS f4
  FROM e ASOF LEFT JOIN f
    ON e.driver_id = f.driver_id AND e.event_timestamp >= f.event_timestamp
  ORDER BY e.rid
) TO '$out/duck.parquet' (FORMAT parquet)
""")
EOF
measure duckdb "$py" "$out/duck.py"

if [ "$skip_feast" != "1" ]; then
  cat > "$out/feast_run.py" <<EOF
import pandas as pd
from feast import FeatureStore
store = FeatureStore(repo_path="$repo")
entities = pd.read_parquet("$repo/entities.parquet")
df = store.get_historical_features(entity_df=entities, features=[f"driver_stats:f{i}" for i in range(5)]).to_df()
df.to_parquet("$out/feast.parquet")
print(len(df), "rows")
EOF
  measure feast timeout 900 "$py" "$out/feast_run.py"
else
  echo "feast    skipped"
fi

"$py" - "$out" <<'EOF'
import sys, pandas as pd
out = sys.argv[1]
q = pd.read_parquet(f"{out}/quiver.parquet")
d = pd.read_parquet(f"{out}/duck.parquet")
assert len(q) == len(d), (len(q), len(d))
for c in ["driver_id", "f0", "f1", "f2", "f3", "f4"]:
    a, b = q[c], d[c]
    same = (a.isna() & b.isna()) | (a == b)
    assert same.all(), f"{c}: {(~same).sum()} rows differ"
print(f"check    quiver == duckdb on all {len(q)} rows ({q['f3'].notna().sum()} with features)")
EOF
