#!/bin/sh
# setup.sh: install every package thawd needs to build, test and run, on Debian 12.
# Idempotent: when everything is already installed it changes nothing and exits 0.
# Runs apt-get as root (or via sudo when available).
set -eu

PACKAGES="
gcc libc6-dev pkg-config meson ninja-build git ca-certificates curl
libmicrohttpd-dev libjansson-dev libopenblas-dev libsqlite3-dev libcurl4-openssl-dev zlib1g-dev
libpng-dev libjpeg62-turbo-dev
dataset-fashion-mnist
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

# The integration suite lints api-spec/openapi.yaml (@redocly/cli) and validates every
# response against it (ajv) with packages fetched by npm at test time. A Node.js from
# elsewhere (e.g. NodeSource, which bundles npm) is fine; only without npm take Debian's.
if ! command -v npm >/dev/null 2>&1; then
    missing="$missing nodejs npm"
fi

if [ -z "$missing" ]; then
    echo "setup: all packages present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "setup: missing packages:$missing; run this script as root" >&2
    exit 1
fi

echo "setup: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
