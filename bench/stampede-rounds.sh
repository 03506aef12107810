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
ulimit -n 20000
cargo build --quiet --release --example origin --example proxy --example loadgen
cargo build --quiet --release --manifest-path bench/peers/Cargo.toml
bin=${CARGO_TARGET_DIR:-target}/release/examples
peers=${CARGO_TARGET_DIR:-bench/peers/target}/release
dir=$(mktemp -d)
trap 'kill $(cat "$dir/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$dir"' EXIT
start() { # log, command...: prints the URL it listens on
  local log=$1
  shift
  "$@" > "$log" 2>&1 &
  echo $! >> "$dir/pids"
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$log"; then
      sed -n 's/^listening on //p' "$log" | head -1
      return
    fi
    sleep 0.1
  done
  echo "no 'listening on' line from $*" >&2
  exit 1
}
origin=$(start "$dir/origin.log" "$bin/origin" --listen 127.0.0.1:0)
declare -A url
url[memory]=$(start "$dir/memory.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin")
url[moka]=$(start "$dir/moka.log" "$peers/moka-proxy" --listen 127.0.0.1:0 --upstream "$origin")
url[http-cache]=$(start "$dir/http-cache.log" "$peers/tower-http-cache-proxy" --listen 127.0.0.1:0 --upstream "$origin")
url[hitbox]=$(start "$dir/hitbox.log" "$peers/hitbox-proxy" --listen 127.0.0.1:0 --upstream "$origin")
systems=(memory moka http-cache hitbox)
field() { sed -n 's/^RESULT //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
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
