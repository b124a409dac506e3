#!/usr/bin/env bash
# On-demand feature views: latency of one request through Feast's transformation service,
# quiver against `feast serve` answering the same request, in one run.
#
# The repo is `feast init`'s template (feature service driver_activity_v1: conv_rate and the
# pandas on-demand view transformed_conv_rate), applied and materialized by Feast into SQLite.
# Servers: `feast serve_transformations` (Feast's Python runs the transformation for quiver),
# `quiver-sidecar serve --transformation-service` (the lean release binary), `feast serve`
# (computes the same view in-process). bench.py sends the same request to each, one at a time
# on a kept-alive connection, and reports latency percentiles; the answers are checked equal.
#
# Usage: benches/on_demand/run.sh [REQUESTS=500]
# Needs the Feast venv with grpcio (compat/setup-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
requests="${1:-500}"
target_dir="${CARGO_TARGET_DIR:-target}"
venv="$(compat/setup-venv.sh "${QUIVER_FEAST_VENV:-$target_dir/feast-venv}" | tail -n 1)"
cargo build --release --locked -p quiver-cmd --bin quiver-sidecar >&2
sidecar="$target_dir/release/quiver-sidecar"
out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
export TZ=UTC
(cd "$out" && "$venv/bin/feast" init demo_repo >/dev/null)
repo="$out/demo_repo/feature_repo"
(cd "$repo" && "$venv/bin/feast" apply >/dev/null && \
  "$venv/bin/feast" materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)" >/dev/null)
(cd "$repo" && exec "$venv/bin/feast" serve_transformations --port 6591) >"$out/ts.log" 2>&1 &
(cd "$repo" && exec "$venv/bin/feast" serve -h 127.0.0.1 -p 6592 --no-access-log) >"$out/fs.log" 2>&1 &
"$sidecar" serve --repo "$repo" --port 6593 --transformation-service 127.0.0.1:6591 >"$out/q.log" 2>&1 &
"$venv/bin/python" benches/on_demand/bench.py --requests "$requests" \
  --transformations 127.0.0.1:6591 --feast http://127.0.0.1:6592 --quiver http://127.0.0.1:6593
