#!/usr/bin/env bash
# Side by side, in one run: nginx (proxy_cache_lock), Varnish (grace), the
# `proxy` example (memory store, Redis store, Redis store with a 64 MiB
# near cache) and the Rust peers of bench/peers (moka 0.12's get_with by
# hand, tower-http-cache 0.6, hitbox 0.2: axum proxies of the example's
# shape, each crate set up as its docs recommend) in front of one slow
# counting origin (200 ms, 1 KiB JSON, Cache-Control: public, max-age=60).
#
#   bench/compare.sh            # everything, about 9 minutes
#   RATE_SECONDS=10 bench/compare.sh   # shorter fixed-rate runs
#   HITS_ROUNDS=1 bench/compare.sh     # one round of (b) instead of three
#   STAMPEDE_ROUNDS=1 bench/compare.sh # one stampede of (a) instead of three
#
# (a) a cold-key stampede, 1000 requests released together, STAMPEDE_ROUNDS
#     rounds with the systems interleaved, a new key each: origin calls in
#     each round, median p50 / p99 / max, for every system;
# (b) hits: wrk, one thread, 50 connections, 10 s, HITS_ROUNDS rounds with
#     the systems interleaved (the Rust peers among them): median req/s,
#     p50 / p99, and the near cache's hits/s against the memory store's and
#     the Redis store's;
# (a) and (b) also give the memory store's figure over each Rust peer's,
#     round by round: the median ratio and every round's;
# (c) a fixed rate (200/s over 10 keys for 30 s) on entries that live 2 s,
#     under each policy: origin calls per key per 2 s window, p99 inside
#     expiry windows against outside, requests that waited on the origin;
# (d) four proxy processes on one Redis under (a), without and with near
#     caches: origin calls;
# (e) hits at one fixed rate, half the slowest Rust peer's hits/s in (b),
#     over 10 warm keys (an open loop, bench/fixed-rate.sh), RATE_ROUNDS
#     rounds of 6 s interleaved, for the proxy on its memory store and its
#     near cache and for the Rust peers: median p50 / p99 per second and
#     the proxy's CPU time per request. wrk's closed loop in (b) keeps 50
#     requests in flight, so there the quicker a proxy answers, the more it
#     and wrk contend for the two cores and the longer the tail wrk sees;
#     at one rate for all, the tail and the cost are the proxy's own.
# (c) and (d) measure the layer's policies and its Redis store, which the
# Rust peers, memory caches with a fixed TTL, have no counterpart of.
#
# Installs nginx, Varnish, wrk and redis-server from Debian's packages when
# they are missing. Prints one table and appends it to BENCHMARKS.md with
# the date, the machine and the commit.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE_SECONDS=${RATE_SECONDS:-30}
# One wrk run on this shared machine can be off by a fifth: the median of
# rounds, each system in turn, is what the ratios are taken from.
HITS_ROUNDS=${HITS_ROUNDS:-3}
# One stampede's p99 moves by 10 to 30 ms from run to run, and the first
# one is each proxy's first load since it started: the median of rounds.
STAMPEDE_ROUNDS=${STAMPEDE_ROUNDS:-3}
RATE_ROUNDS=${RATE_ROUNDS:-3}
# What is measured is what was checked out when the run began (the peers'
# sources count too: they are measured in the same table).
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples bench/peers || echo "+changes")
missing=()
for tool in nginx:nginx varnishd:varnish wrk:wrk redis-server:redis-server; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
ulimit -n 20000
cargo build --quiet --release --example origin --example proxy --example loadgen
bin=${CARGO_TARGET_DIR:-target}/release/examples
# The peers are a workspace of their own (their caches stay out of the
# crate's lock file and builds), so their binaries land in its target
# folder unless CARGO_TARGET_DIR puts every build in one.
cargo build --quiet --release --manifest-path bench/peers/Cargo.toml
peers=${CARGO_TARGET_DIR:-bench/peers/target}/release

dir=$(mktemp -d)
chmod 755 "$dir"
# Servers started in command substitutions are not this shell's jobs: each
# one's pid goes in a file that the cleanup reads.
cleanup() {
  kill $(cat "$dir/pids" 2>/dev/null) 2>/dev/null || true
  sleep 0.5
  rm -rf "$dir"
}
trap cleanup EXIT
started() { echo "$1" >> "$dir/pids"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Waits until something answers on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}
# Starts an example server that prints "listening on URL"; prints URL.
start_example() {
  local log=$1
  shift
  "$@" > "$log" 2>&1 &
  started $!
  echo $! > "$log.pid"
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$log"; then
      sed -n 's/^listening on //p' "$log" | head -1
      return
    fi
    sleep 0.1
  done
  echo "no 'listening on' line from $*:" >&2
  cat "$log" >&2
  exit 1
}
result() { # the value of key $2 in loadgen's RESULT line in file $1
  sed -n 's/^RESULT //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

start_nginx() { # $1 origin url, $2 port
  local root="$dir/nginx-$2"
  mkdir -p "$root/cache" "$root/tmp"
  cat > "$root/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $root/nginx.pid;
error_log $root/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $root/tmp/body;
  proxy_temp_path $root/tmp/proxy;
  fastcgi_temp_path $root/tmp/fastcgi;
  uwsgi_temp_path $root/tmp/uwsgi;
  scgi_temp_path $root/tmp/scgi;
  proxy_cache_path $root/cache levels=1:2 keys_zone=stampede:10m max_size=100m inactive=10m use_temp_path=off;
  upstream origin { server ${1#http://}; keepalive 256; }
  server {
    listen 127.0.0.1:$2 backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache stampede;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 5s;
      proxy_cache_use_stale updating;
      proxy_cache_background_update on;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
EOF
  nginx -p "$root" -c "$root/nginx.conf" -g 'daemon off;' &
  started $!
  wait_port "$2"
}

start_varnish() { # $1 origin url, $2 port
  local root="$dir/varnish-$2" hostport=${1#http://}
  mkdir -p "$root"
  cat > "$root/default.vcl" <<EOF
vcl 4.1;
backend origin { .host = "${hostport%:*}"; .port = "${hostport##*:}"; }
sub vcl_backend_response { set beresp.grace = 30s; }
EOF
  varnishd -F -j none -a "127.0.0.1:$2" -f "$root/default.vcl" -n "$root/work" -s malloc,256m \
    -p listen_depth=4096 > "$root/varnish.log" 2>&1 &
  started $!
  wait_port "$2"
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$dir/redis.log" 2>&1 &
started $!
wait_port "$redis_port"
redis="redis://127.0.0.1:$redis_port"

# One origin for (a), (b) and (d); one whose entries live 2 s for (c).
origin=$(start_example "$dir/origin.log" "$bin/origin" --listen 127.0.0.1:0)
origin_2s=$(start_example "$dir/origin-2s.log" "$bin/origin" --listen 127.0.0.1:0 --max-age 2)

declare -A url url_2s
nginx_port=$(free_port); start_nginx "$origin" "$nginx_port"; url[nginx]="http://127.0.0.1:$nginx_port"
nginx_2s=$(free_port); start_nginx "$origin_2s" "$nginx_2s"; url_2s[nginx]="http://127.0.0.1:$nginx_2s"
varnish_port=$(free_port); start_varnish "$origin" "$varnish_port"; url[varnish]="http://127.0.0.1:$varnish_port"
varnish_2s=$(free_port); start_varnish "$origin_2s" "$varnish_2s"; url_2s[varnish]="http://127.0.0.1:$varnish_2s"
url[memory]=$(start_example "$dir/proxy-memory.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin")
url[redis]=$(start_example "$dir/proxy-redis.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" --redis "$redis")
url[near]=$(start_example "$dir/proxy-near.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" --redis "$redis" \
  --near-cache 64MiB)
# The Rust peers, in front of the same origin: the same server and upstream
# client as the proxy example, another crate's cache in place of the layer.
url[moka]=$(start_example "$dir/peer-moka.log" "$peers/moka-proxy" --listen 127.0.0.1:0 --upstream "$origin")
url[http-cache]=$(start_example "$dir/peer-http-cache.log" "$peers/tower-http-cache-proxy" --listen 127.0.0.1:0 \
  --upstream "$origin")
url[hitbox]=$(start_example "$dir/peer-hitbox.log" "$peers/hitbox-proxy" --listen 127.0.0.1:0 --upstream "$origin")
url[none]=$origin
systems=(none nginx varnish memory redis near moka http-cache hitbox)
declare -A name=([none]="no cache (origin direct)" [nginx]="nginx 1.22 proxy_cache_lock" [varnish]="Varnish 7.1 grace"
  [memory]="tower-stampede proxy, memory" [redis]="tower-stampede proxy, Redis"
  [near]="tower-stampede proxy, Redis + 64 MiB near cache" [moka]="moka 0.12 get_with (by hand)"
  [http-cache]="tower-http-cache 0.6 (moka)" [hitbox]="hitbox 0.2 (moka)")

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rows=()
row() { rows+=("| $* |"); echo "| $* |"; }

echo "== (a) cold-key stampede, 1000 requests released together, $STAMPEDE_ROUNDS round(s)"
for round in $(seq "$STAMPEDE_ROUNDS"); do
  for s in "${systems[@]}"; do
    "$bin/loadgen" --url "${url[$s]}/a/cold-$s-$$-$round" --requests 1000 --origin "$origin" \
      > "$dir/a-$s-$round.txt" || true
  done
done
each() { for f in "${files[@]}"; do result "$f" "$1"; done; } # key $1 of each file in $files
for s in "${systems[@]}"; do
  files=("$dir"/a-"$s"-*.txt)
  row "(a) stampede | ${name[$s]} | $(each origin_calls | paste -sd/) origin calls | p50 $(each p50 | median) / p99 $(each p99 | median) / max $(each max | median) ms | rounds' p99: $(each p99 | paste -sd' ') ms; failed $(each failed | paste -sd/)"
done
# Paired: the memory store's figure over a Rust peer's, round by round.
# The two run seconds apart, so a slow minute of the machine falls on both
# sides of each ratio; the spread of the ratios says whether a difference
# of medians is more than this machine's noise.
paired() { # $1 section (a or b), $2 rounds, $3 peer: one ratio a round
  for round in $(seq "$2"); do
    awk -v m="$(value "$1" memory "$round")" -v p="$(value "$1" "$3" "$round")" \
      'BEGIN { if (m > 0 && p > 0) printf "%.3f\n", m / p }'
  done
}
value() { # $1 section, $2 system, $3 round: (a)'s p99, (b)'s hits/s
  case $1 in
    a) result "$dir/a-$2-$3.txt" p99 ;;
    b) awk '/Requests\/sec/ {print $2}' "$dir/b-$2-$3.txt" ;;
  esac
}
paired_rows() { # $1 section, $2 rounds, $3 the figure, $4 how to read the ratio
  for peer in moka http-cache hitbox; do
    ratios=$(paired "$1" "$2" "$peer")
    row "($1) paired | memory store / ${name[$peer]} | | $3 ratio, median $(echo "$ratios" | median) ($4) | rounds: $(echo "$ratios" | paste -sd' ')"
  done
}
paired_rows a "$STAMPEDE_ROUNDS" p99 "below 1: the memory store's is shorter"

echo "== (b) hits: wrk -t1 -c50 -d10s, $HITS_ROUNDS round(s)"
hit_systems=(nginx varnish memory redis near moka http-cache hitbox)
# Round after round rather than system after system, so that a slow minute
# of the machine falls on every system alike. Each run has a key of its
# own, stored just before it: a round takes longer than the origin's 60 s
# max-age, and a key that expired during a run makes its 50 connections
# wait one origin call, which wrk's correction for coordinated omission
# counts as thousands of slow samples (a p99 near 200 ms for whichever
# systems wait on a miss rather than serve stale).
for round in $(seq "$HITS_ROUNDS"); do
  for s in "${hit_systems[@]}"; do
    # The first request stores the entry; the second is a hit (for the
    # near cache, the read from Redis that fills it).
    target="${url[$s]}/b/warm-$s-$round"
    curl -s -o /dev/null "$target"
    curl -s -o /dev/null "$target"
    wrk -t1 -c50 -d10s --latency "$target" > "$dir/b-$s-$round.txt"
  done
done
ms() { # wrk's latency (850.00us, 1.21ms, 1.02s) in ms
  awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /[0-9]s$/ && $1 !~ /ms$/) v *= 1000; printf "%.2f\n", v }'
}
declare -A hits
for s in "${hit_systems[@]}"; do
  files=("$dir"/b-"$s"-*.txt)
  hits[$s]=$(awk '/Requests\/sec/ {print $2}' "${files[@]}" | median)
  p50=$(awk '$1 == "50%" {print $2}' "${files[@]}" | ms | median)
  p99=$(awk '$1 == "99%" {print $2}' "${files[@]}" | ms | median)
  each=$(awk '/Requests\/sec/ {printf "%s%.0f", sep, $2; sep = ", "}' "${files[@]}")
  errors=$(cat "${files[@]}" | grep -c "Non-2xx\|Socket errors" || true)
  row "(b) hits | ${name[$s]} | ${hits[$s]} req/s | p50 $p50 / p99 $p99 ms | rounds: $each req/s; error lines $errors"
done
paired_rows b "$HITS_ROUNDS" hits/s "above 1: the memory store answers more"
# The near cache's targets (issue 15), from the medians of this run.
near_ratios="(b) near cache: $(awk -v n="${hits[near]}" -v m="${hits[memory]}" -v r="${hits[redis]}" \
  'BEGIN { printf "%.0f%% of the memory store'"'"'s hits/s (target >= 90%%), %.2fx the Redis store'"'"'s (target >= 1.5x)", 100 * n / m, n / r }')"
echo "$near_ratios"

echo "== (c) 200 requests/s over 10 keys for ${RATE_SECONDS} s, entries live 2 s"
proxy_2s() { # $1 policy: a proxy in front of the 2 s origin
  start_example "$dir/proxy-2s-$1.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin_2s" --policy "$1"
}
declare -A rate_url=([nginx]="${url_2s[nginx]}" [varnish]="${url_2s[varnish]}")
rate_url[ttl]=$(proxy_2s ttl:2s)
rate_url[xfetch]=$(proxy_2s xfetch:2s)
rate_url[swr]=$(proxy_2s swr:2s,30s)
declare -A rate_name=([nginx]="nginx, use_stale updating + background_update" [varnish]="Varnish, grace 30 s"
  [ttl]="tower-stampede ttl:2s" [xfetch]="tower-stampede xfetch:2s" [swr]="tower-stampede swr:2s,30s")
for s in nginx varnish ttl xfetch swr; do
  "$bin/loadgen" --url "${rate_url[$s]}/c/$s-$$" --rate 200 --duration "$RATE_SECONDS" --keys 10 --ttl 2 \
    --origin "$origin_2s" > "$dir/c-$s.txt" || true
  row "(c) rate | ${rate_name[$s]} | $(result "$dir/c-$s.txt" per_key_window) origin calls per key per window | p99 in expiry windows $(result "$dir/c-$s.txt" p99_inside) / outside $(result "$dir/c-$s.txt" p99_outside) ms | waited on origin $(result "$dir/c-$s.txt" waited), failed $(result "$dir/c-$s.txt" failed)"
done

echo "== (d) four proxies on one Redis, 1000 requests released together"
replicas=()
for i in 1 2 3 4; do
  replicas+=(--url "$(start_example "$dir/replica-$i.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" --redis "$redis")/d/cold-$$")
done
# One service name for all four, as behind a load balancer: the host is
# part of the cache key.
"$bin/loadgen" "${replicas[@]}" --host posts.internal --requests 1000 --origin "$origin" > "$dir/d.txt" || true
row "(d) 4 replicas | tower-stampede proxy x4, one Redis | $(result "$dir/d.txt" origin_calls) origin calls | p50 $(result "$dir/d.txt" p50) / p99 $(result "$dir/d.txt" p99) / max $(result "$dir/d.txt" max) ms | failed $(result "$dir/d.txt" failed)"
# The same with near caches: waiters read the key after the leader's write,
# which must not be served from a near copy older than it.
replicas=()
for i in 1 2 3 4; do
  replicas+=(--url "$(start_example "$dir/replica-near-$i.log" "$bin/proxy" --listen 127.0.0.1:0 --upstream "$origin" \
    --redis "$redis" --near-cache 64MiB)/d/cold-near-$$")
done
"$bin/loadgen" "${replicas[@]}" --host posts.internal --requests 1000 --origin "$origin" > "$dir/d-near.txt" || true
row "(d) 4 replicas | tower-stampede proxy x4, one Redis, 64 MiB near caches | $(result "$dir/d-near.txt" origin_calls) origin calls | p50 $(result "$dir/d-near.txt" p50) / p99 $(result "$dir/d-near.txt" p99) / max $(result "$dir/d-near.txt" max) ms | failed $(result "$dir/d-near.txt" failed)"

echo "== (e) hits at a fixed rate, $RATE_ROUNDS round(s)"
source bench/fixed-rate.sh
rate_systems=(memory near moka http-cache hitbox)
declare -A proc_log=([memory]=proxy-memory [near]=proxy-near [moka]=peer-moka [http-cache]=peer-http-cache
  [hitbox]=peer-hitbox)
rate=$(for s in moka http-cache hitbox; do echo "${hits[$s]}"; done | sort -g | head -1 | awk '{ print int($1 / 2000) * 1000 }')
for round in $(seq "$RATE_ROUNDS"); do
  for s in "${rate_systems[@]}"; do
    # Keys of the round's own, stored just before it: the whole of (e)
    # outlasts the origin's 60 s max-age.
    warm_ten "${url[$s]}/e/$round"
    fixed_rate "${url[$s]}/e/$round" "$(cat "$dir/${proc_log[$s]}.log.pid")" "$rate" 6 "$dir/e-$s-$round.txt" || true
  done
done
for s in "${rate_systems[@]}"; do
  files=("$dir"/e-"$s"-*.txt)
  p50=$(for f in "${files[@]}"; do per_second 3 "$f" 6; done | median)
  p99s=$(for f in "${files[@]}"; do per_second 4 "$f" 6; done)
  row "(e) fixed rate | ${name[$s]} | $rate/s | p50 $p50 / p99 $(echo "$p99s" | median) ms | rounds' p99: $(echo "$p99s" | paste -sd' ') ms; CPU $(cat "$dir"/e-"$s"-*.txt.cpu | median) us a request; failed $(for f in "${files[@]}"; do result "$f" failed; done | paste -sd/)"
done

cores=$(nproc)
memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
{
  echo
  echo "### bench/compare.sh, $(date -u +%Y-%m-%d), $cores cores, $memory, commit $commit"
  echo
  echo "Origin: 200 ms, 1 KiB JSON, \`Cache-Control: public, max-age=60\` (2 for (c)). Release builds, loopback."
  echo
  echo "| scenario | system | origin | latency | notes |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "$near_ratios; $STAMPEDE_ROUNDS round(s) of (a), $HITS_ROUNDS of (b) and $RATE_ROUNDS of (e), medians."
} | tee -a BENCHMARKS.md
