#!/usr/bin/env bash
# The instructions of a memory-store hit against the bare service's, as
# callgrind counts them: benches/hit_ratio.rs's two services (the 1 KiB
# origin bare, and behind the layer with a warm memory store), one batch
# of 10 000 requests each, in functions of their own. A count does not move
# with what else the machine runs, as the times of benches/hit_path.rs and
# benches/hit_ratio.rs do; it does not weigh a cache miss or an atomic
# operation by its cost, as they do.
#
#   bench/hit-instructions.sh
#
# Prints each figure a request and the ratio. Needs valgrind (on every
# machine here; else `apt-get install -y valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind callgrind_annotate python3; do
  command -v "$tool" > /dev/null ||
    { echo "$tool is missing: apt-get install -y valgrind python3" >&2; exit 1; }
done
bin=$(cargo bench --quiet -p benches --bench hit_ratio --no-run --message-format=json |
  python3 -c 'import json, sys
found = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("executable") and m["target"]["name"] == "hit_ratio"]
print(found[0] if found else "")')
[[ -n $bin && -x $bin ]] || { echo "no hit_ratio bench executable from cargo bench --no-run" >&2; exit 1; }
out=$(mktemp)
log=$(mktemp)
trap 'rm -f "$out" "$log"' EXIT
if ! valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --instructions > "$log" 2>&1; then
  echo "$bin --instructions failed under callgrind:" >&2
  cat "$log" >&2
  exit 1
fi
requests=$(sed -n 's/^hit_ratio: \([0-9]*\) requests a batch$/\1/p' "$log")
[[ $requests =~ ^[0-9]+$ ]] ||
  { echo "no 'hit_ratio: N requests a batch' line from $bin --instructions" >&2; exit 1; }
callgrind_annotate --inclusive=yes "$out" | python3 -c '
import re, sys
requests = int(sys.argv[1])
counts = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*hit_ratio::(bare|hit)_batch\b", line)
    if m and m.group(2) not in counts:
        counts[m.group(2)] = int(m.group(1).replace(",", "")) / requests
if set(counts) != {"bare", "hit"}:
    sys.exit(f"hit_ratio::bare_batch and hit_ratio::hit_batch not both in the profile: {sorted(counts)}")
bare, hit = counts["bare"], counts["hit"]
print(f"hit-instructions: bare service {bare:.0f}, memory-store hit {hit:.0f} instructions a request; hit over bare {hit / bare:.2f}x")
' "$requests"
