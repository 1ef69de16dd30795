#!/usr/bin/env bash
# Consistent backup of a running installation: every SQLite file in the data directory copied
# with SQLite's online backup API (safe while the gateway and the MES write: a plain cp of a
# WAL-mode database can catch it half-written), plus the config directory.
#   bash deploy/backup.sh [DATA_DIR] [CONFIG_DIR] [DEST_DIR]
# defaults: /var/lib/microfactory /etc/microfactory /var/backups/microfactory/<UTC time>
# Run as root or as the microfactory user. PostgreSQL (if the MES uses it): pg_dump separately.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-/var/lib/microfactory}
conf=${2:-/etc/microfactory}
dest=${3:-/var/backups/microfactory/$(date -u +%Y%m%dT%H%M%SZ)}
python=.venv/bin/python
[[ -x $python ]] || python=python3

mkdir -p "$dest"
shopt -s nullglob
for db in "$data"/*.sqlite "$data"/*/*.sqlite; do
    out="$dest/${db#"$data"/}"
    mkdir -p "$(dirname "$out")"
    "$python" - "$db" "$out" <<'PY'
import sqlite3, sys
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
dst = sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
dst.close()
src.close()
PY
    echo "backup: $db -> $out"
done
for f in "$data"/*.json "$data"/*/*.json; do   # the MES link's event-deriver memory
    out="$dest/${f#"$data"/}"
    mkdir -p "$(dirname "$out")"
    cp -p "$f" "$out"
done
if [[ -d $conf ]]; then
    cp -rp "$conf" "$dest/config"
    echo "backup: $conf -> $dest/config"
fi
echo "backup: done in $dest"
