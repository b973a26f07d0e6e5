#!/usr/bin/env bash
# Restore a backup-store.sh dump of Reckon's store into a FRESH PostgreSQL database, bring its
# schema to this release (`reckon db upgrade`), and print what to check before anything uses it.
#
#   RECKON_STORE_URL='postgresql+asyncpg://reckon:<password>@db:5432/reckon_restored' \
#     deploy/scripts/restore-store.sh --create reckon-store-reckon-20261201T020000Z.dump
#
# The target is the database RECKON_STORE_URL names (SQLAlchemy's postgresql+asyncpg:// form or
# libpq's postgresql://), else libpq's PG* variables. A database that already has tables is
# refused (a restore over a live store mixes two histories) unless --clean says to replace what
# the dump holds. The restore is one transaction: when it fails, the database is left as it was.
# Objects are owned by the user it connects as (--no-owner): the coordinator's user, which then
# migrates them. The password is passed as PGPASSWORD, never on a command line, never printed.
#
# Use a pg_restore at least as new as the pg_dump that made the dump.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/libpq-env.sh
. "$here/lib/libpq-env.sh"

usage() {
    cat <<'EOF'
usage: restore-store.sh [--create] [--clean] [--no-upgrade] [--maintenance-db NAME] DUMP

Restore DUMP (pg_dump -Fc, from backup-store.sh) into the database named by RECKON_STORE_URL (or
PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE), then run `reckon db upgrade` on it.

  --create               create the database first (refused if it exists; needs CREATEDB)
  --maintenance-db NAME  the database --create connects to (default: postgres)
  --clean                restore into a database that already has tables: drop the objects the
                         dump holds first (pg_restore --clean --if-exists). Never needed for a
                         fresh database; think twice before using it on a live store.
  --no-upgrade           do not run `reckon db upgrade` (every coordinator runs it at start)
  -h, --help             this text

RECKON names the reckon command (default: reckon on PATH), e.g. RECKON="python -m accounting.cli".
EOF
}

create=false
clean=false
upgrade=true
maintenance_db=postgres
dump=
while [[ $# -gt 0 ]]; do
    case $1 in
        --create)
            create=true
            shift
            ;;
        --clean)
            clean=true
            shift
            ;;
        --no-upgrade)
            upgrade=false
            shift
            ;;
        --maintenance-db)
            [[ $# -ge 2 ]] || usage_error "$1 needs a database name"
            maintenance_db=$2
            shift 2
            ;;
        --maintenance-db=*)
            maintenance_db=${1#*=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*) usage_error "unknown option: $1" ;;
        *)
            [[ -z $dump ]] || usage_error "one DUMP only"
            dump=$1
            shift
            ;;
    esac
done
[[ -n $dump ]] || usage_error "name the dump to restore"
[[ -f $dump && -r $dump ]] || die "no readable file $dump"

# --- everything checked before anything is changed ---

for command in pg_restore psql; do
    command -v "$command" >/dev/null || die "$command is not installed (PostgreSQL's client tools)"
done
read -ra reckon <<<"${RECKON:-reckon}"
if $upgrade; then
    [[ -n ${RECKON_STORE_URL:-} ]] ||
        die "reckon db upgrade needs RECKON_STORE_URL (the PG* variables are libpq's only): set it, or --no-upgrade"
    command -v "${reckon[0]}" >/dev/null ||
        die "${reckon[0]} is not on PATH: set RECKON to the reckon command, or --no-upgrade"
fi
libpq_env
target=$(libpq_target)

pg_restore --list -- "$dump" >/dev/null || die "$dump is not a pg_dump archive (pg_dump -Fc)"
dump_revision=$(
    pg_restore --data-only --table=alembic_version --file=- -- "$dump" |
        awk '/^COPY .*alembic_version/ { copying = 1; next } /^\\\.$/ { copying = 0 } copying { print $1 }'
)
[[ -n $dump_revision ]] || die "$dump holds no schema revision (alembic_version): not a dump of a Reckon store"

if $create; then
    exists=$(psql_quiet --dbname="$maintenance_db" -v name="$PGDATABASE" \
        <<<"SELECT count(*) FROM pg_database WHERE datname = :'name';") ||
        die "cannot connect to $maintenance_db on ${PGHOST:-the local socket} to create $PGDATABASE (--maintenance-db)"
    [[ $exists == 0 ]] || die "database $PGDATABASE exists already: restore into it without --create, or name a new one"
    psql_quiet --dbname="$maintenance_db" -v name="$PGDATABASE" <<<'CREATE DATABASE :"name";' ||
        die "could not create database $PGDATABASE"
    printf 'created database %s\n' "$target"
fi

# shellcheck disable=SC2016 # $$ is SQL's, not the shell's
tables=$(psql_quiet <<<'
    SELECT n.nspname || $$.$$ || c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ($$r$$, $$p$$, $$v$$, $$m$$, $$S$$, $$f$$)
      AND n.nspname NOT IN ($$pg_catalog$$, $$information_schema$$)
      AND n.nspname NOT LIKE $$pg\_toast%$$ AND n.nspname NOT LIKE $$pg\_temp\_%$$
    ORDER BY 1;') ||
    die "cannot connect to $target (does the database exist? --create makes it)"
if [[ -n $tables ]]; then
    count=$(wc -l <<<"$tables" | tr -d ' ')
    if ! $clean; then
        die "$target is not empty ($count tables and sequences, e.g. $(head -n 3 <<<"$tables" | paste -sd, -)): restore into a fresh database (--create), or --clean to replace what the dump holds"
    fi
    warn "$target has $count tables and sequences: --clean drops those the dump holds before restoring them"
fi

# --- the restore: one transaction, the first error rolls all of it back ---

options=(--no-password --exit-on-error --single-transaction --no-owner --no-privileges)
if $clean; then
    options+=(--clean --if-exists)
fi
pg_restore "${options[@]}" --dbname="$PGDATABASE" -- "$dump" ||
    die "pg_restore into $target failed and was rolled back; the database is as it was"
restored_revision=$(psql_quiet -c 'SELECT version_num FROM alembic_version') ||
    die "restored, but $target has no readable alembic_version"
[[ $restored_revision == "$dump_revision" ]] ||
    die "restored schema revision $restored_revision is not the dump's ($dump_revision)"
printf 'restored %s into %s (schema revision %s)\n' "$dump" "$target" "$restored_revision"

# --- the schema this release runs on ---

if $upgrade; then
    # reckon reads the store's URL from RECKON_STORE_URL, and redacts its password when it prints it.
    "${reckon[@]}" db upgrade ||
        die "reckon db upgrade failed on $target: the data is restored, the schema is still at $restored_revision"
    upgraded=$(psql_quiet -c 'SELECT version_num FROM alembic_version')
    if [[ $upgraded != "$restored_revision" ]]; then
        printf 'migrated from revision %s to %s\n' "$restored_revision" "$upgraded"
    fi
    "${reckon[@]}" reports list || warn "reckon reports list failed on $target"
    "${reckon[@]}" outbox || warn "reckon outbox failed on $target"
fi

# --- what to check ---

period=$(psql_quiet <<<"SELECT period_id FROM reports WHERE status = 'completed'
                        ORDER BY period_start DESC, revision DESC LIMIT 1;" 2>/dev/null || true)
cat <<EOF

Before a coordinator uses $target, with RECKON_STORE_URL naming it:
  1. reckon reports list: the newest report is the one you expect from when the dump was taken.
     Anything issued after the dump is not in this store, but the payment service has it.
  2. reckon reports reconcile ${period:-<period>}: exits 0, with the totals you had before
     (reckon reports show ${period:-<period>}: status history, each service's records, the total).
  3. reckon outbox: events still waiting are published again when a coordinator starts; the
     payment service drops the invoice_ids it has already processed.
  4. Only then point the coordinator's Secret (RECKON_STORE_URL) at it and restart the coordinators.
EOF
