#!/usr/bin/env bash
# KServe enrichment benchmark (issue 18): one model, three ways to get the features to it, in
# one run on the same Redis data (written by Feast):
#   direct   the model (a tiny kserve.Model: a weighted sum, model.py) called with the features
#            already in the request: {"instances": [[acc_rate, avg_daily_trips, conv_rate, id]]}
#   sample   KServe's transformer pattern: KServe's own Feast sample transformer
#            (compat/kserve_feast_sample, a kserve.Model whose preprocess posts to `feast serve`)
#            in front of the model: {"instances": [[id]]}
#   proxy    the ceiling of any enriching proxy: benches' bare_proxy (the sidecar's server core
#            and model-server client, forwarding each request unchanged, no lookup) in front
#            of the model, sent the direct leg's bodies: what it adds over direct is the
#            second HTTP exchange alone
#   enrich   `quiver-sidecar serve --enrich enrich.yaml --upstream <model>` in front of the
#            model: {"instances": [{"driver_id": id}]}; skipped when `quiver serve --help` has
#            no --enrich (a build without issue 18's enrichment). Its own share of each
#            request (quiver_enrich_added_seconds: everything but the model server's time,
#            read from /metrics before and after the one-connection run) is reported too.
# Each leg: latency with one connection (wrk -c1: no queueing, the cost of one request) and
# peak throughput with 8 (wrk -c8), after a warm-up; the added latency of `sample` and `enrich`
# over `direct`. KServe servers run with --enable_grpc false, --enable_latency_logging false and
# --configure_logging false (the sample logs every body at INFO otherwise); `feast serve` as in
# benches/serve (-w 2 --no-access-log).
#
# Usage: benches/kserve/run.sh [DURATION=10s] [KEYS=10000]
# QUIVER_BIN: the quiver that applies the repo (default: the workspace's debug build);
# SIDECAR_BIN / PROXY_BIN: the servers of legs enrich and proxy (default: release builds of
# quiver-sidecar and bare_proxy).
# Needs: wrk, redis-server, the Feast venv (compat/setup-venv.sh), the KServe venv
# (compat/setup-kserve-venv.sh). Prints one JSON line per measurement and a summary, and
# writes $CARGO_TARGET_DIR/bench-kserve/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null 2>&1 || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }
duration="${1:-10s}"
keys="${2:-10000}"
target_dir="${CARGO_TARGET_DIR:-target}"
feast_venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$target_dir/feast-venv}" | tail -n 1)"
kserve_venv="$(compat/setup-kserve-venv.sh "${QUIVER_KSERVE_VENV:-$target_dir/kserve-venv}" | tail -n 1)"
out="$target_dir/bench-kserve"
rm -rf "$out" && mkdir -p "$out/repo/data"
results="$out/results.jsonl"

# `quiver apply` only sets the repo up, so the workspace's debug build does (a lone
# `-p quiver` build would unify features differently and rebuild DataFusion for nothing).
quiver="${QUIVER_BIN:-$target_dir/debug/quiver}"
[ -x "$quiver" ] || cargo build --locked --bin quiver >&2

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
cp benches/kserve/features.yaml "$out/repo/"
"$quiver" apply --repo "$out/repo" >&2
"$feast_venv/bin/python" benches/kserve/load_data.py "$out/repo" "$keys" >&2

kserve_flags=(--enable_grpc false --enable_latency_logging false --configure_logging false)
model_port="$(free_port)"
"$kserve_venv/bin/python" benches/kserve/model.py --model_name driver-ranker --http_port "$model_port" \
  "${kserve_flags[@]}" >"$out/model.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$model_port/v1/models/driver-ranker"

predict() { # port leg: one request, the answer printed
  local body
  case "$2" in
    direct|proxy) body='{"instances":[[0.5,7,0.25,7]]}' ;;
    sample) body='{"instances":[[7]]}' ;;
    enrich) body='{"instances":[{"driver_id":7}]}' ;;
  esac
  curl -sf -X POST -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$1/v1/models/driver-ranker:predict"
}

run_wrk() { # leg port connections
  local leg="$1" port="$2" c="$3" warm=3s line
  [ "$leg" = sample ] && warm=10s   # feast serve speeds up over its first seconds
  BENCH_LEG="$leg" BENCH_KEYS="$keys" wrk -t1 -c"$c" -d"$warm" -s benches/kserve/predict.lua "http://127.0.0.1:$port" >/dev/null
  line="$(BENCH_LEG="$leg" BENCH_KEYS="$keys" wrk -t1 -c"$c" -d"$duration" -s benches/kserve/predict.lua "http://127.0.0.1:$port" | grep '^RESULT' | sed 's/^RESULT //')"
  echo "{\"leg\": \"$leg\", \"connections\": $c, \"result\": $line}" | tee -a "$results"
}

# (a) direct
echo "direct: $(predict "$model_port" direct)" >&2
run_wrk direct "$model_port" 1
run_wrk direct "$model_port" 8

# (b) KServe's Feast sample transformer -> feast serve, -> the model
feast_port="$(free_port)"
(cd "$out/repo" && exec "$feast_venv/bin/feast" serve -p "$feast_port" -w 2 --no-access-log --max-requests 100000000 >"$out/feast.log" 2>&1) &
pids+=($!)
wait_http "http://127.0.0.1:$feast_port/health"
transformer_port="$(free_port)"
(cd compat/kserve_feast_sample && exec "$kserve_venv/bin/python" run_driver_transformer.py \
  --model_name driver-ranker --predictor_host "127.0.0.1:$model_port" --http_port "$transformer_port" \
  "${kserve_flags[@]}" --feast_serving_url "127.0.0.1:$feast_port" --entity_id_name driver_id \
  --feature_refs driver_hourly_stats:conv_rate driver_hourly_stats:acc_rate driver_hourly_stats:avg_daily_trips \
  >"$out/transformer.log" 2>&1) &
pids+=($!)
wait_http "http://127.0.0.1:$transformer_port/v1/models/driver-ranker"
echo "sample: $(predict "$transformer_port" sample)" >&2
run_wrk sample "$transformer_port" 1
run_wrk sample "$transformer_port" 8

# The release servers of legs proxy and enrich (one build: both packages' features unified
# once, as benches/serve does).
sidecar="${SIDECAR_BIN:-}"
proxy="${PROXY_BIN:-}"
if [ -z "$sidecar" ] || [ -z "$proxy" ]; then
  cargo build --release --locked -p quiver-cmd -p quiver-benches --bin quiver-sidecar --bin bare_proxy >&2
  sidecar="${sidecar:-$target_dir/release/quiver-sidecar}"
  proxy="${proxy:-$target_dir/release/bare_proxy}"
fi

# (c) the ceiling: a bare proxy hop in front of the model
proxy_port="$(free_port)"
"$proxy" "$proxy_port" "http://127.0.0.1:$model_port" >"$out/proxy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$proxy_port/v1/models/driver-ranker"
echo "proxy: $(predict "$proxy_port" proxy)" >&2
run_wrk proxy "$proxy_port" 1
run_wrk proxy "$proxy_port" 8

# (d) quiver's enrichment in front of the model
if "$quiver" serve --help 2>/dev/null | grep -q -- '--enrich'; then
  sidecar_port="$(free_port)"
  QUIVER_LOG=warn "$sidecar" serve --repo "$out/repo" --port "$sidecar_port" \
    --enrich benches/kserve/enrich.yaml --upstream "http://127.0.0.1:$model_port" >"$out/sidecar.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$sidecar_port/health"
  echo "enrich: $(predict "$sidecar_port" enrich)" >&2
  BENCH_LEG=enrich BENCH_KEYS="$keys" wrk -t1 -c1 -d3s -s benches/kserve/predict.lua "http://127.0.0.1:$sidecar_port" >/dev/null
  curl -sf "http://127.0.0.1:$sidecar_port/metrics" | grep '^quiver_enrich_added_seconds' >"$out/added-before.txt"
  line="$(BENCH_LEG=enrich BENCH_KEYS="$keys" wrk -t1 -c1 -d"$duration" -s benches/kserve/predict.lua "http://127.0.0.1:$sidecar_port" | grep '^RESULT' | sed 's/^RESULT //')"
  echo "{\"leg\": \"enrich\", \"connections\": 1, \"result\": $line}" | tee -a "$results"
  curl -sf "http://127.0.0.1:$sidecar_port/metrics" | grep '^quiver_enrich_added_seconds' >"$out/added-after.txt"
  # The sidecar's own share during that run: the histogram's difference.
  python3 - "$out/added-before.txt" "$out/added-after.txt" <<'PY' | tee -a "$results"
import json, re, sys
def read(path):
    buckets, total, count = {}, 0.0, 0
    for line in open(path):
        name, value = line.rsplit(" ", 1)
        if "_bucket" in name:
            buckets[re.search(r'le="([^"]+)"', name).group(1)] = float(value)
        elif name.startswith("quiver_enrich_added_seconds_sum"):
            total = float(value)
        elif name.startswith("quiver_enrich_added_seconds_count"):
            count = int(float(value))
    return buckets, total, count
(b0, s0, c0), (b1, s1, c1) = read(sys.argv[1]), read(sys.argv[2])
n = c1 - c0
under = {le: (b1[le] - b0.get(le, 0)) / n for le in b1} if n else {}
print(json.dumps({"leg": "enrich-own", "connections": 1, "requests": n,
                  "mean_us": round((s1 - s0) / n * 1e6, 1) if n else None,
                  "share_under_us": {str(round(float(le) * 1e6)): round(f, 3)
                                     for le, f in under.items() if le != "+Inf" and float(le) <= 0.001}}))
PY
  run_wrk enrich "$sidecar_port" 8
else
  echo "leg enrich skipped: \`quiver serve --help\` lists no --enrich (a build without issue 18's enrichment)" >&2
fi

# The summary: per leg, latency at one connection, peak rps at 8, and what each adds to direct.
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
own = next((r for r in rows if r["leg"] == "enrich-own"), None)
rows = [r for r in rows if "result" in r]
by = {(r["leg"], r["connections"]): r["result"] for r in rows}
base = by.get(("direct", 1))
print(f"{'leg':8} {'p50 us':>8} {'p99 us':>8} {'rps c1':>8} {'rps c8':>8} {'p50 c8':>8} {'p99 c8':>8} {'added p50':>10} {'errors':>7}")
for leg in ["direct", "sample", "proxy", "enrich"]:
    one, eight = by.get((leg, 1)), by.get((leg, 8))
    if not one:
        continue
    added = one["p50_us"] - base["p50_us"] if base else 0
    errors = one["errors"] + one["non_2xx"] + (eight["errors"] + eight["non_2xx"] if eight else 0)
    print(f"{leg:8} {one['p50_us']:>8} {one['p99_us']:>8} {one['rps']:>8.0f} {eight['rps'] if eight else 0:>8.0f} "
          f"{eight['p50_us'] if eight else 0:>8} {eight['p99_us'] if eight else 0:>8} {added:>10} {errors:>7}")
if own:
    print(f"enrich's own share (quiver_enrich_added_seconds, c1 run, {own['requests']} requests): "
          f"mean {own['mean_us']} us; share of requests at or under each bound (us): {own['share_under_us']}")
PY
