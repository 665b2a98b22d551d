#!/usr/bin/env bash
# The Dockerfile against the rules in scripts/ci/dockerfile-lint.ts (pinned base, non-root
# USER, HEALTHCHECK, production dependencies only, npm ci, apt hygiene, exec form, …).
set -euo pipefail
cd "$(dirname "$0")/../.."
npx tsx scripts/ci/dockerfile-lint.ts deploy/docker/Dockerfile
