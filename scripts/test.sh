#!/usr/bin/env bash
# Install everything the tests need into .venv/ and .tools/, then run the
# linters, the type checker and the whole suite (tests/ and fuzz/).
# Extra arguments go to pytest:  scripts/test.sh -k contract -x
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,dev]'

# The real wscat, for the seed walkthrough test.
if [ ! -x .tools/node_modules/.bin/wscat ]; then
    mkdir -p .tools
    npm install --silent --no-audit --no-fund --prefix .tools wscat@6 >/dev/null
fi

# The browser tests (tests/browser) need Chromium and its driver; without
# them they are skipped, so say how to get them.
if ! (command -v chromium >/dev/null && command -v chromedriver >/dev/null); then
    echo "note: tests/browser are skipped without chromium: apt-get install -y chromium chromium-driver" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
