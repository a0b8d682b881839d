#!/bin/sh
# Create the lake bucket on first start; safe to run again.
set -eu
mc alias set lake "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "lake/${ULTRAFORGE_BUCKET:-ultraforge}"
