#!/usr/bin/env bash
# Issue 22's memory attack on the proxy example: rounds of 64 concurrent
# requests for distinct 4 MiB responses, each arriving from the origin over
# 2 s, each client gone 100 ms after it asked, long before the proxy
# answers: every flight reads its body for nobody but the store, all at
# once.
#
# First the attack with buffering off (`--max-buffered-bytes 0`: every
# body streams through), whose peak RSS is what the proxy needs for its
# connections, tasks and streams alone. Then, for each budget, prints the
# proxy's idle RSS, its peak RSS (VmHWM) and the line it must stay under:
# that unbuffered peak + the buffer budget + the memory store's bound x
# 1.25 (the margin bench/memory.sh allows the store's weight).
#
#   bench/attack-buffers.sh [ROUNDS]     (default 5; needs curl)
#
# STORE_MIB sets the memory store's bound (default 32). PROXY=path/to/proxy
# measures another build of the proxy example in the default-budget run
# (one from before the budget, say); the other runs use this tree's.
# glibc keeps freed 4 MiB blocks for reuse rather than giving them back;
# with MALLOC_MMAP_THRESHOLD_=131072 it gives them back, and the peak shows
# what the proxy held at once. Loopback only; every process it starts is
# stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
clients=64
body_bytes=$((4 * 1024 * 1024))
body_ms=2000
store_mib=${STORE_MIB:-32}
command -v curl >/dev/null || { echo "bench/attack-buffers.sh needs curl" >&2; exit 1; }
source "$(dirname "$0")/common.sh"
mib() { echo "scale=1; $1 / 1024" | bc; }
calls() { curl -fsS "$origin/calls"; }

"$bin/origin" --listen 127.0.0.1:0 --delay-ms "$body_ms" --max-age 3600 --body-bytes "$body_bytes" \
  > "$dir/origin.log" &
origin=$(listening "$dir/origin.log")

# `run NAME BUDGET_MIB PROXY_BINARY [PROXY FLAGS...]`, BUDGET_MIB empty for
# the unbuffered run; leaves the peak RSS (KiB) in `peak`.
run() {
  local name=$1 budget_mib=$2 binary=$3
  shift 3
  "$binary" --listen 127.0.0.1:0 --upstream "$origin" --policy ttl:60s --max-bytes "${store_mib}MiB" "$@" \
    > "$dir/proxy-$name.log" 2> "$dir/proxy-$name.err" &
  local pid=$!
  local proxy
  proxy=$(listening "$dir/proxy-$name.log")
  curl -fsS -o /dev/null "$proxy/warm-up"
  sleep 2
  local idle calls_at_start
  idle=$(rss_kib "$pid")
  calls_at_start=$(calls)
  for round in $(seq "$rounds"); do
    local before curls=()
    before=$(calls)
    for i in $(seq "$clients"); do
      curl -s -o /dev/null --max-time 0.1 "$proxy/$name/r$round/k$i" &
      curls+=($!)
    done
    wait "${curls[@]}" || true
    # A request whose client left before the proxy sent it on makes no
    # flight: wait for those that did, then for their bodies to arrive.
    for _ in $(seq 30); do
      [ $(($(calls) - before)) -ge "$clients" ] && break
      sleep 0.1
    done
    sleep $((body_ms / 1000 + 1))
  done
  local flights=$(($(calls) - calls_at_start))
  local after
  peak=$(hwm_kib "$pid")
  after=$(rss_kib "$pid")
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  printf '%-13s flights=%s idle_rss=%sMiB peak_rss=%sMiB rss_at_end=%sMiB' \
    "$name" "$flights" "$(mib "$idle")" "$(mib "$peak")" "$(mib "$after")"
  if [ -n "$budget_mib" ]; then
    local line=$((unbuffered + budget_mib * 1024 + store_mib * 1024 * 5 / 4))
    printf ' line=%sMiB (unbuffered peak + %s MiB budget + %s MiB store x 1.25) %s' \
      "$(mib "$line")" "$budget_mib" "$store_mib" "$([ "$peak" -le "$line" ] && echo OK || echo OVER)"
  fi
  printf '\n              proxy: %s\n' "$(tail -1 "$dir/proxy-$name.log")"
}

echo "bench/attack-buffers.sh: $rounds rounds of $clients distinct 4 MiB responses over ${body_ms} ms," \
  "clients gone after 100 ms; store ${store_mib} MiB; $(nproc) cores; $(git rev-parse --short HEAD)" \
  "${PROXY:+(default run: $PROXY)}${MALLOC_MMAP_THRESHOLD_:+ MALLOC_MMAP_THRESHOLD_=$MALLOC_MMAP_THRESHOLD_}"
run unbuffered "" "$bin/proxy" --max-buffered-bytes 0
unbuffered=$peak
run default 64 "${PROXY:-$bin/proxy}"
run budget-16MiB 16 "$bin/proxy" --max-buffered-bytes 16MiB
