#!/usr/bin/env bash
# The programs medseg's tests drive that pip cannot install: Debian's headless Chromium and its ChromeDriver
# (the interactive page's browser test). Installs them with apt-get when they are missing (as root, or through
# sudo); does nothing when both are there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null; then
    SUDO="sudo"
else
    echo "error: chromium and chromedriver are missing and this user cannot install them" \
         "(fix: as root run: apt-get install -y chromium chromium-driver)" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null; then
    echo "error: chromium and chromedriver are missing and apt-get is not available" \
         "(fix: install Chromium and a matching ChromeDriver as /usr/bin/chromium and /usr/bin/chromedriver)" >&2
    exit 2
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
