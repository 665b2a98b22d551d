#!/usr/bin/env bash
# Backups against a real, private PostgreSQL 15 (its own data directory and port; the
# shared server is never touched):
#   1. the pgBackRest point-in-time-recovery runbook of docs/operations.md, step by step:
#      archive_command, stanza-create, check, full and differential backups, a "disaster",
#      `pgbackrest restore --type=time`, and the recovered database checked;
#   2. `loanbook backup` / `backup verify` / `restore` from the built CLI on the same server.
# Needs: /usr/lib/postgresql/15/bin, pgbackrest (Debian: apt-get install postgresql-15 pgbackrest),
# node, and `npm run build` done (or LOANBOOK="npx tsx src/cli.ts").
set -euo pipefail

cd "$(dirname "$0")/../.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PITR_PORT:-55432}
LOANBOOK=${LOANBOOK:-node dist/src/cli.js}
STANZA=loanbook

for tool in "$PGBIN/initdb" "$PGBIN/pg_ctl" pgbackrest psql pg_dump pg_restore openssl; do
  command -v "$tool" >/dev/null || { echo "backup-pitr: $tool not found" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/loanbook-pitr.XXXXXX)
# PostgreSQL refuses to run as root: as root, the server and pgBackRest run as `postgres`.
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); chown postgres: "$WORK"; else AS=(); fi
CONF=$WORK/pgbackrest.conf
DATA=$WORK/data

cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

pgb() { "${AS[@]}" pgbackrest --config="$CONF" --stanza=$STANZA "$@"; }
sqlq() { psql "postgres://postgres@127.0.0.1:$PORT/${DB:-loanbook}" -Atqv ON_ERROR_STOP=1 -c "$1"; }
start() { "${AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/log/postgres.log" -w start >/dev/null; }
stop() { "${AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; }
ms() { date +%s%3N; }

"${AS[@]}" mkdir -p "$WORK/repo" "$WORK/log" "$WORK/spool"
"${AS[@]}" tee "$CONF" >/dev/null <<EOF
[global]
repo1-path=$WORK/repo
repo1-retention-full=2
log-path=$WORK/log
spool-path=$WORK/spool
lock-path=$WORK/spool
start-fast=y
compress-type=zst

[$STANZA]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$WORK
EOF

"${AS[@]}" "$PGBIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
"${AS[@]}" tee -a "$DATA/postgresql.conf" >/dev/null <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=$CONF --stanza=$STANZA archive-push %p'
max_wal_senders = 3
EOF
start
DB=postgres sqlq "create database loanbook"

export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/loanbook"
ENCRYPTION_KEY=$(openssl rand -base64 32)
SECRET_KEY=$(openssl rand -base64 48)
export ENCRYPTION_KEY SECRET_KEY LOG_LEVEL=silent
$LOANBOOK migrate up >/dev/null

# One balanced journal entry (amount in minor units), as the ledger stores them.
post() {
  sqlq "begin;
        insert into journal_entries (id, entry_date, description, source_type) values ('$1', current_date, 'pitr check', 'test');
        insert into journal_lines values ('$1', 1, 'loans_receivable_principal', 'USD', $2), ('$1', 2, 'cash_clearing', 'USD', -$2);
        commit;"
}

echo "== pgBackRest: stanza-create, check, full backup"
pgb stanza-create >/dev/null
pgb check >/dev/null
t=$(ms); pgb --type=full backup >/dev/null; echo "full backup: $(( $(ms) - t )) ms"

post 00000000-0000-4000-8000-000000000001 1000
t=$(ms); pgb --type=diff backup >/dev/null; echo "diff backup: $(( $(ms) - t )) ms"
post 00000000-0000-4000-8000-000000000002 2500
sqlq "select pg_switch_wal()" >/dev/null
sleep 1
TARGET=$(sqlq "select now()")
BEFORE=$(sqlq "select count(distinct entry_id) || ' entries, ' || sum(amount) filter (where amount > 0) || ' debits' from journal_lines join journal_entries on id = entry_id")
sleep 1
echo "recovery target: $TARGET ($BEFORE)"
echo "== disaster: the ledger tables are dropped"
sqlq "drop table journal_lines, journal_entries cascade"
sqlq "select pg_switch_wal()" >/dev/null
pgb info | sed -n '1,4p'

echo "== pgbackrest restore --type=time"
stop
t=$(ms)
pgb --delta --type=time "--target=$TARGET" --target-action=promote restore >/dev/null
start
for _ in $(seq 1 60); do [ "$(DB=postgres sqlq 'select pg_is_in_recovery()')" = f ] && break; sleep 0.5; done
echo "restored and promoted: $(( $(ms) - t )) ms"
AFTER=$(sqlq "select count(distinct entry_id) || ' entries, ' || sum(amount) filter (where amount > 0) || ' debits' from journal_lines join journal_entries on id = entry_id")
echo "recovered: $AFTER"
[ "$AFTER" = "$BEFORE" ] || { echo "backup-pitr: FAILED: recovered '$AFTER', expected '$BEFORE'" >&2; exit 1; }
$LOANBOOK audit verify | head -1

echo "== loanbook backup / backup verify / restore on the recovered server"
t=$(ms); $LOANBOOK backup --to "$WORK/lbk" | head -2; echo "loanbook backup: $(( $(ms) - t )) ms"
post 00000000-0000-4000-8000-000000000003 700
# The live database moved on: reported, not a failure.
$LOANBOOK backup verify "$WORK/lbk" | grep -E 'rows.journal_entries|ledger.USD.debits|audit.chain|verified|FAILED'
DB=postgres sqlq "create database loanbook_restored"
$LOANBOOK restore "$WORK/lbk" --into "postgres://postgres@127.0.0.1:$PORT/loanbook_restored" | head -1
RESTORED=$(DB=loanbook_restored sqlq "select count(distinct entry_id) || ' entries, ' || sum(amount) filter (where amount > 0) || ' debits' from journal_lines join journal_entries on id = entry_id")
echo "restored from .lbk: $RESTORED"
[ "$RESTORED" = "$BEFORE" ] || { echo "backup-pitr: FAILED: restored '$RESTORED', expected '$BEFORE'" >&2; exit 1; }
DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/loanbook_restored" $LOANBOOK audit verify | head -1
if ENCRYPTION_KEY=$(openssl rand -base64 32) $LOANBOOK restore "$WORK/lbk" --into "postgres://postgres@127.0.0.1:$PORT/loanbook_restored" --yes 2>"$WORK/err"; then
  echo "backup-pitr: FAILED: a restore with another ENCRYPTION_KEY succeeded" >&2; exit 1
fi
echo "restore with another key: refused ($(grep -o '\[backup_[a-z_]*\]' "$WORK/err"))"

echo "backup-pitr: OK (point-in-time recovery to $TARGET recovered $AFTER; loanbook backup/verify/restore round trip)"
