#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing and we can (root).
# Never `playwright install`: its browser download is not reachable here.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "warning: /usr/bin/chromium is missing and can't be installed (not root): browser tests will skip" >&2
fi
