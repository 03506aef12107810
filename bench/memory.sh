#!/usr/bin/env bash
# Does the memory bound hold? 1 000 000 distinct 1 KiB URLs through the
# proxy example, whose memory store is told to keep 64 MiB (then 32 MiB,
# for comparison); then no traffic
# while the entries expire. Prints the proxy's idle RSS, its peak RSS, the
# line it must stay under (64 MiB x 1.25 + idle), and how long after the
# last request its RSS was back under that line. Then the same with the
# Redis store down, so that what the proxy keeps is the in-process
# fallback, told to keep 64 MiB too.
#
#   bench/memory.sh [REQUESTS]     (default 1000000; needs wrk)
#
# Loopback only; every process it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-1000000}
ttl=20
command -v wrk >/dev/null || { echo "bench/memory.sh needs wrk (apt-get install -y wrk)" >&2; exit 1; }
source "$(dirname "$0")/common.sh"

# A new path for every request, from one wrk thread, up to $requests; then
# the first path again (a hit) until wrk is stopped.
cat > "$dir/distinct.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  if n > $requests then
    n = $requests + 1
    return wrk.format(nil, "/k1")
  end
  return wrk.format(nil, "/k" .. n)
end
LUA
calls() { curl -fsS "$origin/calls"; }

"$bin/origin" --listen 127.0.0.1:0 --delay-ms 0 --max-age 3600 > "$dir/origin.log" &
origin=$(listening "$dir/origin.log")

run() {
  local name=$1 bound_mib=$2
  shift 2
  "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" --policy "ttl:${ttl}s" "$@" \
    > "$dir/proxy-$name.log" 2> "$dir/proxy-$name.err" &
  local pid=$!
  local proxy
  proxy=$(listening "$dir/proxy-$name.log")
  curl -fsS "$proxy/warm-up" > /dev/null
  sleep 4
  local idle
  idle=$(rss_kib "$pid")
  local line=$((bound_mib * 1024 * 5 / 4 + idle))
  local calls_before started
  calls_before=$(calls)
  started=$(date +%s.%N)
  wrk -t1 -c32 -d3600s -s "$dir/distinct.lua" "$proxy" > "$dir/wrk-$name.txt" &
  local wrk_pid=$!
  # Each distinct path is one origin call; stop wrk once all were asked.
  while [ $(($(calls) - calls_before)) -lt "$requests" ]; do sleep 0.5; done
  kill -INT "$wrk_pid"
  wait "$wrk_pid" 2>/dev/null || true
  local rate
  rate=$(echo "$requests / ($(date +%s.%N) - $started)" | bc)
  local peak after
  peak=$(hwm_kib "$pid")
  after=$(rss_kib "$pid")
  # The entries expire $ttl s after they were stored: then, with no
  # traffic, RSS must be back under the line within a minute.
  sleep $((ttl + 5))
  local waited=$((ttl + 5))
  while [ "$(rss_kib "$pid")" -gt "$line" ] && [ "$waited" -lt $((ttl + 60)) ]; do
    sleep 1
    waited=$((waited + 1))
  done
  local settled
  settled=$(rss_kib "$pid")
  printf '%-16s requests=%s req/s=%s idle_rss=%.1fMiB peak_rss=%.1fMiB line=%.1fMiB rss_at_end=%.1fMiB rss_%ss_later=%.1fMiB %s\n' \
    "$name" "$requests" "$rate" "$(echo "$idle/1024" | bc -l)" "$(echo "$peak/1024" | bc -l)" \
    "$(echo "$line/1024" | bc -l)" "$(echo "$after/1024" | bc -l)" "$waited" "$(echo "$settled/1024" | bc -l)" \
    "$([ "$peak" -le "$line" ] && [ "$settled" -le "$line" ] && echo OK || echo OVER)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

echo "bench/memory.sh: $requests distinct 1 KiB URLs, ttl ${ttl}s; $(nproc) cores; $(git rev-parse --short HEAD)"
run memory 64 --max-bytes 64MiB
run memory-32MiB 32 --max-bytes 32MiB
# Redis up when the proxy starts, then killed: every store call fails at
# once, and what the proxy builds goes to the in-process fallback.
command -v redis-server >/dev/null || { echo "needs redis-server" >&2; exit 1; }
redis-server --port 0 --unixsocket "$dir/redis.sock" --save "" --appendonly no \
  --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
for _ in $(seq 50); do [ -S "$dir/redis.sock" ] && break; sleep 0.1; done
( sleep 3; kill "$(cat "$dir/redis.pid")" ) &
run redis-fallback 64 --redis "unix://$dir/redis.sock" --max-bytes 64MiB
