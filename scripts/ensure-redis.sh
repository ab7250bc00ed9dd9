#!/usr/bin/env bash
# Install Debian's redis-server for the team-cache tests when it is missing and we can (root).
# The package starts no service here; the test fixtures start their own server on a free
# loopback port. Outside CI a machine without redis-server only skips the team tests; under
# CI=true it is an error here already, rather than skipped (so untested) team tests later.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's redis-server for the team-cache tests..."
  if ! { apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }; then
    echo "warning: installing redis-server with apt-get failed" >&2
  fi
else
  echo "warning: redis-server is missing and can't be installed (not root or no apt-get)" >&2
fi
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "error: CI=true needs redis-server for the team-cache tests" >&2
    exit 1
  fi
  echo "warning: team-cache tests will skip" >&2
fi
