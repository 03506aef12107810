# What bench/stampede-rounds.sh and bench/hit-tail.sh share: the origin,
# the `proxy` example on its memory store and the Rust peers of
# bench/peers, each started on a free port. Sets `origin` (the origin's
# URL), `systems`, and for each system `url[$s]` and `pid[$s]`; and
# `median`, of the numbers on its input.
#
#   source "$(dirname "$0")/rust-peers.sh"    (after `cd` to the repository)

ulimit -n 20000
source "$(dirname "$0")/common.sh"
cargo build --quiet --release --manifest-path bench/peers/Cargo.toml
peers=${CARGO_TARGET_DIR:-bench/peers/target}/release
"$bin/origin" --listen 127.0.0.1:0 > "$dir/origin.log" 2>&1 &
origin=$(listening "$dir/origin.log")
systems=(memory moka http-cache hitbox)
declare -A url pid
declare -A command=([memory]="$bin/proxy" [moka]="$peers/moka-proxy"
  [http-cache]="$peers/tower-http-cache-proxy" [hitbox]="$peers/hitbox-proxy")
for s in "${systems[@]}"; do
  "${command[$s]}" --listen 127.0.0.1:0 --upstream "$origin" > "$dir/$s.log" 2>&1 &
  pid[$s]=$!
done
for s in "${systems[@]}"; do
  url[$s]=$(listening "$dir/$s.log")
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
