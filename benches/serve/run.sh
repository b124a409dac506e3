#!/usr/bin/env bash
# The serving benchmark: the same Redis data (written by Feast) served by
#   bare      a hyper server returning a fixed body of the same size (the HTTP ceiling)
#   warm      quiver-sidecar serve (the lean binary; `quiver serve` runs the same code), cache warm
#   nocache   the same with --cache-bytes 0 (every request reads Redis)
#   feast     feast serve -w 2 --no-access-log --max-requests 100000000
# for 1 entity x 3 features and 10 entities x 10 features: peak throughput with wrk (1 thread,
# 8 connections), the Arrow IPC answer, and latency at half quiver's peak with benches' loadgen
# (open loop, 64 connections) against quiver and the bare server.
#
# Usage: benches/serve/run.sh [DURATION=10s] [KEYS=10000]
# With PIN=1: the client on core 0, the server on core 1 with one worker thread (a sidecar's
# usual budget), so the two do not fight over cores; Feast is skipped (it needs 2 workers).
# Needs: wrk, redis-server, the Feast venv (compat/setup-venv.sh). Prints one line per run and
# writes target/bench-serve/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null 2>&1 || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }
duration="${1:-10s}"
keys="${2:-10000}"
target_dir="${CARGO_TARGET_DIR:-target}"
venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$target_dir/feast-venv}" | tail -n 1)"
out="$target_dir/bench-serve"
rm -rf "$out" && mkdir -p "$out/repo/data"

# The server measured is the lean sidecar binary (what runs beside every model; the same serving
# code as `quiver serve`). `quiver apply` only sets the repo up, so a debug build does.
cargo build --release --locked -p quiver-cmd -p quiver-benches --bin quiver-sidecar --bin bare_http --bin loadgen >&2
# The workspace's test build leaves one (a lone `-p quiver` build would unify features
# differently and rebuild DataFusion for nothing).
[ -x "$target_dir/debug/quiver" ] || cargo build --locked --bin quiver >&2
quiver="$target_dir/debug/quiver"
sidecar="$target_dir/release/quiver-sidecar"
bare="$target_dir/release/bare_http"
loadgen="$target_dir/release/loadgen"

pin_client=(); pin_server=(); workers=()
if [ "${PIN:-0}" = 1 ]; then
  pin_client=(taskset -c 0); pin_server=(taskset -c 1); workers=(--workers 1)
  out="$out-pinned"; rm -rf "$out" && mkdir -p "$out/repo/data"
fi

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
"$venv/bin/python" benches/serve/load_data.py "$out/repo" "$keys" >&2

body_1x3='{"features":["bench:f0","bench:f1","bench:f2"],"entities":{"driver_id":[1]}}'
body_10x10='{"features":["bench:f0","bench:f1","bench:f2","bench:f3","bench:f4","bench:f5","bench:f6","bench:f7","bench:f8","bench:f9"],"entities":{"driver_id":[1,2,3,4,5,6,7,8,9,10]}}'

run_wrk() { # name shape entities features port [accept]
  local name="$1" shape="$2" n="$3" f="$4" port="$5" accept="${6:-}"
  # Warm-up pass (fills caches), then the measured run. Feast keeps getting faster for its
  # first seconds (about 2x from 3 s to 15 s of load), so it gets a longer warm-up.
  local warm=3s
  [ "$name" = feast ] && warm=20s
  BENCH_ACCEPT="$accept" BENCH_ENTITIES="$n" BENCH_FEATURES="$f" BENCH_KEYS="$keys" "${pin_client[@]}" wrk -t1 -c8 -d"$warm" -s benches/serve/post.lua "http://127.0.0.1:$port" >/dev/null
  local line
  line="$(BENCH_ACCEPT="$accept" BENCH_ENTITIES="$n" BENCH_FEATURES="$f" BENCH_KEYS="$keys" "${pin_client[@]}" wrk -t1 -c8 -d"$duration" -s benches/serve/post.lua "http://127.0.0.1:$port" | grep '^RESULT' | sed 's/^RESULT //')"
  echo "{\"target\": \"$name\", \"shape\": \"$shape\", \"tool\": \"wrk\", \"result\": $line}" | tee -a "$out/results.jsonl"
  last_rps="$(echo "$line" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["rps"]))')"
}

run_rate() { # name shape entities features port rate: latency at a fixed rate (open loop)
  local name="$1" shape="$2" n="$3" f="$4" port="$5" rate="$6"
  local line
  line="$("${pin_client[@]}" "$loadgen" "127.0.0.1:$port" "$rate" "${duration%s}" 64 "$n" "$f" "$keys")"
  echo "{\"target\": \"$name\", \"shape\": \"$shape\", \"tool\": \"loadgen\", \"result\": $line}" | tee -a "$out/results.jsonl"
}

serve_quiver() { # port extra-args...
  local port="$1"; shift
  QUIVER_LOG=warn "${pin_server[@]}" "$sidecar" serve --repo "$out/repo" --port "$port" "${workers[@]}" "$@" >/dev/null 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/health"
}

stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

for shape in 1x3 10x10; do
  if [ "$shape" = 1x3 ]; then n=1; f=3; body="$body_1x3"; else n=10; f=10; body="$body_10x10"; fi

  port="$(free_port)"; serve_quiver "$port" --max-staleness 1h
  curl -sf -X POST -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$port/get-online-features" > "$out/body-$shape.json"
  run_wrk quiver-warm "$shape" "$n" "$f" "$port"
  half=$((last_rps / 2))
  run_rate quiver-warm "$shape" "$n" "$f" "$port" "$half"
  run_wrk quiver-warm-arrow "$shape" "$n" "$f" "$port" application/vnd.apache.arrow.stream
  stop_last

  # bare: a fixed body the size of quiver's JSON answer to this shape.
  port="$(free_port)"
  "${pin_server[@]}" "$bare" "$port" "$out/body-$shape.json" ${workers:+1} & pids+=($!)
  wait_http "http://127.0.0.1:$port/"
  run_wrk bare "$shape" "$n" "$f" "$port"
  run_rate bare "$shape" "$n" "$f" "$port" "$half"
  stop_last

  port="$(free_port)"; serve_quiver "$port" --cache-bytes 0
  run_wrk quiver-nocache "$shape" "$n" "$f" "$port"
  stop_last

  [ "${PIN:-0}" = 1 ] && continue
  port="$(free_port)"
  (cd "$out/repo" && exec "$venv/bin/feast" serve -p "$port" -w 2 --no-access-log --max-requests 100000000 >/dev/null 2>&1) &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/health"
  run_wrk feast "$shape" "$n" "$f" "$port"
  stop_last
done
