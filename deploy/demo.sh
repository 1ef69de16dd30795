#!/usr/bin/env bash
# Quick start: set up .venv when needed, then run the whole micro-factory demo.
# Extra arguments go to `microfactory demo` (e.g. --duration 30, --speed 10).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec .venv/bin/microfactory demo "$@"
