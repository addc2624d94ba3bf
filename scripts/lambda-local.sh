#!/usr/bin/env bash
# Prepares a machine to run the Lambdas under `cargo lambda watch` with no
# AWS account: PostgreSQL + pgvector (migrated), moto_server as the AWS
# endpoint, a bucket `collections-local` holding demo/coffee.jpg. Prints the
# settings to export:
#   eval "$(bash scripts/lambda-local.sh)"
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

pg_env="$(bash scripts/postgres.sh env)"
eval "$pg_env"
moto_env="$(bash scripts/moto.sh env)"
eval "$moto_env"
cargo run --quiet -p collections -- migrate >&2
"$VENV/bin/python" - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
s3.create_bucket(Bucket="collections-local")
s3.upload_file("samples/coffee.jpg", "collections-local", "demo/coffee.jpg")
PY
log "bucket collections-local holds demo/coffee.jpg"
for name in DATABASE_URL AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION; do
    echo "export $name=${!name}"
done
echo "export BUCKET_NAME=collections-local"
