#!/usr/bin/env bash
# Collapsed requests for a body too large to store, streamed (issue 17):
# 200 concurrent requests through the `proxy` example for one 20 MiB body
# that the `origin` example sends over 2 s (headers at once, then 64 KiB
# chunks), from the `loadgen` example (each request on a connection of its
# own, released together). Prints each run's origin calls, time to the first
# byte of the body (the first request's, the median, the p99), time to the
# last, and the proxy's peak RSS against its idle RSS.
#
#   bench/stream.sh                 # this tree
#   BEFORE=path/to/proxy bench/stream.sh   # and another build of the proxy, in the same run
#
# Not in CI: it moves 4 GB over loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

requests=${REQUESTS:-200}
bytes=$((20 << 20))

"$bin/origin" --listen 127.0.0.1:0 --body-bytes "$bytes" --delay-ms 2000 > "$dir/origin.log" &
origin=$(listening "$dir/origin.log")

run() { # label proxy-binary
  local label=$1 proxy_bin=$2
  "$proxy_bin" --listen 127.0.0.1:0 --upstream "$origin" > "$dir/proxy-$label.log" 2>&1 &
  local pid=$!
  local proxy
  proxy=$(listening "$dir/proxy-$label.log")
  curl -fsS -o /dev/null "$proxy/warm-up-$label"
  local idle
  idle=$(rss_kib "$pid")
  # Every request on a connection of its own, released together once all
  # are connected; the first byte of each body is timed from its send.
  "$bin/loadgen" --url "$proxy/export-$label" --requests "$requests" --origin "$origin" \
    > "$dir/loadgen-$label.txt"
  local peak
  peak=$(hwm_kib "$pid")
  kill "$pid"
  local result
  result=$(sed -n 's/^RESULT //p' "$dir/loadgen-$label.txt")
  printf '%-7s %s idle_rss_mib=%.1f peak_rss_mib=%.1f\n' "$label" "$result" \
    "$(echo "$idle / 1024" | bc -l)" "$(echo "$peak / 1024" | bc -l)"
}

echo "bench/stream.sh: $requests requests at once for a $((bytes >> 20)) MiB body sent over 2 s; $(nproc) cores; $(git rev-parse --short HEAD)"
if [ -n "${BEFORE:-}" ]; then
  run before "$BEFORE"
fi
run after "$bin/proxy"
