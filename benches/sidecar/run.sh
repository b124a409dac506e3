#!/usr/bin/env bash
# The lean sidecar's footprint, `quiver-sidecar serve` against the full `quiver serve` (the
# baseline) in the same run:
#   size    binary size as built (symbols kept, debug info stripped by the release profile) and
#           fully stripped (`strip -o`), and `cargo tree -e normal` line counts
#   start   spawn -> `GET /ready` 200, RUNS starts per binary and store (SQLite, Redis), and
#           idle VmRSS one second after ready
#   cache   RSS after every one of N drivers was read once through POST /get-online-features
#           (BATCH per request) under each --cache-bytes budget, with the sidecar's own
#           quiver_cache_size_bytes / quiver_cache_entries
# Images are not built here (needs a Docker engine): see RESULTS.md.
#
# Usage: benches/sidecar/run.sh [RUNS=20] [N=1000000] [BUDGETS="64MiB 256MiB 1GiB"]
# PARTS="size start cache" picks the parts (e.g. PARTS=start for a timing rerun); BATCH=500;
# CACHE_BINS="quiver-sidecar quiver". Needs redis-server and strip (binutils). Prints one JSON
# line per measurement and appends them to $CARGO_TARGET_DIR/bench-sidecar/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-20}"
n="${2:-1000000}"
budgets="${3:-64MiB 256MiB 1GiB}"
parts="${PARTS:-size start cache}"
batch="${BATCH:-500}"
cache_bins="${CACHE_BINS:-quiver-sidecar quiver}"
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/bench-sidecar"
mkdir -p "$out"
results="$out/results.jsonl"
has() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Built one at a time, each alone, as a user would (features are unified per build).
cargo build --release --locked -p quiver-cmd --bin quiver-sidecar >&2
cargo build --release --locked -p quiver --bin quiver >&2
cargo build --release --locked -p quiver-benches --bin sidecar_footprint >&2
sidecar="$target_dir/release/quiver-sidecar"
quiver="$target_dir/release/quiver"
tool="$target_dir/release/sidecar_footprint"

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) nproc=$(nproc) load=[$(cut -d' ' -f1-3 /proc/loadavg)]" | tee -a "$results"

if has size; then
  for b in "$sidecar" "$quiver"; do
    strip -o "$out/$(basename "$b").stripped" "$b"
    echo "{\"size\": \"$(basename "$b")\", \"as_built_bytes\": $(stat -c %s "$b"), \"stripped_bytes\": $(stat -c %s "$out/$(basename "$b").stripped")}" | tee -a "$results"
  done
  for p in quiver-cmd quiver; do
    lines="$(cargo tree --locked -p "$p" -e normal | wc -l)"
    crates="$(cargo tree --locked -p "$p" -e normal --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)"
    datafusion="$(cargo tree --locked -p "$p" -e normal --prefix none | grep -c '^datafusion' || true)"
    echo "{\"tree\": \"$p\", \"lines\": $lines, \"distinct_crates\": $crates, \"datafusion_lines\": $datafusion}" | tee -a "$results"
  done
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

make_repo() { # dir online_store_yaml
  rm -rf "$1" && mkdir -p "$1/data"
  cat > "$1/feature_store.yaml" <<YAML
project: bench
registry: data/registry.db
provider: local
online_store: $2
offline_store:
  type: file
entity_key_serialization_version: 3
YAML
  cp benches/sidecar/features.yaml "$1/"
  "$tool" apply "$1"
}

if has start; then
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  make_repo "$out/repo-sqlite" "{type: sqlite, path: data/online.db}"
  make_repo "$out/repo-redis" "{type: redis, connection_string: \"127.0.0.1:$redis_port\"}"
  # A small table in each, so the store is real (start-up does not read rows).
  "$tool" fill "$out/repo-sqlite" 10000 >&2
  "$tool" fill "$out/repo-redis" 10000 >&2
  for store in sqlite redis; do
    for b in "$sidecar" "$quiver"; do
      "$tool" start "$b" "$out/repo-$store" "$runs" | sed "s/^{/{\"store\": \"$store\", /" | tee -a "$results"
    done
  done
fi

if has cache; then
  repo="$out/repo-1m"
  if [ ! -f "$repo/data/online.db" ] || [ "$(cat "$repo/filled" 2>/dev/null)" != "$n" ]; then
    make_repo "$repo" "{type: sqlite, path: data/online.db}"
    "$tool" fill "$repo" "$n" >&2
    echo "$n" > "$repo/filled"
  fi
  for budget in $budgets; do
    for bin in $cache_bins; do
      "$tool" cache "$target_dir/release/$bin" "$repo" "$budget" "$n" "$batch" | tee -a "$results"
    done
  done
fi
