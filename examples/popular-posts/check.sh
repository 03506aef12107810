#!/usr/bin/env bash
# This example's smoke check, run by .ci/examples: a 300-request stampede
# on the memory store, then on Redis, each exits non-zero unless the
# database saw one query. Needs the machine's PostgreSQL (127.0.0.1:5432,
# trust auth, database `test`, or DATABASE_URL); a debug build seeds the
# table on a fresh database (about 12 s).
#
#   examples/popular-posts/check.sh REDIS_URL
set -euo pipefail
cd "$(dirname "$0")/../.."
redis_url=${1:?usage: examples/popular-posts/check.sh REDIS_URL}
cargo build --quiet -p example-popular-posts
target/debug/example-popular-posts --stampede 300
REDIS_URL="$redis_url" target/debug/example-popular-posts --stampede 300
