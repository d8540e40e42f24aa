#!/usr/bin/env bash
# Set up a virtual environment with Luminate and its test tools, then run the whole test suite.
# Browser tests use Debian's Chromium: installed here when running as root with apt-get available,
# otherwise they are skipped with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -c constraints.txt -e ".[all,test]"
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed: browser tests will be skipped"
fi
# Idle OpenMP threads sleep instead of spinning: tests stay fast beside other work on the same cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "$VENV/bin/python" -m pytest "$@"
