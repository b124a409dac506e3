#!/usr/bin/env bash
# Create (or reuse) a Python venv with the real KServe model server (the `kserve` SDK: its
# ModelServer, V1 and V2 REST), scikit-learn and requests (KServe's Feast transformer sample posts
# with it): for compat/tests/test_kserve_*.py (models in compat/kserve/, the vendored sample in
# compat/kserve_feast_sample/) and benches/kserve. Kept apart from the Feast venv: KServe pins its
# own FastAPI, protobuf and grpcio.
#
# Usage: compat/setup-kserve-venv.sh [VENV_DIR]
#   VENV_DIR defaults to $QUIVER_KSERVE_VENV, else target/kserve-venv (relative to the
#   repository root). Idempotent. Prints the venv path on its last line.
set -euo pipefail

KSERVE_VERSION="0.21.0"
SKLEARN_VERSION="1.9.1"
REQUESTS_VERSION="2.34.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${QUIVER_KSERVE_VENV:-target/kserve-venv}}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PYTHON="${PYTHON:-python3}"

venv_ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import kserve, sklearn, joblib, numpy, requests; from importlib.metadata import version; assert version('kserve') == '$KSERVE_VERSION'; assert sklearn.__version__ == '$SKLEARN_VERSION'; assert requests.__version__ == '$REQUESTS_VERSION'" \
      >/dev/null 2>&1
}

if ! venv_ready; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "kserve==$KSERVE_VERSION" "scikit-learn==$SKLEARN_VERSION" \
    "requests==$REQUESTS_VERSION" >&2
  if ! venv_ready; then
    echo "error: $VENV does not import kserve $KSERVE_VERSION, scikit-learn $SKLEARN_VERSION and requests $REQUESTS_VERSION after install" >&2
    exit 1
  fi
fi

echo "$VENV"
