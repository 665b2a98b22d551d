#!/usr/bin/env bash
# Rolling-restart drill (bench/faults/rolling-restart.ts) against the built API:
# `node dist/src/cli.js serve --workers 2` on a scratch database on the shared PostgreSQL
# (127.0.0.1:5432; created, migrated, seeded and dropped by the drill), a mixed load on
# kept-alive connections, SIGHUP twice (each a full rolling restart), SIGTERM at the end.
# PASS only with zero connection errors, zero non-2xx, every acknowledged payment
# recorded once and the primary exiting 0. Then prints autocannon figures for `serve`
# beside `serve --workers 2`.
#
# Needs: npm ci && npm run build; PostgreSQL at 127.0.0.1:5432 with trust auth and a
# database `test` (TEST_POSTGRES_URL overrides). ROLLING_SECONDS (default 20) sets the
# load's length, ROLLING_BENCH_SECONDS (default 10) each autocannon run's.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "rolling-restart: $*" >&2; echo "RESULT rolling-restart FAIL $*"; exit 1; }

[ -f "${LOANBOOK_CLI:-dist/src/cli.js}" ] || fail "${LOANBOOK_CLI:-dist/src/cli.js} not found: run npm run build first"
pg_isready -h 127.0.0.1 -p 5432 -q || fail "PostgreSQL is not accepting connections on 127.0.0.1:5432"

# The drill prints its figures and the RESULT line, cleans up after itself (also on
# SIGINT/SIGTERM) and exits non-zero on failure.
exec npx tsx bench/faults/rolling-restart.ts \
  --seconds "${ROLLING_SECONDS:-20}" \
  --bench-seconds "${ROLLING_BENCH_SECONDS:-10}" </dev/null
