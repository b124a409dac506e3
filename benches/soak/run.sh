#!/usr/bin/env bash
# The soak test: the lean sidecar under legitimate load at half its measured peak for MINUTES
# (default 10), with a cache smaller than the key space (so misses keep reading Redis), and
# abusive clients mixed in (benches/soak/abuse.py: slowloris, idle, oversized and malformed
# requests). Every 10 s it records the legitimate load's achieved rate, p50/p99 and errors, and
# the sidecar's RSS. It passes when no legitimate request failed and RSS stayed flat (the last
# minute's mean within 10% of the second minute's, once the cache has filled).
#
# Usage: benches/soak/run.sh [MINUTES=10] [KEYS=200000] [CACHE=16MiB]
# Needs: redis-server, the Feast venv (compat/setup-venv.sh; its pyarrow writes the data).
# Writes target/bench-soak/soak.jsonl and prints a summary line.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-10}"
keys="${2:-200000}"
cache="${3:-16MiB}"
target_dir="${CARGO_TARGET_DIR:-target}"
venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$target_dir/feast-venv}" | tail -n 1)"
out="$target_dir/bench-soak"
rm -rf "$out" && mkdir -p "$out/repo/data"

cargo build --release --locked -p quiver-cmd -p quiver-benches --bin quiver-sidecar --bin loadgen >&2
[ -x "$target_dir/debug/quiver" ] || cargo build --locked --bin quiver >&2
quiver="$target_dir/debug/quiver"
sidecar="$target_dir/release/quiver-sidecar"
loadgen="$target_dir/release/loadgen"

source benches/lib.sh
start_redis
cat > "$out/repo/feature_store.yaml" <<YAML
project: bench
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:$redis_port"
offline_store:
  type: file
entity_key_serialization_version: 3
YAML
cp benches/serve/features.yaml "$out/repo/"
"$quiver" apply --repo "$out/repo" >&2
# The data: KEYS drivers in a Parquet file, materialized by quiver (the serving benchmark shows
# the bytes equal Feast's; here only the volume matters, and Feast's writer takes minutes).
"$venv/bin/python" - "$out/repo/data/bench.parquet" "$keys" <<'PY'
import sys
import pyarrow as pa, pyarrow.parquet as pq
path, n = sys.argv[1], int(sys.argv[2])
ids = pa.array(range(1, n + 1), pa.int64())
t = pa.table({
    "driver_id": ids,
    "event_timestamp": pa.array([1_780_000_000_000_000] * n, pa.timestamp("us", tz="UTC")),
    "f0": pa.array([i * 0.001 for i in range(n)], pa.float32()), "f1": ids,
    "f2": [f"zone-{i % 97}" for i in range(n)], "f3": [i / 7 for i in range(n)],
    "f4": pa.array([i * 3 for i in range(n)], pa.int64()), "f5": pa.array([0.5] * n, pa.float32()),
    "f6": [f"tier-{i % 5}" for i in range(n)], "f7": pa.array([i % 1000 for i in range(n)], pa.int64()),
    "f8": [i * 0.25 for i in range(n)], "f9": [i % 2 == 0 for i in range(n)],
})
pq.write_table(t, path)
PY
"$quiver" materialize --repo "$out/repo" 2026-05-01T00:00:00 2026-06-30T00:00:00 >&2

port="$(free_port)"
QUIVER_LOG=warn "$sidecar" serve --repo "$out/repo" --port "$port" --cache-bytes "$cache" \
  --max-staleness 1h >"$out/sidecar.log" 2>&1 &
sidecar_pid=$!
pids+=($sidecar_pid)
wait_http "http://127.0.0.1:$port/health"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$sidecar_pid/status"; }

# Peak: an open-loop rate far above what the machine serves; what it achieves is the peak.
peak="$("$loadgen" "127.0.0.1:$port" 1000000 10 64 1 3 "$keys" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["rps"]))')"
rate=$((peak / 2))
echo "peak ${peak} rps; soaking at ${rate} rps for ${minutes} min, cache ${cache}, ${keys} keys" >&2

"$venv/bin/python" benches/soak/abuse.py 127.0.0.1 "$port" "$((minutes * 60))" >"$out/abuse.json" &
abuse_pid=$!
pids+=($abuse_pid)

for i in $(seq 1 $((minutes * 6))); do
  line="$("$loadgen" "127.0.0.1:$port" "$rate" 10 64 1 3 "$keys")"
  echo "{\"t_s\": $((i * 10)), \"rss_kib\": $(rss_kib), \"load\": $line}" | tee -a "$out/soak.jsonl"
done
wait "$abuse_pid" || true
echo "abusers saw: $(cat "$out/abuse.json")" >&2
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "sidecar not healthy after the soak" >&2; exit 1; }

python3 - "$out/soak.jsonl" "$peak" "$rate" "$cache" "$keys" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peak, rate, cache, keys = sys.argv[2:]
rss = [r["rss_kib"] for r in rows]
errors = sum(r["load"]["errors"] for r in rows)
early = statistics.mean(rss[6:12]) if len(rss) >= 12 else rss[0]
late = statistics.mean(rss[-6:])
summary = {
    "peak_rps": int(peak), "rate": int(rate), "cache": cache, "keys": int(keys),
    "windows": len(rows), "errors": errors,
    "achieved_rps_min": min(r["load"]["rps"] for r in rows),
    "p99_us_median": statistics.median(r["load"]["p99_us"] for r in rows),
    "p99_us_max": max(r["load"]["p99_us"] for r in rows),
    "rss_mib_min2": round(early / 1024, 1), "rss_mib_last": round(late / 1024, 1),
    "rss_mib_max": round(max(rss) / 1024, 1),
}
print(json.dumps(summary))
flat = late <= early * 1.10
if errors or not flat:
    sys.exit(f"soak failed: {errors} failed legitimate requests, RSS flat: {flat}")
PY
