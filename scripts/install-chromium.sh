#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser tests (tests/dashboard.rs)
# when /usr/bin/chromium is missing, and prints its version. Idempotent: with
# Chromium already there it only prints the version. Runs as root, or through
# sudo when there is one.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-chromium: $CHROMIUM is missing and this is neither root nor has sudo;" >&2
        echo "install-chromium: install Debian's 'chromium' package by hand." >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-chromium: no apt-get here; install Chromium so that $CHROMIUM exists." >&2
        exit 1
    fi
    echo "install-chromium: installing Debian's chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi

# Debian's wrapper script prints shell warnings on some machines; the
# version line is the one that names Chromium.
version=$("$CHROMIUM" --version 2>/dev/null | grep -i chromium || true)
if [ -z "$version" ]; then
    echo "install-chromium: $CHROMIUM does not run" >&2
    exit 1
fi
echo "install-chromium: $version ($CHROMIUM)"
