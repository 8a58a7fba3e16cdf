#!/usr/bin/env bash
# Two keydrop builds side by side: which is faster, measured so the machine's drift cancels.
#
#   benches/ab.sh BIN_A BIN_B [PAIRS] [SECONDS]     (default 8 pairs of 5 s rounds)
#   SIZE=1m benches/ab.sh …                         (1 MiB downloads instead of 4 KiB)
#   SIZE=1g benches/ab.sh …                         (one stream of 1 GiB a round, curl, warm cache,
#                                                    after one unmeasured download from each build)
#   COLD=1 benches/ab.sh …                          (each server restarted before each of its rounds:
#                                                    every round starts with no link in memory, each
#                                                    loaded from redb on first use, as after a restart)
#
# On this shared 2-core VM the rate of one server moves by a quarter within minutes, so two full
# `compare-nginx.sh` runs an hour apart cannot tell a 3 % change. Here both builds run at once,
# each with its own data directory, the same file and its own LINKS real 50-use links (default
# 30,000); wrk (-t2 -c64, the compare script's walker) alternates between them, A B A B, in short
# rounds, and each pair's B/A ratio compares rounds seconds apart. Prints every round (rate, p99,
# the server's CPU per request) and the pairs' ratios with their median.
set -euo pipefail
A_BIN=$(realpath "$1")
B_BIN=$(realpath "$2")
PAIRS=${3:-8}
SECS=${4:-5}
SIZE=${SIZE:-4k}
LINKS=${LINKS:-30000}
[ "$SIZE" = 1g ] && LINKS=${LINKS_1G:-2}
WORK=$(mktemp -d /tmp/keydrop-ab.XXXXXX)
command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK/a/data" "$WORK/b/data" "$WORK/files"
}
trap cleanup EXIT

mkdir -p "$WORK/files"
case "$SIZE" in
  1m) head -c 1048576 /dev/urandom >"$WORK/files/f.bin" ;;
  1g) head -c 1073741824 /dev/urandom >"$WORK/files/f.bin" ;;
  *) head -c 4096 /dev/urandom >"$WORK/files/f.bin" ;;
esac
sync
cat "$WORK/files/f.bin" >/dev/null   # a warm page cache for both

# start NAME BIN PORT: a server with a global admin and a partner agent; prints nothing.
start() {
  local dir="$WORK/$1" port=$3
  mkdir -p "$dir/data"
  ln -s "$WORK/files" "$dir/files"
  local admin agent
  admin=$("$2" token new --role global_admin --name bench)
  agent=$("$2" token new --role admin_agent --name bench-agent)
  awk '/^token:/ {print $2}' <<<"$admin" >"$dir/admin.token"
  awk '/^token:/ {print $2}' <<<"$agent" >"$dir/agent.token"
  cat >"$dir/keydrop.toml" <<TOML
[server]
public_listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
public_base_url = "http://127.0.0.1:$port"
[storage]
data_dir = "data"
files_dir = "files"
[[principals]]
name = "bench"
role = "global_admin"
token_sha256 = "$(awk -F'"' '/token_sha256/ {print $2}' <<<"$admin")"
[[principals]]
name = "bench-agent"
role = "admin_agent"
token_sha256 = "$(awk -F'"' '/token_sha256/ {print $2}' <<<"$agent")"
TOML
  serve "$@"
}

# serve NAME BIN PORT: runs the server in NAME's directory and waits until it answers.
serve() {
  local dir="$WORK/$1" port=$3
  (cd "$dir" && exec "$2" serve --config keydrop.toml >>"$dir/keydrop.log" 2>&1) &
  PIDS+=($!)
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "$1 did not start" >&2
  exit 1
}

# restart NAME BIN PORT: stops the server (a clean stop) and serves again from the same data.
restart() {
  local pid
  pid=$(cat "$WORK/$1/pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  serve "$@"
}

# links NAME PORT: the product, a customer, an order and LINKS download links (paths in links.txt).
links() {
  local dir="$WORK/$1" a="http://127.0.0.1:$(($2 + 1))/api"
  local admin agent
  admin=$(cat "$dir/admin.token")
  agent=$(cat "$dir/agent.token")
  as() { curl -sf -H "Authorization: Bearer $1" -H 'content-type: application/json' "${@:2}"; }
  as "$admin" -X PUT "$a/products/bench" -d '{"name":"Bench","kind":"perpetual","unit_price_cents":1,"currency":"USD","cancel_policy":"standard"}' >/dev/null
  as "$admin" -X PUT "$a/products/bench/files/f" -d '{"path":"f.bin","filename":"f.bin","file_type":"f"}' >/dev/null
  as "$admin" -X POST "$a/customers" -d '{"tenant_id":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","domain":"bench.example","name":"Bench","country":"US"}' >/dev/null
  local order
  order=$(as "$agent" -X POST "$a/customers/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee/orders" -d '{"items":[{"product_id":"bench","quantity":1}]}' | sed 's/.*"order_id":"\([^"]*\)".*/\1/')
  seq 1 "$LINKS" | xargs -P 4 -I{} curl -sf -H "Authorization: Bearer $agent" -H 'content-type: application/json' \
    -X POST "$a/orders/$order/downloads" -d '{"product_id":"bench","file_type":"f"}' |
    grep -o '"url":"[^"]*"' | sed 's/"url":"http:\/\/[^/]*\([^"]*\)"/\1/' >"$dir/links.txt"
  [ "$(wc -l <"$dir/links.txt")" -eq "$LINKS" ] || { echo "$1: links not issued" >&2; exit 1; }
}

start a "$A_BIN" 18601
start b "$B_BIN" 18611
echo "issuing $LINKS links of $SIZE on each…"
links a 18601 &
la=$!
links b 18611 &
lb=$!
wait "$la" && wait "$lb" || { echo "issuing links failed" >&2; exit 1; }

WALK="$(dirname "$(realpath "$0")")/walk.lua"   # the compare script's walker

ticks() { awk '{print $14 + $15}' "/proc/$(cat "$WORK/$1/pid")/stat"; }
# round1g NAME PORT: one stream of the 1 GiB file; appends its bytes per second to NAME.rps.
round1g() {
  local t0 t1 bps
  t0=$(ticks "$1")
  bps=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$2$(head -1 "$WORK/$1/links.txt")")
  t1=$(ticks "$1")
  echo "$bps" >>"$WORK/$1.rps"
  awk -v n="$1" -v b="$bps" -v a="$t0" -v c="$t1" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "  %s %9.2f GB/s  cpu %5.0f µs/MiB\n", n, b / 1e9, (c - a) / hz * 1e6 / 1024}'
}
# round NAME PORT: one wrk round; appends "rate" to NAME.rps and prints the round.
round() {
  [ "$SIZE" = 1g ] && { round1g "$@"; return; }
  sync
  local t0 t1
  t0=$(ticks "$1")
  wrk -t2 -c64 -d"${SECS}s" --latency -s "$WALK" "http://127.0.0.1:$2" -- "$WORK/$1/links.txt" >"$WORK/$1.out" 2>&1
  t1=$(ticks "$1")
  local rps p99 reqs non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$1.out")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$1.out")
  reqs=$(awk '/requests in/ {print $1}' "$WORK/$1.out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$1.out")
  echo "$rps" >>"$WORK/$1.rps"
  awk -v n="$1" -v r="$rps" -v p="$p99" -v q="$reqs" -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" -v x="${non2xx:-0}" \
    'BEGIN {printf "  %s %9.0f req/s  p99 %8s  cpu %3.0f µs/req  non-2xx %s\n", n, r, p, (b - a) / hz * 1e6 / q, x}'
}

if [ "$SIZE" = 1g ]; then
  # The first download after the file was cached is slow for whoever makes it: one each, unmeasured.
  curl -s -o /dev/null "http://127.0.0.1:18601$(head -1 "$WORK/a/links.txt")"
  curl -s -o /dev/null "http://127.0.0.1:18611$(head -1 "$WORK/b/links.txt")"
  echo "curl, one 1 GiB stream a round after one unmeasured each, $PAIRS pairs, A = $A_BIN, B = $B_BIN"
else echo "wrk -t2 -c64 -d${SECS}s, $PAIRS pairs, A = $A_BIN, B = $B_BIN"; fi
for i in $(seq 1 "$PAIRS"); do
  [ -n "${COLD:-}" ] && restart a "$A_BIN" 18601
  round a 18601
  [ -n "${COLD:-}" ] && restart b "$B_BIN" 18611
  round b 18611
done
paste -d' ' "$WORK/a.rps" "$WORK/b.rps" | awk '
  {r[++n] = $2 / $1; sa += $1; sb += $2}
  END {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) {t = r[i]; r[i] = r[j]; r[j] = t}
    m = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
    printf "B/A by pair: %.3f–%.3f, median %.3f; means A %.0f, B %.0f (req/s, or B/s at 1g) (%.3f)\n", r[1], r[n], m, sa / n, sb / n, sb / sa
  }'
