#!/usr/bin/env bash
# Kept for compatibility: a thin wrapper around `microfactory backup` (see docs/backup.md).
#   bash deploy/backup.sh [DATA_DIR] [CONFIG_DIR] [DEST_DIR]  (extra options after them pass on)
set -euo pipefail
cd "$(dirname "$0")/.."
mf=.venv/bin/microfactory
[[ -x $mf ]] || mf=microfactory
exec "$mf" backup --data-dir "${1:-/var/lib/microfactory}" --config-dir "${2:-/etc/microfactory}" \
    --dest "${3:-/var/backups/microfactory}" "${@:4}"
