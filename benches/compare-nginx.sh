#!/usr/bin/env bash
# keydrop vs nginx secure_link, side by side, on loopback only.
#
#   benches/compare-nginx.sh [SECONDS]      (default 10 s per run)
#   KEYDROP_BIN=path/to/keydrop benches/compare-nginx.sh   (measure a binary built earlier)
#   KEYDROP_BACKEND=postgres benches/compare-nginx.sh      (keydrop on a local PostgreSQL, fsync on)
#   COMPARE_MODE=legacy benches/compare-nginx.sh           (the old mode: see below)
#   SIZES=4k benches/compare-nginx.sh                      (only the 4 KiB rounds: no 1 MiB, no 1 GiB)
#   ROUNDS=1 benches/compare-nginx.sh 45                   (wrk rounds per size, default 3; long rounds
#                                                           need LINKS_4K × 50 above the downloads)
#   ROUNDS_1G=9 benches/compare-nginx.sh                   (1 GiB single-stream rounds, default 5, at
#                                                           most 49, after one unmeasured download
#                                                           from each server)
#   PROFILE=perf benches/compare-nginx.sh                  (also `perf record -g` keydrop during
#                                                           the first 4 KiB round; top entries in
#                                                           perf-top.txt in the work dir;
#                                                           PROFILE_SIZE=1m profiles the 1 MiB round;
#                                                           PROFILE_CALLGRAPH="--call-graph dwarf"
#                                                           for stacks through code without frame
#                                                           pointers; PROFILE_FREQ=1999 for more
#                                                           samples than the default 499 Hz;
#                                                           PROFILE_SYSTEM=1 records every process
#                                                           and kernel thread, not only keydrop;
#                                                           PROFILE_SERVER=nginx records nginx's
#                                                           processes in its round instead,
#                                                           PROFILE_SERVER=both each server in its
#                                                           first round: perf-keydrop.data and
#                                                           perf-nginx.data)
#   PROFILE=strace benches/compare-nginx.sh                (system calls by kind, `strace -c`,
#                                                           over the first 4 KiB round: strace.txt)
#
# Installs nginx and wrk from Debian's packages if missing, serves the same 4 KiB and 1 MiB files
# from nginx behind secure_link (signature + expiry, counts nothing) and from keydrop (signed,
# durably counted and logged), and runs wrk against each in turn — A B A B, 3 rounds, each after a
# `sync` so that no round waits on the page cache the one before it left dirty — with a Lua
# script that walks a list of links. Prints every figure and the keydrop/nginx ratios.
#
# The default mode is the operators' (issue "speed as users run it"): every keydrop link is a
# real 50-use link and there are enough of them that none runs out (LINKS_4K, default 30,000;
# LINKS_1M, default 3,000), so requests land on tens of thousands of different links; nginx gets
# as many distinct signed URLs; both run at their default log levels, keydrop's request log and
# nginx's access log each written to a file; both are driven by the same walker, each wrk thread
# starting at its own place in the list. COMPARE_MODE=legacy is the earlier setup: 1,000 links of
# 1,000,000 uses, keydrop at KEYDROP_LOG=warn, nginx's access log off, one nginx URL per size.
set -euo pipefail
SECS=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keydrop-compare.XXXXXX)
NGINX_PORT=18480
KD_PUBLIC=18481
KD_ADMIN=18482
SECRET=bench-secret
MODE=${COMPARE_MODE:-realistic}
SIZES=${SIZES:-4k 1m 1g}
ROUNDS=${ROUNDS:-3}
ROUNDS_1G=${ROUNDS_1G:-5}
case "$MODE" in
  realistic) N4K=${LINKS_4K:-30000}; N1M=${LINKS_1M:-3000} ;;
  legacy) N4K=1000; N1M=1000 ;;
  *) echo "COMPARE_MODE must be realistic or legacy" >&2; exit 2 ;;
esac

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || [ ! -x /usr/bin/time ]; then
  echo "installing nginx, wrk and time from Debian's packages…"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk time >/dev/null
fi
nginx -V 2>&1 | grep -q secure_link || { echo "this nginx lacks http_secure_link_module" >&2; exit 1; }

BACKEND=${KEYDROP_BACKEND:-redb}
PG_PORT=18483
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  # keydrop first: stopped after its database, it would log every pooled connection it lost.
  [ -n "${KD_PID:-}" ] && kill "$KD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -d "$WORK/pg" ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  # Keep wrk's output (printed at the end); drop the generated files and data (over 1 GiB a run).
  rm -rf "$WORK/files" "$WORK/data" "$WORK/pg"
}
trap cleanup EXIT

if [ -n "${KEYDROP_BIN:-}" ]; then
  KD="$KEYDROP_BIN"   # a binary built earlier (before/after comparisons of two builds)
else
  echo "building keydrop (release)…"
  (cd "$ROOT" && cargo build --release -q)
  KD="$ROOT/target/release/keydrop"
fi

mkdir -p "$WORK/files" "$WORK/data" "$WORK/nginx"
head -c 4096 /dev/urandom >"$WORK/files/f4k.bin"
head -c 1048576 /dev/urandom >"$WORK/files/f1m.bin"
# The 1 GiB single-stream file (real bytes, read once below so both servers get a warm cache).
case " $SIZES " in
  *" 1g "*) head -c 1073741824 /dev/urandom >"$WORK/files/f1g.bin" ;;
  *) head -c 4096 /dev/urandom >"$WORK/files/f1g.bin" ;;   # not measured: a stand-in
esac
# nginx's workers run as an unprivileged user: let them read the files.
chmod 755 "$WORK" "$WORK/files"
chmod 644 "$WORK/files/"*
# Write the generated files out before measuring: otherwise the first rounds measure the kernel
# flushing 1 GiB in the background, which stalls every fsync on the filesystem (keydrop's journal
# and checkpoints) and nothing of nginx's.
sync

# --- PostgreSQL, when keydrop is measured on it ------------------------------------------------
STORAGE_EXTRA=""
if [ "$BACKEND" = postgres ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$WORK/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
  as_pg "$PG_BIN/initdb" -A trust -U keydrop -D "$WORK/pg/data" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -w -D "$WORK/pg/data" -l "$WORK/pg/log" \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p $PG_PORT -U keydrop keydrop
  head -c 32 /dev/urandom >"$WORK/kek.key"
  STORAGE_EXTRA="backend = \"postgres\"
postgres_url = \"postgres://keydrop@127.0.0.1:$PG_PORT/keydrop\"
kek_file = \"kek.key\""
  echo "keydrop on PostgreSQL ($("$PG_BIN/postgres" --version), fsync on)"
fi

# --- nginx with secure_link -------------------------------------------------------------------
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  $( [ "$MODE" = legacy ] && echo "access_log off;" || echo "access_log $WORK/nginx/access.log;" )
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { application/octet-stream bin; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /s/ {
      secure_link \$arg_md5,\$arg_expires;
      secure_link_md5 "\$secure_link_expires\$uri $SECRET";
      if (\$secure_link = "") { return 403; }
      if (\$secure_link = "0") { return 410; }
      alias $WORK/files/;
    }
  }
}
NGINX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"

expires=$(( $(date +%s) + 86400 ))
nginx_link() {
  local uri="/s/$1"
  local md5
  md5=$(printf '%s' "$expires$uri $SECRET" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =)
  echo "$uri?md5=$md5&expires=$expires"
}

# --- keydrop ----------------------------------------------------------------------------------
# One token per principal: a catalog admin and a partner agent.
TOKEN_OUT=$("$KD" token new --role global_admin --name bench)
TOKEN=$(echo "$TOKEN_OUT" | awk '/^token:/ {print $2}')
SHA=$(echo "$TOKEN_OUT" | awk -F'"' '/token_sha256/ {print $2}')
AGENT_OUT=$("$KD" token new --role admin_agent --name bench-agent)
AGENT=$(echo "$AGENT_OUT" | awk '/^token:/ {print $2}')
AGENT_SHA=$(echo "$AGENT_OUT" | awk -F'"' '/token_sha256/ {print $2}')
cat >"$WORK/keydrop.toml" <<TOML
[server]
public_listen = "127.0.0.1:$KD_PUBLIC"
admin_listen = "127.0.0.1:$KD_ADMIN"
public_base_url = "http://127.0.0.1:$KD_PUBLIC"
[storage]
data_dir = "data"
files_dir = "files"
$STORAGE_EXTRA
$( [ "$MODE" = legacy ] && printf '[links]\nmax_uses = 1000000' )
[[principals]]
name = "bench"
role = "global_admin"
token_sha256 = "$SHA"
[[principals]]
name = "bench-agent"
role = "admin_agent"
token_sha256 = "$AGENT_SHA"
TOML
if [ "$MODE" = legacy ]; then
  KEYDROP_LOG=warn "$KD" serve --config "$WORK/keydrop.toml" &
else
  # The default level: one request line per request, written to a file as nginx writes its own.
  "$KD" serve --config "$WORK/keydrop.toml" >"$WORK/keydrop.log" 2>&1 &
fi
KD_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$KD_PUBLIC/healthz" >/dev/null && break; sleep 0.1; done

api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
A="http://127.0.0.1:$KD_ADMIN/api"
api -X PUT "$A/products/bench" -d '{"name":"Bench","kind":"perpetual","unit_price_cents":1,"currency":"USD","cancel_policy":"standard"}' >/dev/null
api -X PUT "$A/products/bench/files/f4k" -d '{"path":"f4k.bin","filename":"f4k.bin","file_type":"4k"}' >/dev/null
api -X PUT "$A/products/bench/files/f1m" -d '{"path":"f1m.bin","filename":"f1m.bin","file_type":"1m"}' >/dev/null
api -X PUT "$A/products/bench/files/f1g" -d '{"path":"f1g.bin","filename":"f1g.bin","file_type":"1g"}' >/dev/null
api -X POST "$A/customers" -d '{"tenant_id":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","domain":"bench.example","name":"Bench","country":"US"}' >/dev/null
ORDER=$(curl -sf -H "Authorization: Bearer $AGENT" -H 'content-type: application/json' -X POST "$A/customers/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee/orders" -d '{"items":[{"product_id":"bench","quantity":1}]}' | sed 's/.*"order_id":"\([^"]*\)".*/\1/')

KD_1G=$(curl -sf -H "Authorization: Bearer $AGENT" -H 'content-type: application/json' -X POST "$A/orders/$ORDER/downloads" \
  -d '{"product_id":"bench","file_type":"1g"}' | grep -o '"url":"[^"]*"' | sed 's/"url":"\([^"]*\)"/\1/')
NG_1G="http://127.0.0.1:$NGINX_PORT$(nginx_link f1g.bin)"

echo "issuing links ($MODE: $N4K of 4 KiB, $N1M of 1 MiB, as many nginx URLs)…"
for kind in $SIZES; do
  [ "$kind" = 1g ] && continue
  n=$N4K; [ "$kind" = 1m ] && n=$N1M
  : >"$WORK/kd-$kind.txt"
  seq 1 "$n" | xargs -P 8 -I{} curl -sf -H "Authorization: Bearer $AGENT" -H 'content-type: application/json' \
    -X POST "$A/orders/$ORDER/downloads" -d "{\"product_id\":\"bench\",\"file_type\":\"$kind\"}" |
    grep -o '"url":"[^"]*"' | sed 's/"url":"http:\/\/[^/]*\([^"]*\)"/\1/' >>"$WORK/kd-$kind.txt"
  if [ "$MODE" = legacy ]; then
    link=$(nginx_link "f$kind.bin")
    for _ in $(seq 1 "$n"); do echo "$link" >>"$WORK/ng-$kind.txt"; done
  else
    # Distinct signed URLs: the same file under n different expiry times.
    python3 - "$n" "$expires" "/s/f$kind.bin" "$SECRET" >"$WORK/ng-$kind.txt" <<'PY'
import base64, hashlib, sys
n, base, uri, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
for i in range(n):
    e = base + i
    md5 = base64.urlsafe_b64encode(hashlib.md5(f"{e}{uri} {secret}".encode()).digest()).decode().rstrip("=")
    print(f"{uri}?md5={md5}&expires={e}")
PY
  fi
done

# Both sides must really serve the files before anything is timed.
for kind in $SIZES; do
  [ "$kind" = 1g ] && continue
  for pair in "http://127.0.0.1:$NGINX_PORT ng" "http://127.0.0.1:$KD_PUBLIC kd"; do
    set -- $pair
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1$(head -1 "$WORK/$2-$kind.txt")")
    [ "$code" = 200 ] || { echo "sanity check failed: $2 $kind answered $code" >&2; exit 1; }
    # What wrk parses besides the body: the response's status line and headers.
    curl -s -D "$WORK/$2-$kind.headers" -o /dev/null "$1$(sed -n 2p "$WORK/$2-$kind.txt")"
    echo "$2 $kind: $(wc -c <"$WORK/$2-$kind.headers") bytes of status line and headers"
  done
done

WALK="$ROOT/benches/walk.lua"   # wrk's walker over the list of paths

# wrk's Lua state is per thread; each thread walks the whole list from its own start. A round
# restarts the walk; in the realistic mode a keydrop link gets about
# (requests over all rounds) / (links) uses — a non-2xx count means links ran out.
# keydrop's group-commit totals: batch count, batch size sum, commit count, commit seconds sum.
writer_totals() {
  curl -s "http://127.0.0.1:$KD_ADMIN/metrics" | awk '
    /^keydrop_commit_batch_size_count/ {a=$2} /^keydrop_commit_batch_size_sum/ {b=$2}
    /^keydrop_commit_duration_seconds_count/ {c=$2} /^keydrop_commit_duration_seconds_sum/ {d=$2}
    END {print a+0, b+0, c+0, d+0}'
}
# A server's processes: keydrop's, or nginx's master and workers.
server_pids() { # name
  case "$1" in
    keydrop-*) echo "$KD_PID" ;;
    *) echo "$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')" ;;
  esac
}
# CPU time (utime + stime, clock ticks) a server has used so far. Per request, it is a figure the
# machine's noise moves less than the rate.
cpu_ticks() { # name
  for p in $(server_pids "$1"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'
}
# The machine's CPU ticks so far, all and idle (idle + iowait, from /proc/stat's "cpu" line): a
# round whose cores sat idle was held back by waiting (a commit, the network), not by CPU.
machine_ticks() {
  awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6}' /proc/stat
}
# Write-type system calls (write, writev, pwrite, sendfile: `syscw` in /proc/<pid>/io) so far.
write_calls() { # name
  for p in $(server_pids "$1"); do awk '/^syscw/ {print $2}' "/proc/$p/io" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'
}
# IP packets sent on the machine so far (`IpOutRequests`: one per skb handed to IP, a GSO skb of
# up to 64 KiB counting once): per request, both directions of loopback — the server's data and
# wrk's ACKs — so it tells whether a server sends its bytes in fewer, larger packets.
ip_packets() {
  nstat -asz 2>/dev/null | awk '$1 == "IpOutRequests" {print $2}' || echo 0
}
# keydrop's CPU ticks, context switches and nanoseconds spent runnable but waiting for a core
# (`schedstat`'s second field; 0 without scheduler statistics) so far, by thread name ("name ticks
# switches waited" lines): which of its threads a request's CPU time goes to, how often a thread
# gave up a core, and how long it waited for one.
kd_threads() {
  for t in /proc/"$KD_PID"/task/*; do
    awk '{sub(/^[0-9]+ \(/, ""); sub(/\).*/, "", $0); print}' "$t/stat" 2>/dev/null | tr -d '\n'
    echo " $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) $(awk '/ctxt_switches/ {s += $2} END {print s + 0}' "$t/status" 2>/dev/null) $(awk '{print $2 + 0}' "$t/schedstat" 2>/dev/null)"
  done | awk '{t[$1] += $2; c[$1] += $3; w[$1] += $4} END {for (k in t) print k, t[k], c[k], w[k] + 0}'
}
# keydrop's group-commit histogram so far ("le count" lines).
commit_buckets() {
  curl -s "http://127.0.0.1:$KD_ADMIN/metrics" | awk -F'[" ]' '/^keydrop_commit_duration_seconds_bucket/ {print $2, $NF}' || true
}
# Commits between two histogram snapshots that took more than 6.4 ms, and more than 12.8 ms.
slow_commits() { # before after
  paste -d' ' "$1" "$2" | awk '
    {d = $4 - $2}
    $1 == "0.0064" {a = d} $1 == "0.0128" {b = d} $1 == "+Inf" {t = d}
    END {if (t != "") printf "    commits: %d over 6.4 ms, %d over 12.8 ms\n", t - a, t - b}'
}
run() { # name url listfile
  # No dirty pages left by the round before (the other server's log, say): what this round's
  # durable writes wait for is its own.
  sync
  local perf_pid=""
  local server=${PROFILE_SERVER:-keydrop} pdata="$WORK/perf.data"
  [ "$server" = both ] && { server=${1%%-*}; pdata="$WORK/perf-$server.data"; }
  if [ "${PROFILE:-}" = perf ] && [ "$1" = "$server-${PROFILE_SIZE:-4k}" ] && [ ! -f "$pdata" ]; then
    local scope=(-p "$(server_pids "$1" | xargs | tr ' ' ,)")
    [ -n "${PROFILE_SYSTEM:-}" ] && scope=(-a)
    perf record -e cpu-clock -F "${PROFILE_FREQ:-499}" ${PROFILE_CALLGRAPH:--g} "${scope[@]}" -o "$pdata" -- sleep "$SECS" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  if [ "${PROFILE:-}" = strace ] && [ "$1" = "keydrop-${PROFILE_SIZE:-4k}" ] && [ ! -f "$WORK/strace.txt" ]; then
    # System calls by kind over the round (strace slows the server: the counts per request are
    # what to read, not that round's rate).
    timeout -s INT "$SECS" strace -c -f -p "$KD_PID" -o "$WORK/strace.txt" >/dev/null 2>&1 &
  fi
  local before="" after=""
  case "$1" in keydrop-*) before=$(writer_totals); commit_buckets >"$WORK/$1.commits0" ;; esac
  local cpu0 w0 th0="" m0 p0; cpu0=$(cpu_ticks "$1"); w0=$(write_calls "$1"); m0=$(machine_ticks); p0=$(ip_packets)
  case "$1" in keydrop-*) th0=$(kd_threads) ;; esac
  # wrk shares the machine: its own CPU per request (user + system seconds, from time(1)) is the
  # load generator's share of the two cores, which differs between servers if their answers do.
  /usr/bin/time -f '%U %S' -o "$WORK/$1.wrktime" \
    wrk -t2 -c64 -d"${SECS}s" --latency -s "$WALK" "$2" -- "$3" >"$WORK/$1.out" 2>&1
  local cpu1 w1 th1="" m1 p1; cpu1=$(cpu_ticks "$1"); w1=$(write_calls "$1"); m1=$(machine_ticks); p1=$(ip_packets)
  case "$1" in keydrop-*) th1=$(kd_threads) ;; esac
  if [ -n "$before" ]; then
    after="$WORK/$1.commits.$(date +%s%N)"
    commit_buckets >"$after"
    # The writer's groups in this run: how many requests shared a commit, and what one took.
    echo "$before $(writer_totals)" | awk '{g = $5 - $1; if (g > 0) printf "    writer: %d groups, mean %.1f batches per group (a download sends two), mean commit %.3f ms\n", g, ($6 - $2) / g, 1000 * ($8 - $4) / ($7 - $3)}' >"$WORK/$1.writer"
  fi
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    perf report -i "$pdata" --no-children --stdio --sort symbol 2>/dev/null | grep -E '^ +[0-9]' | head -40 >"${pdata%.data}-top.txt" || true
    perf report -i "$pdata" --children --stdio --sort symbol -g none 2>/dev/null | grep -E '^ +[0-9]' | head -60 >"${pdata%.data}-children.txt" || true
  fi
  local rps tps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$1.out")
  tps=$(awk '/Transfer\/sec/ {print $2}' "$WORK/$1.out")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$1.out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$1.out")
  local reqs cpu_us writes wrk_us
  reqs=$(awk '/requests in/ {print $1}' "$WORK/$1.out")
  wrk_us=$(awk -v n="${reqs:-0}" 'NF == 2 && n > 0 {printf "%.0f", ($1 + $2) * 1e6 / n; ok = 1} END {if (!ok) print "-"}' "$WORK/$1.wrktime" 2>/dev/null)
  cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="${reqs:-0}" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n > 0) printf "%.0f", (b - a) / hz * 1e6 / n; else print "-" }')
  writes=$(awk -v a="$w0" -v b="$w1" -v n="${reqs:-0}" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')
  local packets; packets=$(awk -v a="$p0" -v b="$p1" -v n="${reqs:-0}" 'BEGIN { if (n > 0 && b > a) printf "%.1f", (b - a) / n; else print "-" }')
  local idle; idle=$(echo "$m0 $m1" | awk '{t = $3 - $1; if (t > 0) printf "%.0f", 100 * ($4 - $2) / t; else print "-"}')
  printf '%-22s %12s req/s %12s/s  p99 %8s  non-2xx %s  cpu %s µs/req  writes %s/req  packets %s/req  wrk %s µs/req  idle %s %%\n' "$1" "$rps" "$tps" "$p99" "${non2xx:-0}" "$cpu_us" "$writes" "$packets" "$wrk_us" "$idle"
  echo "$cpu_us" >>"$WORK/$1.cpu"
  [ -s "$WORK/$1.writer" ] && cat "$WORK/$1.writer"
  if [ -n "$before" ]; then
    # The round's slow group commits (the tail's usual cause), from the histogram's buckets.
    slow_commits "$WORK/$1.commits0" "$after"
  fi
  if [ -n "$th0" ] && [ "${reqs:-0}" -gt 0 ]; then
    # Per request: each thread kind's CPU, its context switches (voluntary and not), and its time
    # runnable but waiting for a core.
    { echo "$th0" | sed 's/^/0 /'; echo "$th1" | sed 's/^/1 /'; } | awk -v n="$reqs" -v hz="$(getconf CLK_TCK)" '
      {s = ($1 == 0) ? -1 : 1; t[$2] += s * $3; c[$2] += s * $4; w[$2] += s * $5}
      END {printf "    threads:"; for (k in t) if (t[k] > 0 || c[k] > 0) printf " %s %.0f µs %.2f switches %.0f µs waiting;", k, t[k] / hz * 1e6 / n, c[k] / n, w[k] / 1e3 / n; print ""}'
  fi
  echo "$rps" >>"$WORK/$1.rps"
}

echo
echo "wrk -t2 -c64 -d${SECS}s, A B A B, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  for kind in $SIZES; do
    [ "$kind" = 1g ] && continue
    run "nginx-$kind" "http://127.0.0.1:$NGINX_PORT" "$WORK/ng-$kind.txt"
    run "keydrop-$kind" "http://127.0.0.1:$KD_PUBLIC" "$WORK/kd-$kind.txt"
  done
done

case " $SIZES " in *" 1g "*)
echo
echo "1 GiB, one stream (curl -o /dev/null, warm cache), A B A B, $ROUNDS_1G rounds after one unmeasured download each"
cat "$WORK/files/f1g.bin" >/dev/null
# The first download after the file was cached ran at a third of the speed, at three times the
# CPU per MiB, for whichever server made it (in benches/ab.sh, always the first round's): each
# server makes one here, unmeasured, instead of the first round's server alone.
curl -s -o /dev/null "$NG_1G"
curl -s -o /dev/null "$KD_1G"
for round in $(seq 1 "$ROUNDS_1G"); do
  for pair in "nginx-1g $NG_1G" "keydrop-1g $KD_1G"; do
    set -- $pair
    bps=$(curl -s -o /dev/null -w '%{speed_download}' "$2")
    awk -v n="$1" -v b="$bps" 'BEGIN { printf "%-22s %8.2f GB/s\n", n, b / 1e9 }'
    echo "$bps" >>"$WORK/$1.rps"
  done
done
;; esac

echo
for kind in $SIZES; do
  ng=$(awk '{s+=$1} END {print s/NR}' "$WORK/nginx-$kind.rps")
  kd=$(awk '{s+=$1} END {print s/NR}' "$WORK/keydrop-$kind.rps")
  unit="req/s"; [ "$kind" = 1g ] && unit="B/s"
  awk -v k="$kind" -v n="$ng" -v d="$kd" -v u="$unit" 'BEGIN { printf "%s: nginx %.0f %s, keydrop %.0f %s, keydrop/nginx = %.2f\n", k, n, u, d, u, d / n }'
  # Each round's own ratio (keydrop's round over the nginx round just before it) and their median,
  # the form the speed issue's table uses.
  paste -d' ' "$WORK/nginx-$kind.rps" "$WORK/keydrop-$kind.rps" | awk '
    $1 > 0 {r[++n] = $2 / $1}
    END {
      if (n == 0) exit
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) {t = r[i]; r[i] = r[j]; r[j] = t}
      m = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
      printf "    ratio by round: %.2f–%.2f, median %.2f\n", r[1], r[n], m
    }'
  if [ -s "$WORK/nginx-$kind.cpu" ]; then
    awk '{s+=$1} END {printf "    server CPU per request (mean of rounds): nginx %.0f µs, ", s/NR}' "$WORK/nginx-$kind.cpu"
    awk '{s+=$1} END {printf "keydrop %.0f µs\n", s/NR}' "$WORK/keydrop-$kind.cpu"
  fi
done
echo "raw wrk output in $WORK"
