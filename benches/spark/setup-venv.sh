#!/usr/bin/env bash
# The venv for the Spark benchmark's Feast leg: Feast 0.67 with its Spark extra and pyspark 4.3.0
# with the Spark Connect client (the same pyspark as compat/setup-spark.sh's server).
# Usage: benches/spark/setup-venv.sh [VENV_DIR] (default ~/.cache/quiver-ci/spark-bench-venv).
# Prints the venv's path on its last line. Idempotent.
set -euo pipefail
VENV="${1:-${QUIVER_SPARK_BENCH_VENV:-$HOME/.cache/quiver-ci/spark-bench-venv}}"
ready() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    "import feast, pyspark, pyspark.sql.connect.session; assert feast.__version__ == '0.67.0' and pyspark.__version__ == '4.3.0'" \
    >/dev/null 2>&1
}
if ! ready; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "feast[spark]==0.67.0" "pyspark[connect]==4.3.0" >&2
  ready || { echo "error: $VENV lacks feast 0.67.0 with pyspark 4.3.0 after install" >&2; exit 1; }
fi
echo "$VENV"
