#!/usr/bin/env bash
# Install Debian's Chromium for the observer's browser tests when it is missing.
# Needs root (apt-get); without it, say so: the browser tests then skip locally and fail in CI.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser tests..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "WARNING: /usr/bin/chromium is missing and cannot be installed without root;" \
       "browser tests will skip (and fail under CI=true)." >&2
fi
