#!/usr/bin/env bash
# The Python venv that runs KServe's model server for compat/tests/test_kserve_feast_sample.py
# and benches/kserve: the real `kserve` package, and `requests` (KServe's Feast transformer
# sample posts with it). When compat/setup-kserve-venv.sh exists (the enrichment tests' venv,
# same path and kserve pin) it makes the venv and this script only adds what the sample needs.
#
# Usage: compat/setup-kserve-sample.sh [VENV_DIR]
#   VENV_DIR defaults to $QUIVER_KSERVE_VENV, else target/kserve-venv. Idempotent. Prints the
#   venv path on its last line.
set -euo pipefail

KSERVE_VERSION="0.21.0"
REQUESTS_VERSION="2.34.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${QUIVER_KSERVE_VENV:-target/kserve-venv}}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PYTHON="${PYTHON:-python3}"

ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import kserve, requests, numpy" >/dev/null 2>&1
}

if [ -x "$ROOT/compat/setup-kserve-venv.sh" ]; then
  "$ROOT/compat/setup-kserve-venv.sh" "$VENV" >&2
fi
if ! ready; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  fi
  if ! "$VENV/bin/python" -c "import kserve" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "kserve==$KSERVE_VERSION" >&2
  fi
  "$VENV/bin/python" -m pip install --quiet "requests==$REQUESTS_VERSION" >&2
  if ! ready; then
    echo "error: $VENV does not import kserve, requests and numpy after install" >&2
    exit 1
  fi
fi

echo "$VENV"
