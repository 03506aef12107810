#!/usr/bin/env bash
# Hits at a fixed rate, for the `proxy` example on its memory store and the
# Rust peers of bench/peers: the tail of a hit under the same load for
# every system.
#
# wrk in bench/compare.sh's (b) keeps 50 requests in flight however quick
# the proxy is (a closed loop): the quicker it answers, the more wrk and
# the proxy's two workers contend for the machine's two cores, and a
# request waits whenever the thread holding it is descheduled, so its
# p99 says as much about the machine as about the proxy. Here
# `examples/loadgen.rs` sends RATE requests a second over 10 warm keys for
# DURATION seconds without waiting for answers (an open loop), ROUNDS
# rounds with the systems interleaved. Printed per round: the median over
# the seconds after the first of each second's p50 and p99, and the CPU
# time the proxy's process spent per request (user and system, from
# /proc); per system, the medians of those over the rounds. With the same
# load for all, the CPU time per request is what a hit costs each, where
# wrk's hits/s for the quickest ones is bounded by wrk's own thread.
#
#   bench/hit-tail.sh                        # 40000/s, 6 s, 5 rounds
#   RATE=20000 ROUNDS=3 bench/hit-tail.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-40000}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-5}
source "$(dirname "$0")/rust-peers.sh"
for s in "${systems[@]}"; do
  # Each key stored, then read once: every measured request is a hit.
  for key in $(seq 0 9); do
    curl -s -o /dev/null "${url[$s]}/t/$key"
    curl -s -o /dev/null "${url[$s]}/t/$key"
  done
done
# Column $1 (3: p50, 4: p99) of loadgen's table, seconds 1 to the last
# whole one, as their median.
per_second() { awk -v col="$1" -v last="$((DURATION - 1))" '$1 ~ /^[0-9]+$/ && $1 >= 1 && $1 <= last && NF == 5 { print $col }' "$2" | median; }
# The CPU time process $1 has spent, user and system, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for s in "${systems[@]}"; do
    out="$dir/$s-$round.txt"
    before=$(ticks "${pid[$s]}")
    "$bin/loadgen" --url "${url[$s]}/t" --keys 10 --rate "$RATE" --duration "$DURATION" > "$out"
    spent=$(($(ticks "${pid[$s]}") - before))
    grep -q ' failed=0 ' "$out" || { echo "$s: requests failed in round $round" >&2; cat "$out" >&2; exit 1; }
    # Microseconds of CPU per request.
    awk -v t="$spent" -v hz="$hz" -v n="$((RATE * DURATION))" 'BEGIN { printf "%.2f\n", t / hz * 1e6 / n }' > "$out.cpu"
    echo "round $round | $s | p50 $(per_second 3 "$out") | p99 $(per_second 4 "$out") ms | CPU $(cat "$out.cpu") us a request"
  done
done
echo "commit $(git rev-parse --short HEAD), $RATE/s for $DURATION s, $ROUNDS rounds, medians:"
for s in "${systems[@]}"; do
  p50=$(for r in $(seq "$ROUNDS"); do per_second 3 "$dir/$s-$r.txt"; done | median)
  p99=$(for r in $(seq "$ROUNDS"); do per_second 4 "$dir/$s-$r.txt"; done | median)
  cpu=$(cat "$dir/$s"-*.txt.cpu | median)
  echo "| $s | p50 $p50 ms | p99 $p99 ms | CPU $cpu us a request |"
done
