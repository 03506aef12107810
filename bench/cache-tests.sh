#!/usr/bin/env bash
# HTTP cache conformance (issue 16): the public HTTP cache test suite
# (http-tests/cache-tests, the one behind cache-tests.fyi) through the
# `proxy` example, nginx and Varnish, in one run, against the suite's own
# origin server.
#
#   bench/cache-tests.sh                          # about 4 minutes, plus the proxy's build
#   CACHE_TESTS_DIR=~/src/cache-tests bench/cache-tests.sh   # your checkout
#   RESULTS_DIR=/tmp/ct bench/cache-tests.sh      # keep each results.json
#   PROXY_POLICY=ttl:3600s bench/cache-tests.sh  # an operator's policy instead of Policy::origin
#
# The suite is the snapshot in ../shared/cache-tests (read-only: it is
# copied to a temporary folder, and its dependencies installed there with
# npm), or the checkout CACHE_TESTS_DIR points at (installed in place).
# Each results.json is summarised by bench/cache-tests-summary.mjs with the
# suite's own `determineTestResult`. Prints one table, the proxy's failing
# tests, and the published figures of other caches for the same suite
# version; appends them with the date, the machine and the commit to
# BENCHMARKS.md, under "HTTP cache conformance (cache-tests)".
#
# Installs nginx and Varnish from Debian's packages when they are missing
# (without starting their system services); a system that cannot be
# installed or started is reported and left out. Needs Node.js (20 works).
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$SECONDS

PROXY_POLICY=${PROXY_POLICY:-origin:1d}
snapshot=$(cd .. && pwd)/shared/cache-tests
[ -d "$snapshot" ] || snapshot=/work/shared/cache-tests

missing=()
for tool in nginx:nginx varnishd:varnish; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  # Debian starts a package's service when it installs it; we run our own
  # instances on free loopback ports, so a policy-rc.d that refuses every
  # start (as Docker images have) is in place for the install.
  policy_rc=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_rc=1
  fi
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "could not install ${missing[*]}: going on without" >&2
  fi
  [ -z "$policy_rc" ] || rm -f /usr/sbin/policy-rc.d
fi
command -v node >/dev/null || { echo "cache-tests needs Node.js" >&2; exit 1; }
# Empty when not installed (then that system is left out).
nginx_version=$(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/||p' || true)
varnish_version=$(varnishd -V 2>&1 | sed -n '1s/.*(varnish-\([0-9.]*\).*/\1/p' || true)

cargo build --quiet --release --example proxy
bin=${CARGO_TARGET_DIR:-target}/release/examples

dir=$(mktemp -d)
chmod 755 "$dir"
# Every server runs in a session of its own (setsid), so that stopping its
# process group also stops what it spawned (npm's node, nginx's workers,
# Varnish's child), and a Ctrl-C reaches none of them but the cleanup.
cleanup() {
  local pid
  [ ! -f "$dir/pids" ] || while read -r pid; do
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  done < "$dir/pids"
  sleep 0.5
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started() { echo "$1" >> "$dir/pids"; }

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'
}
# Whether something answers on 127.0.0.1:$1 within 10 s.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

if [ -n "${CACHE_TESTS_DIR:-}" ]; then
  suite=$(cd "$CACHE_TESTS_DIR" && pwd)
else
  suite=$dir/cache-tests
  cp -r "$snapshot" "$suite"
  chmod -R u+w "$suite"
fi
echo "== installing the suite's dependencies in $suite"
# The suite asks for a newer Node than 20 in some dependencies' engines:
# npm warns and goes on, and the suite runs.
if ! (cd "$suite" && npm i --omit=dev --no-audit --no-fund) > "$dir/npm-install.log" 2>&1; then
  cat "$dir/npm-install.log" >&2
  exit 1
fi

# The suite's origin. Its pid file goes in our folder, not the default
# /tmp/http-cache-test-server.pid that another run would share. (It binds
# every interface: the suite's server takes a port, not an address.)
origin_port=$(free_port)
(cd "$suite" && exec setsid env npm_config_port="$origin_port" npm_config_pidfile="$dir/origin.pid" \
  npm run server) > "$dir/origin.log" 2>&1 &
started $!
wait_port "$origin_port" || { echo "the suite's origin did not start:" >&2; cat "$dir/origin.log" >&2; exit 1; }
origin=127.0.0.1:$origin_port

# nginx as the suite's docker image configures it (docker/nginx/nginx.conf
# inside Ubuntu's stock nginx.conf, worker_connections raised to 2048 by
# its entrypoint), with every path in our folder so that it needs no root.
start_nginx() { # $1 port
  local root=$dir/nginx
  mkdir -p "$root/cache" "$root/tmp"
  cat > "$root/nginx.conf" <<EOF
# Workers as the user running this (as root, nginx would drop them to
# nobody, who cannot enter our folder); ignored when not root.
user $(id -un);
worker_processes auto;
pid $root/nginx.pid;
error_log $root/error.log warn;
events { worker_connections 2048; }
http {
  # From Ubuntu's stock nginx.conf, which the suite's image keeps:
  # gzip changes what some responses look like.
  sendfile on;
  tcp_nopush on;
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  gzip on;
  access_log $root/access.log;
  client_body_temp_path $root/tmp/body;
  fastcgi_temp_path $root/tmp/fastcgi;
  uwsgi_temp_path $root/tmp/uwsgi;
  scgi_temp_path $root/tmp/scgi;
  # The suite's docker/nginx/nginx.conf:
  proxy_cache_path $root/cache levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
  proxy_temp_path $root/tmp/proxy;
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://$origin;
      proxy_cache my-cache;
      proxy_cache_revalidate on;
      proxy_http_version 1.1;
    }
  }
}
EOF
  setsid nginx -p "$root" -e "$root/error.log" -c "$root/nginx.conf" -g 'daemon off;' > "$root/nginx.log" 2>&1 &
  started $!
  wait_port "$1" || { cat "$root/nginx.log" "$root/error.log" >&2 2>/dev/null; return 1; }
}

# Varnish as the suite's image runs it: Debian's stock default.vcl (a
# backend and nothing else) pointed at the origin, and docker/serve.sh's
# parameters: nothing without explicit freshness is cached, no grace, and
# entries kept an hour for revalidation. `-j none` and our own working
# folder (-n) so that it needs no root and no varnish user.
start_varnish() { # $1 port
  local root=$dir/varnish
  mkdir -p "$root"
  cat > "$root/default.vcl" <<EOF
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "$origin_port"; }
EOF
  setsid varnishd -F -j none -a "127.0.0.1:$1" -f "$root/default.vcl" -n "$root/work" -s malloc,64M \
    -p default_ttl=0 -p default_grace=0 -p default_keep=3600 > "$root/varnish.log" 2>&1 &
  started $!
  wait_port "$1" || { cat "$root/varnish.log" >&2; return 1; }
}

# The proxy example with its default policy, origin:1d (Policy::origin:
# freshness from the origin's headers, a day at most), unless PROXY_POLICY
# says otherwise.
start_proxy() { # prints its URL
  setsid "$bin/proxy" --upstream "http://$origin" --listen 127.0.0.1:0 --policy "$PROXY_POLICY" \
    > "$dir/proxy.log" 2>&1 &
  started $!
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$dir/proxy.log"; then
      sed -n 's/^listening on //p' "$dir/proxy.log" | head -1
      return 0
    fi
    sleep 0.1
  done
  cat "$dir/proxy.log" >&2
  return 1
}

declare -A url
declare -A name=([proxy]="tower-stampede proxy, --policy $PROXY_POLICY")
systems=()
if url[proxy]=$(start_proxy); then
  systems+=(proxy)
else
  echo "the proxy example did not start: left out" >&2
fi
for s in nginx varnish; do
  if ! command -v "${s/varnish/varnishd}" >/dev/null; then
    echo "$s is not installed: left out" >&2
    continue
  fi
  port=$(free_port)
  if "start_$s" "$port"; then
    url[$s]=http://127.0.0.1:$port
    systems+=("$s")
  else
    echo "$s did not start: left out" >&2
  fi
done
name[nginx]="nginx $nginx_version, proxy_cache + proxy_cache_revalidate"
name[varnish]="Varnish $varnish_version, default_ttl=0 grace=0 keep=3600"

# One system at a time: the tests wait on clocks (staleness, Age), and two
# runs at once on two shared cores could make them miss.
summary_args=()
for s in "${systems[@]}"; do
  echo "== cache-tests through ${name[$s]} (${url[$s]})"
  t0=$SECONDS
  (cd "$suite" && exec setsid env npm_config_base="${url[$s]}" npm run --silent cli) \
    > "$dir/$s.json" 2> "$dir/$s.err" &
  started $!
  if wait $! && node -e 'JSON.parse(require("fs").readFileSync(process.argv[1]))' "$dir/$s.json" 2>/dev/null; then
    echo "   $((SECONDS - t0)) s"
    summary_args+=("${name[$s]}=$dir/$s.json")
  else
    echo "   the suite's client failed against $s: left out" >&2
    tail -5 "$dir/$s.err" >&2
  fi
done
if [ -n "${RESULTS_DIR:-}" ]; then
  mkdir -p "$RESULTS_DIR"
  for s in "${systems[@]}"; do cp "$dir/$s.json" "$RESULTS_DIR/" 2>/dev/null || true; done
fi
[ ${#summary_args[@]} -gt 0 ] || { echo "no results" >&2; exit 1; }

summary() { node bench/cache-tests-summary.mjs --suite "$suite" "$@"; }
summary --list "${name[proxy]}" --details "${summary_args[@]}"
# The published figures (results/ of the suite: the caches of
# cache-tests.fyi, other than browsers), through the same script.
published=$(summary --published)
echo
echo "$published"

minutes=$(( (SECONDS - started_at + 30) / 60 ))
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples || echo "+changes")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
suite_version=$(git -C "$suite" rev-parse --short HEAD 2>/dev/null ||
  sed -n 's/.*commit \([0-9a-f]*\) of \([0-9-]*\).*/commit \1 of \2/p' "$suite/SNAPSHOT.md" | head -1)
run=$(
  echo "### bench/cache-tests.sh, $(date -u +%Y-%m-%d), commit $commit"
  echo
  echo "Machine: $(nproc) cores ($cpu), shared; Node $(node --version), nginx ${nginx_version:-not installed}, Varnish ${varnish_version:-not installed}. Suite: cache-tests ${suite_version:-?}. One run of ${minutes} min."
  echo
  echo "The proxy runs \`--policy $PROXY_POLICY\`."
  echo
  summary --list "${name[proxy]}" "${summary_args[@]}"
  echo
  echo "Published results in the suite's \`results/\` (cache-tests.fyi), same summary:"
  echo
  echo "$published"
)
section="## HTTP cache conformance (cache-tests)"
if ! grep -qxF "$section" BENCHMARKS.md; then
  cat >> BENCHMARKS.md <<EOF

$section

\`bench/cache-tests.sh\` runs the public HTTP cache test suite
(http-tests/cache-tests, whose results cache-tests.fyi publishes; a
snapshot in \`shared/cache-tests\`) through the \`proxy\` example, nginx and
Varnish configured as the suite's own docker image configures them, and
counts with the suite's \`determineTestResult\`
(\`bench/cache-tests-summary.mjs\`). A test whose \`depends_on\` did not pass
is a dependency failure whatever its own result; \`check\` tests answer
yes or no and are no failure; \`optimal\` ones fail as optional failures.
It measures where the proxy stands against RFC 9111 (issue 16): the
suite is not a pass-or-fail conformance test, as its README says.
EOF
fi
# The run goes at the end of the section, before any later "## " heading.
printf '%s\n' "$run" > "$dir/run.md"
awk -v section="$section" -v runfile="$dir/run.md" '
  function put() { while ((getline line < runfile) > 0) print line; done = 1 }
  $0 == section { inside = 1 }
  inside && !done && /^## / && $0 != section { put(); print "" }
  { print }
  END { if (!done) { print ""; put() } }
' BENCHMARKS.md > "$dir/BENCHMARKS.md"
cp "$dir/BENCHMARKS.md" BENCHMARKS.md
echo "appended to BENCHMARKS.md; $((SECONDS - started_at)) s in all"
