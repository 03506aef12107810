# What the proxy benchmarks share, sourced by each: release builds of the
# examples, a temporary folder, every process they start stopped when they
# end, and the proxy's memory read from /proc.
#
#   source "$(dirname "$0")/common.sh"    (after `cd` to the repository)

cargo build --quiet --release --example origin --example proxy --example loadgen
bin=${CARGO_TARGET_DIR:-target}/release/examples
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Waits for the "listening on URL" line a server prints first; prints URL.
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

# Resident memory now, and its peak, of process $1, in KiB.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
