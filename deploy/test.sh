#!/usr/bin/env bash
# The test command: set up (Debian servers, .venv), then lint, type-check and run every test.
# Extra arguments go to pytest (e.g. -k spool, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh --test
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
.venv/bin/mypy docs/examples docs/gen_config_reference.py   # the docs' code type-checks too
.venv/bin/mypy tests   # the tests too: same strict settings
echo "== import-linter (layers, protocol libraries)"
.venv/bin/lint-imports --no-cache
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
