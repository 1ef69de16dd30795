#!/usr/bin/env bash
# One-command install of microfactory (gateway + MES + Mosquitto + InfluxDB 1.x) on Debian
# bookworm / Raspberry Pi OS (arm64, armhf, amd64). Idempotent: a second run changes nothing.
# Run as root:  bash deploy/install.sh --site my-workshop --yes
set -euo pipefail

PREFIX=/opt/microfactory
VENV=$PREFIX/.venv
ETC=/etc/microfactory
DATA=/var/lib/microfactory
BROKER_DIR=/etc/mosquitto/microfactory
BACKUP_DIR=/var/backups/microfactory
UNIT_DIR=/etc/systemd/system
MES_PORT=8081

usage() {
    cat <<'USAGE'
Usage: bash deploy/install.sh [OPTIONS]

Installs microfactory as the system user `microfactory`: code in /opt/microfactory/.venv,
config in /etc/microfactory, data in /var/lib/microfactory, Mosquitto with the generated
secure config, InfluxDB 1.x, the systemd units, a daily backup timer and journald limits.

Options:
  --site ID        site id, written to site.yaml `site:` AND the MES's MICROFACTORY_MES__SITE
                   (asked once when interactive and not given)
  --yes, -y        non-interactive: never ask (the site id defaults to "workshop")
  --source DIR     checkout to install from (default: the repository of this script)
  --no-influxdb    do not install InfluxDB (configure your own sink in site.yaml)
  --upgrade        backup first (`microfactory backup`), install the code into a new venv,
                   run the MES migrations, check `microfactory config check`; on failure the
                   previous venv is put back (rollback)
  --uninstall      remove the units, the venv and the Mosquitto include; keeps
                   /var/lib/microfactory and /etc/microfactory
  --purge          with --uninstall: also remove /var/lib/microfactory and /etc/microfactory
  --help, -h       this help
USAGE
}

site=""; assume_yes=0; source_dir=""; want_influx=1; mode=install; purge=0
while (( $# )); do
    case $1 in
        --site) site=${2:?--site needs a value}; shift ;;
        --site=*) site=${1#--site=} ;;
        --yes|-y) assume_yes=1 ;;
        --source) source_dir=${2:?--source needs a directory}; shift ;;
        --source=*) source_dir=${1#--source=} ;;
        --no-influxdb) want_influx=0 ;;
        --upgrade) mode=upgrade ;;
        --uninstall) mode=uninstall ;;
        --purge) purge=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n $source_dir ]] || source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "install: run as root" >&2; exit 1; }

changed=0
say() { echo "install: $*"; }
note_change() { changed=1; say "$*"; }
# systemd is PID 1 exactly when this folder exists (sd_booted(3)); not in a chroot.
have_systemd() { [[ -d /run/systemd/system ]]; }

# Copy $1 to $2 with mode $3 and owner $4 only when the content differs.
put_file() {
    local src=$1 dst=$2 mode=$3 owner=$4
    if [[ -e $dst ]] && cmp -s "$src" "$dst"; then
        chmod "$mode" "$dst"; chown "$owner" "$dst"; return 0
    fi
    install -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dst"
    note_change "wrote $dst"
}

# Add KEY=VALUE lines of $1 to env file $2 for keys $2 does not set yet (user edits win).
merge_env() {
    local src=$1 dst=$2 line key
    [[ -e $dst ]] || { install -m 0640 -o root -g microfactory /dev/null "$dst"; note_change "created $dst"; }
    while IFS= read -r line; do
        [[ $line =~ ^([A-Z0-9_]+)= ]] || continue
        key=${BASH_REMATCH[1]}
        grep -q "^${key}=" "$dst" || { echo "$line" >>"$dst"; note_change "$dst: added $key"; }
    done <"$src"
    chmod 0640 "$dst"; chown root:microfactory "$dst"
}

uninstall() {
    if have_systemd; then
        systemctl disable --now microfactory-gateway.service microfactory-mes.service \
            microfactory-backup.timer >/dev/null 2>&1 || true
    else
        say "systemd is not running (chroot/container): not stopping units"
    fi
    rm -f "$UNIT_DIR"/microfactory-*.service "$UNIT_DIR"/microfactory-backup.timer \
        /etc/systemd/journald.conf.d/microfactory.conf \
        /etc/systemd/system/mosquitto.service.d/microfactory.conf
    rm -rf "$PREFIX"
    rm -rf "$BROKER_DIR"
    if (( purge )); then rm -rf "$ETC" "$DATA"; say "purged $ETC and $DATA"
    else say "kept $ETC and $DATA (--purge removes them)"; fi
    if have_systemd; then systemctl daemon-reload; fi
    say "uninstalled"
}
[[ $mode == uninstall ]] && { uninstall; exit 0; }

# 1. Debian packages
packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
[[ -x /usr/sbin/mosquitto ]] || packages+=(mosquitto)
(( want_influx )) && { [[ -x /usr/bin/influxd ]] || packages+=(influxdb); }
if (( ${#packages[@]} )); then
    note_change "apt-get install ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# 2. User and folders
if ! id microfactory >/dev/null 2>&1; then
    useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin microfactory
    note_change "created system user microfactory"
fi
install -d -m 0750 -o root -g microfactory "$ETC"
install -d -m 0750 -o microfactory -g microfactory "$DATA"
install -d -m 0700 -o root -g root "$BACKUP_DIR"
install -d -m 0755 "$PREFIX"

# 3. The code, in a venv (non-editable). The stamp is the hash of the source tree.
stamp_of_source() { (cd "$source_dir" && find . -path ./.venv -prune -o -path ./.git -prune -o -path ./build -prune -o -name node_modules -prune -o -name __pycache__ -prune -o -name '*.egg-info' -prune -o -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }
stamp=$(stamp_of_source)
build_venv() {
    local dir=$1
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q "${source_dir}[gateway,mes]"
    echo "$stamp" >"$dir/.source-stamp"
}
if [[ $mode == upgrade ]]; then
    [[ -x $VENV/bin/microfactory ]] || { echo "install: nothing installed to upgrade" >&2; exit 1; }
    say "upgrade: backup first"
    "$VENV/bin/microfactory" backup --data-dir "$DATA" --config-dir "$ETC" \
        --broker-dir "$BROKER_DIR" --dest "$BACKUP_DIR" --keep 14
    rm -rf "$VENV.new"; build_venv "$VENV.new"
    rm -rf "$VENV.old"; mv "$VENV" "$VENV.old"; mv "$VENV.new" "$VENV"
    # venv scripts carry their path in the shebang: rebuilt in place, so fix them
    sed -i "1s|$VENV.new|$VENV|" "$VENV"/bin/* 2>/dev/null || true
    if ! "$VENV/bin/microfactory" config check "$ETC/site.yaml" >/dev/null \
        || ! "$VENV/bin/microfactory" mes --help >/dev/null; then
        rm -rf "$VENV"; mv "$VENV.old" "$VENV"
        echo "install: upgrade FAILED: the previous venv is back in $VENV" >&2; exit 1
    fi
    note_change "upgraded the code in $VENV (previous one kept in $VENV.old)"
elif [[ ! -x $VENV/bin/microfactory || $(cat "$VENV/.source-stamp" 2>/dev/null) != "$stamp" ]]; then
    rm -rf "$VENV"; build_venv "$VENV"
    note_change "installed microfactory from $source_dir into $VENV"
fi
mf=$VENV/bin/microfactory

# 4. The site id and a starting site.yaml (never overwritten)
if [[ -e $ETC/site.yaml ]]; then
    existing=$(sed -n 's/^site:[[:space:]]*//p' "$ETC/site.yaml" | head -1)
    [[ -n $site && $site != "$existing" ]] && say "keeping site.yaml's site id $existing (not $site)"
    site=$existing
else
    if [[ -z $site ]]; then
        if (( assume_yes )) || [[ ! -t 0 ]]; then site=workshop
        else read -r -p "Site id (letters, digits, -): " site; fi
    fi
    tmp=$(mktemp)
    cat >"$tmp" <<YAML
# Site config written by deploy/install.sh: one energy meter on MQTT, stored in InfluxDB 1.x.
# Edit the machines and adapters (docs/site-config.md), then re-run
#   microfactory broker config --config $ETC/site.yaml --out $BROKER_DIR
site: $site
mqtt:
  url: mqtt://127.0.0.1:1883
mes_link:
  events: true
spool:
  path: $DATA/spool.sqlite
local_history:
  path: $DATA/history.sqlite
machines:
  - {id: meter-1, kind: energy_meter}
adapters:
  - type: mqtt
    name: meter-mqtt
    subscriptions:
      - topic: plant/meter-1/{signal}
        machine: meter-1
        value: {path: value, unit_path: unit}
YAML
    if (( want_influx )); then
        printf 'influxdb:\n  api: v1\n  url: http://127.0.0.1:8086\n  database: microfactory\n' >>"$tmp"
    fi
    put_file "$tmp" "$ETC/site.yaml" 0640 root:microfactory; rm -f "$tmp"
fi
"$mf" config check "$ETC/site.yaml" >/dev/null || { echo "install: $ETC/site.yaml fails config check" >&2; exit 2; }

# 5. Mosquitto: the generated config, loaded by Debian's unit in place of its own file
#    (Debian's mosquitto.conf sets persistence_location too: an include would clash).
install -d -m 0750 -o root -g mosquitto "$BROKER_DIR"
before=$( (cat "$BROKER_DIR"/* 2>/dev/null || true) | sha256sum)
"$mf" broker config --config "$ETC/site.yaml" --out "$BROKER_DIR" --run-as-user mosquitto >/dev/null
[[ $(cat "$BROKER_DIR"/* | sha256sum) == "$before" ]] || note_change "broker config written to $BROKER_DIR"
chown root:mosquitto "$BROKER_DIR"/passwd "$BROKER_DIR"/acl; chmod 0640 "$BROKER_DIR"/passwd "$BROKER_DIR"/acl
install -d /etc/systemd/system/mosquitto.service.d
tmp=$(mktemp)
printf '[Service]\nExecStart=\nExecStart=/usr/sbin/mosquitto -c %s/mosquitto.conf\n' "$BROKER_DIR" >"$tmp"
put_file "$tmp" /etc/systemd/system/mosquitto.service.d/microfactory.conf 0644 root:root; rm -f "$tmp"

# 6. Env files: the generated logins merged in, user edits kept; the same site id for the MES
merge_env "$BROKER_DIR/gateway.env" "$ETC/gateway.env"
tmp=$(mktemp)
{
    echo "MICROFACTORY_MES__DB_URL=sqlite:///$DATA/mes.sqlite"
    echo "MICROFACTORY_MES__SITE=$site"
    echo "MICROFACTORY_MES__MQTT_URL=mqtt://127.0.0.1:1883"
    cat "$BROKER_DIR/mes.env"
} >"$tmp"
merge_env "$tmp" "$ETC/mes.env"; rm -f "$tmp"
grep -q "^MICROFACTORY_MES__SITE=$site\$" "$ETC/mes.env" \
    || say "WARNING: $ETC/mes.env sets another MICROFACTORY_MES__SITE than site.yaml's $site"

# 7. Units, backup timer, journald limits
for unit in "$source_dir"/deploy/systemd/*.service "$source_dir"/deploy/systemd/*.timer; do
    [[ -e $unit ]] && put_file "$unit" "$UNIT_DIR/$(basename "$unit")" 0644 root:root
done
install -d /etc/systemd/journald.conf.d
put_file "$source_dir/deploy/systemd/journald-microfactory.conf" /etc/systemd/journald.conf.d/microfactory.conf 0644 root:root

# 8. InfluxDB database (idempotent)
if (( want_influx )); then
    if python3 - <<'PY' 2>/dev/null
import urllib.parse, urllib.request
body = urllib.parse.urlencode({"q": "CREATE DATABASE microfactory"}).encode()
urllib.request.urlopen("http://127.0.0.1:8086/query", body, timeout=5).read()
PY
    then
        say "InfluxDB: database microfactory present"
    else
        say "InfluxDB is not running: the gateway creates the database when it connects"
    fi
fi

# 9. The first MES admin (once)
if [[ ! -e $ETC/admin-password ]]; then
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    # shellcheck disable=SC2046
    runuser -u microfactory -- env $(grep -h '^MICROFACTORY_MES__DB_URL=' "$ETC/mes.env") \
        "$mf" mes create-user admin --role admin --password "$password" >/dev/null
    install -m 0600 -o root -g root /dev/null "$ETC/admin-password"
    echo "$password" >"$ETC/admin-password"
    note_change "created MES user admin, password (shown once, also in $ETC/admin-password): $password"
fi

# 10. Start
if have_systemd; then
    systemctl daemon-reload
    systemctl enable --now mosquitto.service microfactory-gateway.service microfactory-mes.service microfactory-backup.timer
    [[ $mode == upgrade ]] && systemctl restart microfactory-gateway.service microfactory-mes.service
    (( want_influx )) && systemctl enable --now influxdb.service
    systemctl restart systemd-journald.service || true
else
    say "systemd is not PID 1 here (chroot/container): units installed, not enabled or started"
fi

(( changed )) || say "nothing changed: already installed"
host=$(hostname -f 2>/dev/null || hostname)
cat <<DONE
install: done. Site id: $site
  UI: http://127.0.0.1:$MES_PORT/ on this host (loopback only; for tablets see docs/deployment.md)
      as seen from elsewhere: ssh -L $MES_PORT:127.0.0.1:$MES_PORT $host
  Log in as admin with the password in $ETC/admin-password
  Next: edit $ETC/site.yaml (your machines), then
        $mf broker config --config $ETC/site.yaml --out $BROKER_DIR
        systemctl restart mosquitto microfactory-gateway
        $mf doctor --config $ETC/site.yaml
DONE
