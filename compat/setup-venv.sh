#!/usr/bin/env bash
# Create (or reuse) a Python venv with the real Feast 0.67.0, its Redis and grpcio extras (grpcio:
# `feast serve_transformations`, Feast's transformation service), psycopg (Feast's
# SQL registry on PostgreSQL), pytest and duckdb (the historical benchmark's baseline), and for
# registries in object stores: moto's S3 server, gcp-storage-emulator (a GCS emulator) and
# google-cloud-storage (Feast's GCS registry store; boto3, its S3 one, comes with moto), and s3fs
# (what Feast's file offline store reads `s3://` sources with); for compat/generate_fixtures.py, compat/feast_summary.py and compat/tests.
#
# Usage: compat/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to $QUIVER_FEAST_VENV, else target/feast-venv (relative to
#   the repository root). Idempotent: does nothing when the venv already imports
#   feast 0.67.0 and the rest. Prints the venv path on its last line.
set -euo pipefail

FEAST_VERSION="0.67.0"
MOTO_VERSION="5.2.5"
GCS_EMULATOR_VERSION="2026.7.19"
GCS_CLIENT_VERSION="3.17.1"
S3FS_VERSION="2026.9.0"
GRPCIO_VERSION="1.85.4"
GRPCIO_REFLECTION_VERSION="1.85.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${QUIVER_FEAST_VENV:-target/feast-venv}}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PYTHON="${PYTHON:-python3}"

venv_ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import feast, grpc, grpc_reflection, psycopg, pytest, duckdb, boto3, moto, gcp_storage_emulator, google.cloud.storage, s3fs; assert feast.__version__ == '$FEAST_VERSION'" \
      >/dev/null 2>&1
}

if ! venv_ready; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "feast[redis,grpcio]==$FEAST_VERSION" "grpcio==$GRPCIO_VERSION" \
    "grpcio-reflection==$GRPCIO_REFLECTION_VERSION" "psycopg[binary]>=3.1" pytest duckdb \
    "moto[server]==$MOTO_VERSION" "gcp-storage-emulator==$GCS_EMULATOR_VERSION" \
    "google-cloud-storage==$GCS_CLIENT_VERSION" "s3fs==$S3FS_VERSION" >&2
  if ! venv_ready; then
    echo "error: $VENV does not import feast $FEAST_VERSION, grpcio, psycopg, pytest, duckdb, moto, gcp_storage_emulator, google-cloud-storage and s3fs after install" >&2
    exit 1
  fi
fi

echo "$VENV"
