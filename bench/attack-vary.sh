#!/usr/bin/env bash
# Do the layer's in-process tables stay within their budgets under an
# attacker's keys? Issue 22, finding 4: requests each carrying four 60 KB
# `X-Forwarded-Host` lines (distinct per request, and part of the default
# cache key), through the proxy example (memory store), to an origin whose
# answers are not stored but still reach a table:
#
# - vary-404: a `404` with `Vary: accept-encoding`; the key's `Vary` names
#   are learned (the `Vary` table, budget 8 MiB).
# - private: a `200` with `Set-Cookie`; the key is marked hit-for-pass (the
#   pass table, budget 4 MiB).
#
# Prints, for each, the proxy's idle RSS, its peak RSS, its RSS once the
# attack is over, and the line it must stay under: idle + 1.25 x the
# table's budget + 2 MiB per connection (a connection's read buffer grows
# to hold a 240 KB head, and a request in flight holds its key and the copy
# of its head sent to the origin, each once or twice over).
#
#   bench/attack-vary.sh [REQUESTS]     (default 1000; needs curl)
#
# Loopback only; every process it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-1000}
connections=4
cargo build --quiet --release --example origin --example proxy
bin=target/release/examples
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

listening() {
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then
      sed -n 's/^listening on //p' "$1" | head -1
      return
    fi
    sleep 0.1
  done
  echo "no 'listening on' line in $1" >&2
  exit 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
mib() { echo "$1/1024" | bc -l; }

# Four X-Forwarded-Host lines of 60 KB each (a head of about 240 KB; wrk
# refuses to send a head over 80 KB), whose first bytes are the request's
# number, so that every key is new. Each of $connections workers sends
# every $connections-th request, one connection each (curl's).
pad=$(head -c $((60 * 1024 - 12)) /dev/zero | tr '\0' h)
attack() {
  local proxy=$1 worker=$2 i
  for ((i = worker; i <= requests; i += connections)); do
    curl -sS -o /dev/null -H "Accept-Encoding: gzip" \
      -H "X-Forwarded-Host: $(printf %08d "$i")-1$pad" -H "X-Forwarded-Host: $(printf %08d "$i")-2$pad" \
      -H "X-Forwarded-Host: $(printf %08d "$i")-3$pad" -H "X-Forwarded-Host: $(printf %08d "$i")-4$pad" \
      "$proxy/attacked"
  done
}

run() {
  local name=$1 budget_mib=$2
  shift 2
  "$bin/origin" --listen 127.0.0.1:0 --delay-ms 0 "$@" > "$dir/origin-$name.log" &
  local origin_pid=$!
  local origin
  origin=$(listening "$dir/origin-$name.log")
  "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" \
    > "$dir/proxy-$name.log" 2> "$dir/proxy-$name.err" &
  local pid=$!
  local proxy
  proxy=$(listening "$dir/proxy-$name.log")
  curl -sS -o /dev/null "$proxy/warm-up"
  sleep 2
  local idle
  idle=$(rss_kib "$pid")
  local line=$((budget_mib * 1024 * 5 / 4 + connections * 2048 + idle))
  local before started
  before=$(curl -fsS "$origin/calls")
  started=$(date +%s.%N)
  local workers=() worker
  for ((worker = 1; worker <= connections; worker++)); do
    attack "$proxy" "$worker" &
    workers+=($!)
  done
  wait "${workers[@]}"
  local rate calls
  rate=$(echo "$requests / ($(date +%s.%N) - $started)" | bc)
  # Each new key is one origin call: nothing is stored.
  calls=$(($(curl -fsS "$origin/calls") - before))
  local peak
  peak=$(hwm_kib "$pid")
  sleep 5
  local after
  after=$(rss_kib "$pid")
  printf '%-9s requests=%s origin_calls=%s req/s=%s idle_rss=%.1fMiB peak_rss=%.1fMiB rss_5s_after=%.1fMiB line=%.1fMiB (budget %s MiB) %s\n' \
    "$name" "$requests" "$calls" "$rate" "$(mib "$idle")" "$(mib "$peak")" "$(mib "$after")" "$(mib "$line")" "$budget_mib" \
    "$([ "$peak" -le "$line" ] && [ "$after" -le "$line" ] && echo OK || echo OVER)"
  kill "$pid" "$origin_pid"
  wait "$pid" "$origin_pid" 2>/dev/null || true
}

echo "bench/attack-vary.sh: $requests requests of four 60 KB X-Forwarded-Host lines, $connections connections; $(nproc) cores; $(git rev-parse --short HEAD)"
run vary-404 8 --status 404 --vary accept-encoding
run private 4 --set-cookie
