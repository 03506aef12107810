#!/usr/bin/env bash
# A soak run, not part of CI: the proxy on Redis in front of the slow origin
# at a fixed rate for SOAK_SECONDS (default 600), while Redis is killed and
# restarted or frozen at random every 40-80 s. Prints the proxy's resident
# memory, live tasks and flights at the start and at the end (and every
# 10 s into soak.log), and the load's failures.
#
#   bench/soak.sh                 # 10 minutes
#   SOAK_SECONDS=120 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS=${SOAK_SECONDS:-600}
ulimit -n 20000
cargo build --quiet --release --example origin --example proxy --example loadgen
bin=target/release/examples
dir=$(mktemp -d)
cleanup() {
  kill $(cat "$dir/pids" 2>/dev/null) 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  sleep 0.5
  rm -rf "$dir"
}
trap cleanup EXIT
started() { echo "$1" >> "$dir/pids"; }
listening() {
  for _ in $(seq 100); do
    grep -q '^listening on ' "$1" 2>/dev/null && { sed -n 's/^listening on //p' "$1" | head -1; return; }
    sleep 0.1
  done
  echo "no 'listening on' line in $1" >&2
  exit 1
}

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.1; done
}
start_redis

"$bin/origin" --listen 127.0.0.1:0 --max-age 2 > "$dir/origin.log" 2>&1 &
started $!
origin=$(listening "$dir/origin.log")
"$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" --policy swr:2s,30s \
  --redis "redis://127.0.0.1:$redis_port" --report-every 10s > "$dir/proxy.log" 2> "$dir/soak.log" &
started $!
proxy=$(listening "$dir/proxy.log")

"$bin/loadgen" --url "$proxy/soak" --rate 300 --duration "$SOAK_SECONDS" --keys 100 --ttl 2 \
  --origin "$origin" > "$dir/load.txt" 2>&1 &
load=$!

# Random faults until the load ends.
faults=0
while kill -0 "$load" 2>/dev/null; do
  sleep $((40 + RANDOM % 40))
  kill -0 "$load" 2>/dev/null || break
  pid=$(cat "$dir/redis.pid")
  if [ $((RANDOM % 2)) -eq 0 ]; then
    echo "$(date +%T) fault: Redis killed, restarted 2 s later"
    kill -9 "$pid"; sleep 2; start_redis
  else
    echo "$(date +%T) fault: Redis frozen for 2 s"
    kill -STOP "$pid"; sleep 2; kill -CONT "$pid"
  fi
  faults=$((faults + 1))
done
wait "$load" || true

echo "faults: $faults"
echo "the proxy each minute (memory, live tasks, open descriptors, flights), the first line before any load:"
grep '^report' "$dir/soak.log" | awk 'NR == 1 || (NR - 1) % 6 == 0 {print $2, $3, $4, $5}'
grep -E '^statuses|^RESULT|waited' "$dir/load.txt"
cp "$dir/soak.log" target/soak.log
echo "every report: target/soak.log"
