#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for tests/test_browser.py (the TFMA notebook views and the
# HTML report in a real browser). Idempotent: does nothing when `chromium` (or $KD_CHROMIUM) is there.
# Without root or apt-get it only says so; the browser tests then skip with that reason.
set -euo pipefail

if command -v "${KD_CHROMIUM:-chromium}" >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-browser: no chromium on the PATH and no root apt-get to install it;" \
       "install Debian's chromium (or set KD_CHROMIUM) to run the browser tests" >&2
  exit 0
fi
echo "setup-browser: installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
