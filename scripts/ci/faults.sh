#!/usr/bin/env bash
# Fault drills (bench/faults/*.ts) against the built API (`node dist/src/cli.js serve`):
# kill -9 under payment load, PostgreSQL restart, Redis stopped, database unreachable
# (iptables DROP), pool exhaustion. Each drill starts its OWN PostgreSQL 15 (initdb in a
# temp dir, port 55432) and Redis (port 56379), never the shared services, and cleans up.
# Prints each drill's figures, a summary table and one result line; exits 1 if any fails.
#
# Needs: npm ci && npm run build; Debian postgresql-15 (server binaries), redis-server,
# redis-tools, iptables; root (iptables, and initdb runs as the `postgres` user).
# FAULTS_REDIS_DOWN_S (default 60) sets how long Redis stays down; LOANBOOK_CLI (default
# dist/src/cli.js) the command the drills start.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_PORT="${FAULTS_PG_PORT:-55432}"
REDIS_DOWN_S="${FAULTS_REDIS_DOWN_S:-60}"
LOG_DIR="$(mktemp -d -t lb-faults-XXXXXX)"

# The drills remove their own rules; this is the backstop if one is killed outright.
cleanup() {
  for rule in "OUTPUT -o lo -p tcp --dport ${PG_PORT} -j DROP" "INPUT -i lo -p tcp --sport ${PG_PORT} -j DROP"; do
    # shellcheck disable=SC2086
    while iptables -D ${rule} 2>/dev/null; do :; done
  done
  rm -rf "${LOG_DIR}"
}
trap cleanup EXIT

fail() { echo "faults: $*" >&2; echo "RESULT faults FAIL $*"; exit 1; }
CLI="${LOANBOOK_CLI:-dist/src/cli.js}"
[[ -f "${CLI}" ]] || fail "${CLI} is missing: run npm run build first"
[[ "$(id -u)" == 0 ]] || fail "must run as root (iptables; initdb as the postgres user)"
for tool in iptables redis-server redis-cli pg_isready /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/pg_ctl; do
  command -v "${tool}" >/dev/null || fail "${tool} not found (apt-get install postgresql-15 redis-server redis-tools iptables)"
done
id postgres >/dev/null 2>&1 || fail "no postgres user (it comes with the postgresql-15 package)"

drills=(
  "kill-api"
  "pg-restart"
  "redis-down --down ${REDIS_DOWN_S}"
  "network-drop"
  "pool-exhaustion"
)

summary=()
failed=0
total_start=$(date +%s)
for spec in "${drills[@]}"; do
  name="${spec%% *}"
  args=()
  [[ "${spec}" == *" "* ]] && read -r -a args <<<"${spec#* }"
  echo "=== ${name}"
  start=$(date +%s)
  set +e
  npx tsx "bench/faults/${name}.ts" "${args[@]}" 2>&1 | tee "${LOG_DIR}/${name}.log"
  status=${PIPESTATUS[0]}
  set -e
  seconds=$(( $(date +%s) - start ))
  line="$(grep '^RESULT ' "${LOG_DIR}/${name}.log" | tail -1 || true)"
  [[ -n "${line}" ]] || line="RESULT ${name} FAIL (no result line; exit ${status})"
  [[ ${status} -eq 0 && "${line}" == "RESULT ${name} PASS"* ]] || failed=$((failed + 1))
  verdict="$(awk '{print $3}' <<<"${line}")"
  detail="$(cut -d' ' -f4- <<<"${line}")"
  summary+=("$(printf '%-16s %-5s %4ss  %s' "${name}" "${verdict}" "${seconds}" "${detail}")")
done

echo
echo "Fault drills ($(( $(date +%s) - total_start )) s)"
printf '%-16s %-5s %5s  %s\n' drill result time figures
printf '%s\n' "${summary[@]}"
if [[ ${failed} -eq 0 ]]; then
  echo "RESULT faults PASS ${#drills[@]} drills"
else
  echo "RESULT faults FAIL ${failed} of ${#drills[@]} drills failed"
  exit 1
fi
