#!/usr/bin/env bash
# Set up everything and run the whole check: lint, types, the test suite.
# As root on Debian it first installs the system packages the tests drive
# (Chromium for the web viewer's browser tests, nats-server for the NATS transport).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "test: installing ${need[*]} from Debian" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
  fi
fi

bash scripts/setup.sh --dev

echo "test: ruff" >&2
.venv/bin/ruff check coral_graph tests scripts
.venv/bin/ruff format --check coral_graph tests scripts
echo "test: mypy (strict)" >&2
.venv/bin/mypy
echo "test: pytest" >&2
# pytest exits 5 when no test ran: with `set -e` that fails the script too.
.venv/bin/python -m pytest -q --timeout 600 "$@"
