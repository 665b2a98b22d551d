#!/usr/bin/env bash
# A real Prometheus (Debian's /usr/bin/prometheus) scraping a running Loanbook (the built
# dist/, on a scratch PostgreSQL database) after real traffic: fails unless every metric
# an alert rule in deploy/monitoring/alerts.yml uses has data, and every rule evaluates
# with health "ok". Prints metric → series count. Details: scripts/ci/prometheus-live.ts.
# Needs: npm ci && npm run build; PostgreSQL at 127.0.0.1:5432 (PROM_LIVE_POSTGRES_URL),
# Redis at 127.0.0.1:6379 (PROM_LIVE_REDIS_URL), apt-get install prometheus.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
PROMETHEUS="${PROMETHEUS:-/usr/bin/prometheus}"
[[ -x "$PROMETHEUS" ]] || { echo "prometheus-live: $PROMETHEUS not found (apt-get install prometheus)" >&2; exit 1; }
[[ -f dist/src/cli.js ]] || { echo "prometheus-live: dist/src/cli.js missing (run npm run build)" >&2; exit 1; }
"$PROMETHEUS" --version 2>&1 | head -1
export PROMETHEUS
exec node_modules/.bin/tsx scripts/ci/prometheus-live.ts
