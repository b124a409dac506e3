#!/usr/bin/env bash
# Create (or reuse) what the Spark tests need: a Java runtime (Debian's openjdk-17-jre-headless,
# installed with apt-get when `java` is missing; CI runs as root) and a Python venv with
# pyspark 4.3.0, whose wheel carries the Spark Connect server (sbin/start-connect-server.sh and
# the connect jar), so no Spark distribution is downloaded. testkit/src/spark.rs starts that
# server for the offline crate's spark_* tests.
#
# Usage: compat/setup-spark.sh [VENV_DIR]
#   VENV_DIR defaults to $QUIVER_SPARK_VENV, else ~/.cache/quiver-ci/spark-venv. Idempotent.
#   Prints the venv path on its last line; `$VENV/bin/python -c 'import pyspark, os;
#   print(os.path.dirname(pyspark.__file__))'` is the SPARK_HOME.
set -euo pipefail

PYSPARK_VERSION="4.3.0"
VENV="${1:-${QUIVER_SPARK_VENV:-$HOME/.cache/quiver-ci/spark-venv}}"
PYTHON="${PYTHON:-python3}"

if ! command -v java >/dev/null 2>&1; then
  echo "installing openjdk-17-jre-headless (Spark's runtime)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >&2
fi

venv_ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import pyspark, os; assert pyspark.__version__ == '$PYSPARK_VERSION'; assert os.path.exists(os.path.join(os.path.dirname(pyspark.__file__), 'sbin', 'start-connect-server.sh'))" \
      >/dev/null 2>&1
}

if ! venv_ready; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "pyspark==$PYSPARK_VERSION" >&2
  if ! venv_ready; then
    echo "error: $VENV does not import pyspark $PYSPARK_VERSION with its Spark Connect server after install" >&2
    exit 1
  fi
fi

echo "$VENV"
