# Hits at one fixed rate (an open loop), shared by bench/hit-tail.sh and
# bench/compare.sh's (e). Expects `bin` (the examples' folder), `dir` (a
# scratch folder) and `median` from the script that sources it.
#
#   source "$(dirname "$0")/fixed-rate.sh"

# Stores ten keys under URL $1 (/0 to /9) and reads each once, so that
# every request of a measured run is a hit.
warm_ten() {
  for key in $(seq 0 9); do
    curl -s -o /dev/null "$1/$key"
    curl -s -o /dev/null "$1/$key"
  done
}

# The CPU time process $1 has spent, user and system, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Sends $3 requests a second for $4 seconds over the ten keys under URL $1
# to the process $2, without waiting for answers. Writes loadgen's output
# to $5 and the microseconds of the process's CPU time per request to
# $5.cpu; fails if a request did.
fixed_rate() {
  local before spent
  before=$(ticks "$2")
  "$bin/loadgen" --url "$1" --keys 10 --rate "$3" --duration "$4" > "$5"
  spent=$(($(ticks "$2") - before))
  grep -q ' failed=0 ' "$5" || { echo "requests to $1 failed:" >&2; cat "$5" >&2; return 1; }
  awk -v t="$spent" -v hz="$(getconf CLK_TCK)" -v n="$(($3 * $4))" \
    'BEGIN { printf "%.2f\n", t / hz * 1e6 / n }' > "$5.cpu"
}

# The median of column $1 (3: p50, 4: p99) of the per-second table in
# loadgen's output $2, over seconds 1 to $3 - 1: the first second fills
# connections, the last may be cut short.
per_second() {
  awk -v col="$1" -v last="$(($3 - 1))" \
    '$1 ~ /^[0-9]+$/ && $1 >= 1 && $1 <= last && NF == 5 { print $col }' "$2" | median
}
