#!/usr/bin/env bash
# Back up Reckon's PostgreSQL store: `pg_dump -Fc` of one database to one file.
#
#   RECKON_STORE_URL='postgresql+asyncpg://reckon:<password>@db:5432/reckon' deploy/scripts/backup-store.sh
#   PGHOST=db PGUSER=reckon PGDATABASE=reckon deploy/scripts/backup-store.sh --dir /backups
#
# The database is the one RECKON_STORE_URL names (the coordinator's Secret holds it; SQLAlchemy's
# postgresql+asyncpg:// form or libpq's postgresql://), else libpq's PG* variables. The password is
# handed to pg_dump as PGPASSWORD, never on a command line, and never printed.
#
# The dump is written to FILE.partial, checked readable with `pg_restore --list`, then renamed to
# FILE: a file without .partial is a complete dump. Mode 0600 (it holds every invoice). Exits
# non-zero when anything fails, leaving no FILE. Restore it with restore-store.sh.
#
# Use a pg_dump at least as new as the server (e.g. the postgres:16 image for a PostgreSQL 16 server).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/libpq-env.sh
. "$here/lib/libpq-env.sh"

usage() {
    cat <<'EOF'
usage: backup-store.sh [--output FILE | --dir DIR]

Dump the Reckon store named by RECKON_STORE_URL (or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)
with pg_dump -Fc.

  --output FILE   write the dump to FILE (refused if FILE exists)
  --dir DIR       write DIR/reckon-store-<database>-<UTC time>.dump (default: the current directory,
                  or RECKON_BACKUP_DIR)
  -h, --help      this text

Prints the file, its size and the store's schema revision on success; exits non-zero on failure.
EOF
}

output=
directory=${RECKON_BACKUP_DIR:-.}
while [[ $# -gt 0 ]]; do
    case $1 in
        -o | --output)
            [[ $# -ge 2 ]] || usage_error "$1 needs a file name"
            output=$2
            shift 2
            ;;
        --output=*)
            output=${1#*=}
            shift
            ;;
        --dir)
            [[ $# -ge 2 ]] || usage_error "$1 needs a directory"
            directory=$2
            shift 2
            ;;
        --dir=*)
            directory=${1#*=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done

for command in pg_dump pg_restore psql; do
    command -v "$command" >/dev/null || die "$command is not installed (PostgreSQL's client tools)"
done
libpq_env
target=$(libpq_target)

if [[ -z $output ]]; then
    [[ -d $directory ]] || die "no directory $directory"
    safe_name=$(printf '%s' "$PGDATABASE" | tr -c 'A-Za-z0-9_.-' '_')
    output="$directory/reckon-store-$safe_name-$(date -u +%Y%m%dT%H%M%SZ).dump"
fi
[[ ! -e $output ]] || die "$output exists: name another file (--output) or move it away"
partial="$output.partial"

cleanup() {
    rm -f -- "$partial"
}
trap cleanup EXIT

# Which schema the dump holds: restore-store.sh compares it with the release it migrates with.
if ! revision=$(psql_quiet -c 'SELECT version_num FROM alembic_version' 2>&1); then
    printf '%s\n' "$revision" >&2
    die "cannot read the schema revision of $target: is it reachable, and a Reckon store (reckon db upgrade creates one)?"
fi
[[ -n $revision ]] || die "$target has no schema revision: not a migrated Reckon store"

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
umask 077
pg_dump --no-password --format=custom --file="$partial" || die "pg_dump of $target failed; no backup was written"
entries=$(pg_restore --list -- "$partial" | grep -c -v '^;' || true)
[[ $entries -gt 0 ]] || die "the dump of $target is unreadable or empty; no backup was written"
mv -- "$partial" "$output"
trap - EXIT

size=$(wc -c <"$output" | tr -d ' ')
printf 'backed up %s (schema revision %s) at %s\n' "$target" "$revision" "$started"
printf '%s\t%s bytes\t%s archive entries\n' "$output" "$size" "$entries"
