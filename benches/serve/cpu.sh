#!/usr/bin/env bash
# The server's own CPU time per request, quiver-warm against the bare server, under the same wrk
# load (1 thread, 8 connections): utime + stime from /proc/PID/stat over a measured run, divided
# by the requests served. Two interleaved rounds. Run benches/serve/run.sh first: this reuses its
# release build and repo.
#
# Usage: benches/serve/cpu.sh [SHAPE=10x10|1x3] [DURATION_S=8] [ROUNDS=2]
# With QUIVER_ALT=/path/to/another/quiver: that build is measured too, in the same rounds (an A/B
# of a change: build the old commit's release binary, copy it aside, build the new one).
set -euo pipefail
cd "$(dirname "$0")/../.."
shape="${1:-10x10}"
secs="${2:-8}"
rounds="${3:-2}"
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/bench-serve"
venv="${QUIVER_FEAST_VENV:-$target_dir/feast-venv}"
[ -d "$out/repo" ] || { echo "run benches/serve/run.sh first" >&2; exit 1; }
command -v wrk >/dev/null 2>&1 || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
sed -i "s/connection_string: .*/connection_string: \"127.0.0.1:$redis_port\"/" "$out/repo/feature_store.yaml"
"$venv/bin/python" benches/serve/load_data.py "$out/repo" 10000 >/dev/null 2>&1

if [ "$shape" = 1x3 ]; then n=1; f=3; else n=10; f=10; fi
features="$(python3 -c "print(','.join('\"bench:f%d\"' % i for i in range($f)))")"
entities="$(python3 -c "print(','.join(str(i) for i in range(1, $n + 1)))")"
body="{\"features\":[$features],\"entities\":{\"driver_id\":[$entities]}}"

# start_server NAME URL_PATH COMMAND...: runs COMMAND in the background (its port is $port; a
# function must `exec` the server, so that the pid measured is the server's), waits for URL_PATH
# to answer, and leaves its port and pid in NAME_port and NAME_pid.
start_server() {
  local name="$1" path="$2"; shift 2
  port="$(free_port)"
  "$@" >/dev/null 2>&1 &
  pids+=($!)
  printf -v "${name}_port" '%s' "$port"; printf -v "${name}_pid" '%s' "$!"
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port$path" && break; sleep 0.1; done
}
serve_quiver() { QUIVER_LOG=warn exec "$1" serve --repo "$out/repo" --port "$port" --max-staleness 1h; }

start_server q /health serve_quiver "$target_dir/release/quiver"
curl -sf -X POST -d "$body" "http://127.0.0.1:$q_port/get-online-features" > "$out/cpu-body-$shape.json"
if [ -n "${QUIVER_ALT:-}" ]; then
  start_server a /health serve_quiver "$QUIVER_ALT"
fi
serve_bare() { exec "$target_dir/release/bare_http" "$port" "$out/cpu-body-$shape.json"; }
start_server b / serve_bare

ticks="$(getconf CLK_TCK)"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wrk_run() { BENCH_ENTITIES=$n BENCH_FEATURES=$f BENCH_KEYS=10000 wrk -t1 -c8 -d"$2" -s benches/serve/post.lua "http://127.0.0.1:$1"; }
measure() { # name pid port
  wrk_run "$3" 3s >/dev/null
  local before after line rps
  before="$(cpu "$2")"
  line="$(wrk_run "$3" "${secs}s" | grep '^RESULT' | sed 's/^RESULT //')"
  after="$(cpu "$2")"
  rps="$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')"
  python3 -c "print('%-12s %s  %9.0f rps  server CPU %.2f us/request' % ('$1', '$shape', $rps, ($after - $before) / $ticks * 1e6 / ($rps * $secs)))"
}
for _ in $(seq 1 "$rounds"); do
  measure quiver-warm "$q_pid" "$q_port"
  [ -n "${QUIVER_ALT:-}" ] && measure quiver-alt "$a_pid" "$a_port"
  measure bare "$b_pid" "$b_port"
done
