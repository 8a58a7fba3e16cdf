#!/usr/bin/env bash
# Instructions per download, counted by valgrind's callgrind: a figure that does not move with
# the machine's noise (the same binary and inputs give the same count), for before/after
# comparisons of the hot path.
#
#   benches/callgrind.sh [DOWNLOADS]                 (default 2,000 downloads of 4 KiB)
#   KEYDROP_BIN=path/to/keydrop benches/callgrind.sh
#
# keydrop runs under callgrind on the embedded backend at its default log level, with real
# 50-use links (one link per 10 downloads, so most requests meet a link not yet hot). Start-up
# and link issuing are excluded: the counters are zeroed just before the downloads and dumped
# right after. Prints the total, the instructions per download, and the top functions by
# self cost; the raw profile stays in the work directory.
set -euo pipefail
N=${1:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keydrop-callgrind.XXXXXX)
PUB=18491
ADM=18492
command -v valgrind >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
if [ -n "${KEYDROP_BIN:-}" ]; then
  KD="$KEYDROP_BIN"
else
  (cd "$ROOT" && cargo build --release -q)
  KD="$ROOT/target/release/keydrop"
fi
cleanup() { [ -n "${VG_PID:-}" ] && kill "$VG_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK/data" "$WORK/files"; }
trap cleanup EXIT

mkdir -p "$WORK/files"
head -c 4096 /dev/urandom >"$WORK/files/f4k.bin"
OUT=$("$KD" token new --role admin_agent --name bench)
TOKEN=$(echo "$OUT" | awk '/^token:/ {print $2}')
SHA=$(echo "$OUT" | awk -F'"' '/token_sha256/ {print $2}')
OUT=$("$KD" token new --role global_admin --name bench-catalog)
CAT=$(echo "$OUT" | awk '/^token:/ {print $2}')
CAT_SHA=$(echo "$OUT" | awk -F'"' '/token_sha256/ {print $2}')
cat >"$WORK/keydrop.toml" <<TOML
[server]
public_listen = "127.0.0.1:$PUB"
admin_listen = "127.0.0.1:$ADM"
public_base_url = "http://127.0.0.1:$PUB"
[storage]
data_dir = "data"
files_dir = "files"
[[principals]]
name = "bench"
role = "admin_agent"
token_sha256 = "$SHA"
[[principals]]
name = "bench-catalog"
role = "global_admin"
token_sha256 = "$CAT_SHA"
TOML

cd "$WORK"
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" --collect-atstart=yes \
  "$KD" serve --config "$WORK/keydrop.toml" >"$WORK/keydrop.log" 2>"$WORK/valgrind.log" &
VG_PID=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PUB/healthz" >/dev/null && break; sleep 0.2; done
A="http://127.0.0.1:$ADM/api"
cat_api() { curl -sf -H "Authorization: Bearer $CAT" -H 'content-type: application/json' "$@"; }
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
cat_api -X PUT "$A/products/bench" -d '{"name":"Bench","kind":"perpetual","unit_price_cents":1,"currency":"USD","cancel_policy":"standard"}' >/dev/null
cat_api -X PUT "$A/products/bench/files/f4k" -d '{"path":"f4k.bin","filename":"f4k.bin"}' >/dev/null
cat_api -X POST "$A/customers" -d '{"tenant_id":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","domain":"bench.example","name":"Bench","country":"US"}' >/dev/null
ORDER=$(api -X POST "$A/customers/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee/orders" -d '{"items":[{"product_id":"bench","quantity":1}]}' | sed 's/.*"order_id":"\([^"]*\)".*/\1/')
links=$(( (N + 9) / 10 ))
: >"$WORK/urls.txt"
for _ in $(seq 1 "$links"); do
  api -X POST "$A/orders/$ORDER/downloads" -d '{"product_id":"bench"}' | grep -o '"url":"[^"]*"' | sed 's/"url":"\([^"]*\)"/\1/' >>"$WORK/urls.txt"
done
# N requests: each link ten times, links interleaved so most requests meet a cold link.
for _ in $(seq 1 10); do cat "$WORK/urls.txt"; done | head -n "$N" >"$WORK/requests.txt"
curl -sf -o /dev/null "$(head -1 "$WORK/urls.txt")"   # one warm-up download

callgrind_control -z "$VG_PID" >/dev/null
xargs -P 4 -n 50 curl -sf -o /dev/null <"$WORK/requests.txt" >/dev/null
sleep 1   # the last group commits and download.finished records
callgrind_control -d "$VG_PID" >/dev/null
sleep 1
kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true
VG_PID=""

dump=$(ls -t "$WORK"/callgrind.out* | grep -v '\.out$' | head -1 || true)
[ -n "$dump" ] || dump="$WORK/callgrind.out"
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "downloads: $N of 4 KiB over $links links of 50 uses"
echo "instructions: $total in all, $(( total / N )) per download"
echo
echo "self cost per function (instructions, share):"
python3 "$ROOT/benches/callgrind-self.py" "$dump" 30
echo "profile: $dump"
