#!/usr/bin/env bash
# Fuzzes the admin API against its own OpenAPI document with schemathesis (PyPI, installed into
# a virtualenv under target/ when missing). Starts the built keydrop binary on redb with every
# role configured (a customer_admin for a seeded tenant, a push secret), seeds a product with a
# file and keys, a customer and an order, then runs schemathesis once per token — each bounded by
# time (one worker: hypothesis describes lambdas unsafely across threads) — with its examples,
# coverage, fuzzing and stateful (OpenAPI links) phases, in the work directory (so its cache
# stays out of the repository). Fails on a 5xx,
# an answer that breaks its schema, an undocumented status, content type or header, and if the
# server dies or logs a panic.
#
#   scripts/schemathesis.sh [seconds per token, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
PER_TOKEN=${1:-50}
VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION"
fi
VENV=$(realpath "$VENV")
cargo build -q --bin keydrop
KD=target/debug/keydrop

WORK=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PUB=$(port); ADM=$(port)
TENANT=3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f
mkdir -p "$WORK/files"; head -c 4096 /dev/urandom >"$WORK/files/sample.bin"
{
  cat <<TOML
[server]
public_listen = "127.0.0.1:$PUB"
admin_listen = "127.0.0.1:$ADM"
public_base_url = "http://127.0.0.1:$PUB"
[storage]
data_dir = "$WORK/data"
files_dir = "$WORK/files"
[revocation]
push_secret = "schemathesis-push-secret"
TOML
  for role in admin_agent global_admin billing_admin sales_agent helpdesk_agent account_admin referral_admin \
    marketing_content_admin customer_admin; do
    sha=$(printf '%s' "st-$role" | sha256sum | cut -d' ' -f1)
    printf '[[principals]]\nname = "%s"\nrole = "%s"\ntoken_sha256 = "%s"\n' "$role-user" "$role" "$sha"
    [ "$role" = customer_admin ] && printf 'tenant_id = "%s"\n' "$TENANT"
  done
} >"$WORK/keydrop.toml"
KEYDROP_LOG=warn "$KD" serve --config "$WORK/keydrop.toml" >"$WORK/server.log" 2>&1 & PID=$!
A="http://127.0.0.1:$ADM"
for _ in $(seq 1 100); do curl -sf "$A/healthz" >/dev/null && break; sleep 0.1; done
api() { curl -sf -o /dev/null -H "Authorization: Bearer st-$1" -H 'content-type: application/json' "${@:2}"; }
api global_admin -X PUT "$A/api/products/sample" \
  -d '{"name":"Sample","kind":"subscription","unit_price_cents":100,"currency":"USD","cancel_policy":"standard","billing":"monthly","key_required":true}'
api global_admin -X PUT "$A/api/products/sample/files/f1" -d '{"path":"sample.bin","filename":"sample.bin"}'
api global_admin -X POST "$A/api/products/sample/keys" -d '{"keys":["K-1","K-2","K-3","K-4"]}'
api admin_agent -X POST "$A/api/customers" -d "{\"tenant_id\":\"$TENANT\",\"domain\":\"sample.example\",\"name\":\"Sample\",\"country\":\"US\"}"
api admin_agent -X POST "$A/api/customers/$TENANT/orders" -d '{"items":[{"product_id":"sample","quantity":1}]}'

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
total=0; status=0
for role in ${ROLES:-admin_agent global_admin customer_admin}; do
  echo "== schemathesis as $role, ${PER_TOKEN}s"
  set +e
  (cd "$WORK" && "$VENV/bin/schemathesis" run "$A/api/openapi.json" --url "$A" -H "Authorization: Bearer st-$role" \
    --checks "$CHECKS" --max-time "$PER_TOKEN" --phases examples,coverage,fuzzing,stateful --workers 1 \
    --seed 17 --no-color --report ndjson --report-ndjson-path "$WORK/$role.ndjson" --request-timeout 10 \
    --suppress-health-check all >"$WORK/$role.out" 2>&1)
  rc=$?
  set -e
  sent=$(python3 - "$WORK/$role.ndjson" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    n += line.count('"request": {') + line.count('"request":{')
print(n)
PY
)
  total=$((total + sent))
  grep -A12 -E "Runtime Error|Failures|FAILURES|Errors:" "$WORK/$role.out" | cut -c1-300 | head -40 || true; tail -8 "$WORK/$role.out"
  echo "-- $role: $sent requests, exit $rc"
  [ $rc -ne 0 ] && status=1
done
if ! curl -sf "$A/healthz" >/dev/null; then echo "the server died"; status=1; fi
if grep -q "panicked" "$WORK/server.log"; then grep -m5 "panicked" "$WORK/server.log"; status=1; fi
echo "schemathesis: $total requests in all; $( [ $status -eq 0 ] && echo 'no findings' || echo 'FINDINGS above')"
exit $status
