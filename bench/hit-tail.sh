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
# RATE must stay well under the slowest system's hits/s in compare.sh's
# (b), or its requests queue and its p99 measures the queue: machines of
# this kind have measured from 31 000 to 87 000 for hitbox.
# bench/compare.sh's (e) runs the same measure at half that rate.
#
#   bench/hit-tail.sh                        # 20000/s, 6 s, 5 rounds
#   RATE=40000 ROUNDS=3 bench/hit-tail.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-20000}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-5}
source "$(dirname "$0")/rust-peers.sh"
source "$(dirname "$0")/fixed-rate.sh"
for s in "${systems[@]}"; do
  warm_ten "${url[$s]}/t"
done
for round in $(seq "$ROUNDS"); do
  for s in "${systems[@]}"; do
    out="$dir/$s-$round.txt"
    fixed_rate "${url[$s]}/t" "${pid[$s]}" "$RATE" "$DURATION" "$out"
    echo "round $round | $s | p50 $(per_second 3 "$out" "$DURATION") | p99 $(per_second 4 "$out" "$DURATION") ms | CPU $(cat "$out.cpu") us a request"
  done
done
echo "commit $(git rev-parse --short HEAD), $RATE/s for $DURATION s, $ROUNDS rounds, medians:"
for s in "${systems[@]}"; do
  p50=$(for r in $(seq "$ROUNDS"); do per_second 3 "$dir/$s-$r.txt" "$DURATION"; done | median)
  p99=$(for r in $(seq "$ROUNDS"); do per_second 4 "$dir/$s-$r.txt" "$DURATION"; done | median)
  cpu=$(cat "$dir/$s"-*.txt.cpu | median)
  echo "| $s | p50 $p50 ms | p99 $p99 ms | CPU $cpu us a request |"
done
