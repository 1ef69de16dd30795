#!/usr/bin/env bash
# Set up a checkout for running microfactory: a venv in .venv with the package installed.
#   bash deploy/setup.sh            # every program and the demo: pip install -e '.[all]'
#   bash deploy/setup.sh --test     # + test tools ('.[test]'), and the Debian servers the tests start
# Idempotent: a second run only checks. Works on Debian bookworm / Raspberry Pi OS (arm64, armhf).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

# Debian packages: the real servers the tests start (never mocks) and the venv module.
packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
if (( want_test )); then
    command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || packages+=(mosquitto)
    command -v influxd >/dev/null || [[ -x /usr/bin/influxd ]] || packages+=(influxdb)
    command -v victoria-metrics >/dev/null || [[ -x /usr/bin/victoria-metrics ]] || packages+=(victoria-metrics)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
    [[ -x /usr/bin/chromium ]] || packages+=(chromium)
    command -v node >/dev/null || packages+=(nodejs npm)  # node-opcua server, Tahu Sparkplug node
    command -v socat >/dev/null || packages+=(socat)  # serial-port pairs for Modbus RTU tests
    command -v debootstrap >/dev/null || packages+=(debootstrap)  # a fresh root for install.sh
    command -v shellcheck >/dev/null || packages+=(shellcheck)  # deploy/*.sh checked by the tests
fi
if (( ${#packages[@]} )); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "setup: installing Debian packages: ${packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    # the packaged services are not needed: tests start their own instances on free ports
    for svc in mosquitto influxdb victoria-metrics postgresql; do
        $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
stamp=".venv/.installed-$( (cat pyproject.toml; echo "$want_test") | sha256sum | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
    echo "setup: installing microfactory into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    if (( want_test )); then
        .venv/bin/python -m pip install -q -e '.[test]'
    else
        .venv/bin/python -m pip install -q -e '.[all]'
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# The npm programs the tests start, each pinned by its package-lock.json: the node-opcua OPC UA
# server and the Eclipse Tahu Sparkplug B edge node.
for helper in tests/helpers/node_opcua tests/helpers/sparkplug_node; do
    if (( want_test )) && [[ ! -d $helper/node_modules || $helper/package-lock.json -nt $helper/node_modules ]]; then
        if (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
            echo "setup: $helper needs Node.js >= 20, found $(node --version): its tests will fail" >&2
        else
            echo "setup: installing the npm packages of $helper"
            (cd "$helper" && npm ci --no-audit --no-fund --silent)
            touch "$helper/node_modules"
        fi
    fi
done
