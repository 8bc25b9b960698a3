#!/usr/bin/env bash
# Debian's Chromium for the explorer's browser tests (Playwright drives it; nothing downloads
# a browser). Installs with apt as root or through sudo; says what to install otherwise.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then
    echo "the browser tests need Chromium at /usr/bin/chromium (install it with your package manager)" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then
    apt=(sudo apt-get); else
    echo "the browser tests need Debian's chromium package (apt-get install chromium)" >&2
    exit 1
fi
DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq chromium >/dev/null
/usr/bin/chromium --version
