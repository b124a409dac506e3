#!/usr/bin/env bash
# Create (or reuse) a venv with Feast 0.67 and its Spark extra beside pyspark 4.3.0 with the Spark
# Connect client (the same pyspark as compat/setup-spark.sh's server): Feast's own Spark offline
# store (`offline_store: type: spark` with `spark.remote`) for compat/tests/test_spark_feast_repo.py
# and the Spark benchmark's Feast leg (benches/spark/run.sh). Kept apart from the Feast venv:
# pyspark and its Connect client (grpcio, pandas) are large and only these tests need them.
#
# Usage: compat/setup-feast-spark-venv.sh [VENV_DIR]
#   VENV_DIR defaults to $QUIVER_FEAST_SPARK_VENV, else ~/.cache/quiver-ci/feast-spark-venv.
#   A relative VENV_DIR is the repository root's. Idempotent. Prints the venv's absolute path on
#   its last line.
set -euo pipefail

FEAST_VERSION="0.67.0"
PYSPARK_VERSION="4.3.0"
VENV="${1:-${QUIVER_FEAST_SPARK_VENV:-$HOME/.cache/quiver-ci/feast-spark-venv}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PYTHON="${PYTHON:-python3}"

venv_ready() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    "import feast, pyspark, pyspark.sql.connect.session; assert feast.__version__ == '$FEAST_VERSION' and pyspark.__version__ == '$PYSPARK_VERSION'" \
    >/dev/null 2>&1
}

if ! venv_ready; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "feast[spark]==$FEAST_VERSION" "pyspark[connect]==$PYSPARK_VERSION" >&2
  if ! venv_ready; then
    echo "error: $VENV does not import feast $FEAST_VERSION with pyspark $PYSPARK_VERSION after install" >&2
    exit 1
  fi
fi

echo "$VENV"
