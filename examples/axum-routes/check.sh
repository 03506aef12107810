#!/usr/bin/env bash
# This example's smoke check, run by .ci/examples: per-route policies with
# tower-http's layers; exits non-zero when a route's behaviour does not hold.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet -p example-axum-routes
target/debug/example-axum-routes
