#!/usr/bin/env bash
# Make sure the local PostgreSQL on 127.0.0.1:5432 is up, starting the Debian cluster if not.
set -euo pipefail
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version..."
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && exit 0
    sleep 1
  done
fi
echo "WARNING: PostgreSQL is not reachable on 127.0.0.1:5432; PostgreSQL tests will skip" \
     "(and fail under CI=true)." >&2
