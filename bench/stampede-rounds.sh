#!/usr/bin/env bash
# The stampede of bench/compare.sh's (a), repeated: 1000 requests released
# together on a cold key (200 ms origin), ROUNDS rounds with the systems
# interleaved, for the `proxy` example on its memory store and the Rust
# peers of bench/peers. Prints each round's p50 / p99 and, per system, the
# median p99 and the median spread from the first byte to the p99: one
# stampede's p99 moves by 10 ms or more from run to run on this machine.
#
#   bench/stampede-rounds.sh          # 7 rounds
#   ROUNDS=3 bench/stampede-rounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-7}
source "$(dirname "$0")/rust-peers.sh"
field() { sed -n 's/^RESULT //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
for round in $(seq "$ROUNDS"); do
  for s in "${systems[@]}"; do
    out="$dir/$s-$round.txt"
    "$bin/loadgen" --url "${url[$s]}/r/cold-$s-$round-$$" --requests 1000 --origin "$origin" > "$out"
    echo "round $round | $s | calls $(field "$out" origin_calls) | first byte $(field "$out" first_byte_min) / p50 $(field "$out" p50) / p99 $(field "$out" p99) ms"
  done
done
echo "commit $(git rev-parse --short HEAD), $ROUNDS rounds, medians:"
for s in "${systems[@]}"; do
  p99=$(for r in $(seq "$ROUNDS"); do field "$dir/$s-$r.txt" p99; done | median)
  spread=$(for r in $(seq "$ROUNDS"); do
    echo "$(field "$dir/$s-$r.txt" p99) $(field "$dir/$s-$r.txt" first_byte_min)" | awk '{ print $1 - $2 }'
  done | median)
  echo "| $s | p99 $p99 ms | first byte to p99 $spread ms |"
done
