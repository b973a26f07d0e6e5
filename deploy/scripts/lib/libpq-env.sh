# shellcheck shell=bash
# Sourced by backup-store.sh and restore-store.sh: turn the store's URL into libpq's environment.
#
# RECKON_STORE_URL is SQLAlchemy's form (postgresql+asyncpg://user:password@host:5432/reckon?ssl=require);
# pg_dump, pg_restore and psql read libpq's variables instead. What the URL names wins; PG*
# variables already set (PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, a ~/.pgpass...) fill in the rest.
# The password goes to PGPASSWORD, never onto a command line (where `ps` would show it), and no
# function here ever prints it.

die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: usage error: %s (--help)\n' "${0##*/}" "$*" >&2
    exit 2
}

warn() {
    printf '%s: warning: %s\n' "${0##*/}" "$*" >&2
}

# Percent-decode $1 (user, password and database may be URL-encoded: `@ : / ? #`).
url_decode() {
    local escaped=${1//\\/\\\\}
    printf '%b' "${escaped//%/\\x}"
}

# Export PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (and PGSSL*) from the URL in $1.
libpq_env_from_url() {
    local url=$1 scheme rest authority path query userinfo hostport host port pair key value
    [[ $url == *://* ]] || die "the store URL is not a URL (expected postgresql+asyncpg://user:password@host:5432/database)"
    scheme=${url%%://*}
    case $scheme in
        postgresql | postgres | postgresql+asyncpg | postgresql+psycopg | postgresql+psycopg2 | postgresql+pg8000) ;;
        sqlite*) die "the store URL names a SQLite store ($scheme): copy the file instead (sqlite3 FILE \".backup COPY\")" ;;
        *) die "the store URL's scheme '$scheme' is not PostgreSQL" ;;
    esac
    rest=${url#*://}
    rest=${rest%%#*}
    query=
    if [[ $rest == *\?* ]]; then
        query=${rest#*\?}
        rest=${rest%%\?*}
    fi
    path=
    authority=$rest
    if [[ $rest == */* ]]; then
        authority=${rest%%/*}
        path=${rest#*/}
    fi
    userinfo=
    hostport=$authority
    if [[ $authority == *@* ]]; then
        userinfo=${authority%@*}
        hostport=${authority##*@}
    fi
    if [[ -n $userinfo ]]; then
        if [[ $userinfo == *:* ]]; then
            PGUSER=$(url_decode "${userinfo%%:*}")
            PGPASSWORD=$(url_decode "${userinfo#*:}")
            export PGPASSWORD
        else
            PGUSER=$(url_decode "$userinfo")
        fi
        export PGUSER
    fi
    port=
    if [[ $hostport == \[* ]]; then # [::1]:5432
        host=${hostport#\[}
        host=${host%%\]*}
        [[ $hostport == *\]:* ]] && port=${hostport##*\]:}
    else
        host=${hostport%%:*}
        [[ $hostport == *:* ]] && port=${hostport#*:}
    fi
    if [[ -n $host ]]; then
        PGHOST=$(url_decode "$host")
        export PGHOST
    fi
    if [[ -n $port ]]; then
        [[ $port =~ ^[0-9]+$ ]] || die "the store URL's port '$port' is not a number"
        export PGPORT=$port
    fi
    if [[ -n $path ]]; then
        PGDATABASE=$(url_decode "$path")
        export PGDATABASE
    fi
    if [[ -n $query ]]; then
        local -a pairs
        IFS='&' read -ra pairs <<<"$query"
        for pair in "${pairs[@]}"; do
            key=${pair%%=*}
            value=$(url_decode "${pair#*=}")
            case $key in
                # asyncpg's ssl= takes libpq's sslmode names, or true/false.
                ssl | sslmode)
                    case $value in
                        true | True | 1) value=require ;;
                        false | False | 0) value=disable ;;
                    esac
                    export PGSSLMODE=$value
                    ;;
                sslrootcert) export PGSSLROOTCERT=$value ;;
                sslcert) export PGSSLCERT=$value ;;
                sslkey) export PGSSLKEY=$value ;;
                host) export PGHOST=$value ;; # ?host=/run/postgresql: a Unix socket directory
                port) export PGPORT=$value ;;
                application_name) export PGAPPNAME=$value ;;
                *) warn "ignoring the store URL's parameter '$key' (libpq has no equivalent here)" ;;
            esac
        done
    fi
}

# Set libpq's environment from RECKON_STORE_URL when it is set, else use PG* as they are.
libpq_env() {
    if [[ -n ${RECKON_STORE_URL:-} ]]; then
        libpq_env_from_url "$RECKON_STORE_URL"
    fi
    [[ -n ${PGDATABASE:-} ]] || die "no database named: set RECKON_STORE_URL (postgresql+asyncpg://user:password@host:5432/database) or PGDATABASE (with PGHOST, PGUSER, PGPASSWORD...)"
}

# user@host:port/database, for messages: never the password.
libpq_target() {
    printf '%s@%s:%s/%s' "${PGUSER:-${USER:-?}}" "${PGHOST:-local socket}" "${PGPORT:-5432}" "$PGDATABASE"
}

# psql that stops at the first error, reads no ~/.psqlrc and never prompts for a password.
psql_quiet() {
    psql --no-psqlrc --no-password --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 "$@"
}
