#!/usr/bin/env bash
# The test command: installs what the tests need from Debian's packages when it is missing —
# PostgreSQL (the shared-database tests start their own throwaway server from its binaries),
# Chromium with its driver, and CJK fonts (browser tests) — then runs `cargo test`, once on the
# embedded backend and once more for the behaviour suites on PostgreSQL.
#
#   scripts/test.sh [cargo test args…]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
fc-list 2>/dev/null | grep -qi "noto sans cjk" || need+=(fonts-noto-cjk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from Debian's packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo test "$@"
# The behaviour suites again, every test of them on PostgreSQL (API.md §5.3).
KEYDROP_TEST_BACKEND=postgres cargo test --test download --test admin --test activity --test subscriptions "$@"
