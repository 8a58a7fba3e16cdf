#!/usr/bin/env bash
# Several keydrop nodes on one PostgreSQL, on loopback: 4 KiB downloads/s over all of them at
# once, and the commit-batch sizes each node saw.
#
#   benches/cluster.sh [NODES] [SECONDS]      (default 3 nodes, 10 s)
#   KEYDROP_BIN=path/to/keydrop benches/cluster.sh
#
# Installs postgresql and wrk from Debian's packages if missing. PostgreSQL runs with fsync on.
set -euo pipefail
NODES=${1:-3}
SECS=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keydrop-cluster.XXXXXX)
PG_PORT=18493
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v wrk >/dev/null || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql wrk >/dev/null; }
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK/pg" "$WORK"/node*/data
}
trap cleanup EXIT
if [ -n "${KEYDROP_BIN:-}" ]; then KD="$KEYDROP_BIN"; else (cd "$ROOT" && cargo build --release -q); KD="$ROOT/target/release/keydrop"; fi

chmod 755 "$WORK"; mkdir -p "$WORK/pg"; [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
as_pg "$PG_BIN/initdb" -A trust -U keydrop -D "$WORK/pg/data" >/dev/null
as_pg "$PG_BIN/pg_ctl" -w -D "$WORK/pg/data" -l "$WORK/pg/log" \
  -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p $PG_PORT -U keydrop keydrop
head -c 32 /dev/urandom >"$WORK/kek.key"
head -c 4096 /dev/urandom >"$WORK/f4k.bin"
TOKEN_OUT=$("$KD" token new --role global_admin --name bench); TOKEN=$(echo "$TOKEN_OUT" | awk '/^token:/ {print $2}')
SHA=$(echo "$TOKEN_OUT" | awk -F'"' '/token_sha256/ {print $2}')
AGENT_OUT=$("$KD" token new --role admin_agent --name agent); AGENT=$(echo "$AGENT_OUT" | awk '/^token:/ {print $2}')
AGENT_SHA=$(echo "$AGENT_OUT" | awk -F'"' '/token_sha256/ {print $2}')
for n in $(seq 1 "$NODES"); do
  d="$WORK/node$n"; mkdir -p "$d/files"; cp "$WORK/f4k.bin" "$d/files/"
  cat >"$d/keydrop.toml" <<TOML
[server]
public_listen = "127.0.0.1:$((18500 + n))"
admin_listen = "127.0.0.1:$((18600 + n))"
public_base_url = "http://127.0.0.1:$((18500 + n))"
[storage]
backend = "postgres"
postgres_url = "postgres://keydrop@127.0.0.1:$PG_PORT/keydrop"
node_id = "edge-$n"
kek_file = "$WORK/kek.key"
data_dir = "data"
files_dir = "files"
[links]
max_uses = 1000000
[[principals]]
name = "bench"
role = "global_admin"
token_sha256 = "$SHA"
[[principals]]
name = "agent"
role = "admin_agent"
token_sha256 = "$AGENT_SHA"
TOML
  KEYDROP_LOG=warn "$KD" serve --config "$d/keydrop.toml" & PIDS+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((18500 + n))/healthz" >/dev/null && break; sleep 0.1; done
done
A="http://127.0.0.1:18601/api"
api() { curl -sf -H "Authorization: Bearer $1" -H 'content-type: application/json' "${@:2}"; }
api "$TOKEN" -X PUT "$A/products/bench" -d '{"name":"Bench","kind":"perpetual","unit_price_cents":1,"currency":"USD","cancel_policy":"standard"}' >/dev/null
api "$TOKEN" -X PUT "$A/products/bench/files/f4k" -d '{"path":"f4k.bin","filename":"f4k.bin"}' >/dev/null
api "$TOKEN" -X POST "$A/customers" -d '{"tenant_id":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","domain":"bench.example","name":"Bench","country":"US"}' >/dev/null
ORDER=$(api "$AGENT" -X POST "$A/customers/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee/orders" -d '{"items":[{"product_id":"bench","quantity":1}]}' | sed 's/.*"order_id":"\([^"]*\)".*/\1/')
echo "issuing 1,000 links…"
seq 1 1000 | xargs -P 8 -I{} curl -sf -H "Authorization: Bearer $AGENT" -H 'content-type: application/json' \
  -X POST "$A/orders/$ORDER/downloads" -d '{"product_id":"bench"}' | grep -o '"url":"[^"]*"' \
  | sed 's/"url":"http:\/\/[^/]*\([^"]*\)"/\1/' >"$WORK/links.txt"
cat >"$WORK/walk.lua" <<'LUA'
local paths = {}
local i = 0
function init(args) for line in io.lines(args[1]) do paths[#paths + 1] = line end end
function request() i = (i % #paths) + 1 return wrk.format("GET", paths[i]) end
LUA
echo "wrk -t1 -c$((64 / NODES)) -d${SECS}s on each of $NODES nodes at once"
for n in $(seq 1 "$NODES"); do
  wrk -t1 -c$((64 / NODES)) -d"${SECS}s" -s "$WORK/walk.lua" "http://127.0.0.1:$((18500 + n))" -- "$WORK/links.txt" >"$WORK/wrk$n.out" 2>&1 &
done
wait $(jobs -p | tail -n "$NODES") 2>/dev/null || true
sleep 1
total=0
for n in $(seq 1 "$NODES"); do
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk$n.out"); non=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk$n.out")
  m=$(curl -s "http://127.0.0.1:$((18600 + n))/metrics")
  bs=$(echo "$m" | awk '/^keydrop_commit_batch_size_sum/ {s=$2} /^keydrop_commit_batch_size_count/ {c=$2} END {if (c) printf "%.1f", s/c}')
  cs=$(echo "$m" | awk '/^keydrop_commit_duration_seconds_sum/ {s=$2} /^keydrop_commit_duration_seconds_count/ {c=$2} END {if (c) printf "%.2f", 1000*s/c}')
  printf 'edge-%s: %10s req/s  non-2xx %s  mean batch %s jobs  mean commit %s ms\n' "$n" "$rps" "${non:-0}" "$bs" "$cs"
  total=$(awk -v a="$total" -v b="$rps" 'BEGIN {print a + b}')
done
echo "all $NODES nodes: $total req/s (4 KiB, durably counted and logged in one database)"
