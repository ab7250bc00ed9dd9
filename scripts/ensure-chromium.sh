#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing and we can (root).
# Never `playwright install`: its browser download is not reachable here.
# Outside CI a machine without Chromium only skips the browser test; under CI=true it is an
# error here already, with the reason, rather than a skipped (so untested) panel later.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests..."
  if ! { apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    echo "warning: installing chromium with apt-get failed" >&2
  fi
else
  echo "warning: /usr/bin/chromium is missing and can't be installed (not root or no apt-get)" >&2
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "error: CI=true needs /usr/bin/chromium for tests/test_browser.py" >&2
    exit 1
  fi
  echo "warning: browser tests will skip" >&2
fi
