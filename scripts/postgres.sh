#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests and the benchmarks.
#
#   bash scripts/postgres.sh [--dir DIR] [--port PORT] start|url|stop|status|destroy
#
#   start    installs Debian's PostgreSQL 15 when /usr/lib/postgresql/15/bin/initdb
#            is missing (apt-get, as root or through sudo), creates the cluster
#            when it does not exist yet, starts it when it is not running, and
#            prints its URL. Idempotent: with the cluster running it only prints
#            the URL.
#   url      prints the URL (postgres://postgres@127.0.0.1:PORT/postgres).
#   stop     stops the cluster (fast shutdown; `stop --immediate` for an
#            immediate one, as after a crash). Stopping a stopped cluster is fine.
#   status   prints "running URL" (exit 0), "stopped" (exit 3) or "absent" (exit 4).
#   destroy  stops the cluster and removes its directory.
#
# The cluster lives in DIR (default $QUEUE_PG_DIR, else /tmp/queue-pg-$UID):
# DIR/data (the data directory), DIR/socket (its Unix socket directory),
# DIR/postgres.log (the server's log) and DIR/QUEUE_TEST_CLUSTER, the marker
# saying this script made it. The script never starts, stops or removes a
# directory without that marker. It listens on 127.0.0.1 only, on PORT (default
# $QUEUE_PG_PORT, else 55432), trusts every local connection (the database
# superuser is `postgres`, no password) and allows 400 connections, so that many
# test processes can share it. fsync stays on (QUEUE_PG_FSYNC=off turns it off,
# for a faster but not crash-safe cluster). Several clusters side by side: give
# each its own DIR and PORT.
#
# PostgreSQL refuses to run as root: run as root, the script creates the system
# user `queuepg` (QUEUE_PG_OS_USER) and runs initdb and pg_ctl as that user.
#
# Safe to call concurrently: every subcommand that changes something holds an
# flock on DIR.lock, and the installation holds one on /tmp/queue-pg-install.lock.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
DIR=${QUEUE_PG_DIR:-/tmp/queue-pg-$(id -u)}
PORT=${QUEUE_PG_PORT:-55432}
OS_USER=${QUEUE_PG_OS_USER:-queuepg}
FSYNC=${QUEUE_PG_FSYNC:-on}
MARKER_NAME=QUEUE_TEST_CLUSTER
LOCK_TIMEOUT=300

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 [--dir DIR] [--port PORT] start|url|stop [--immediate]|status|destroy" >&2
    exit 2
}

cmd=""
stop_mode=fast
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] || usage; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        --port) [ $# -ge 2 ] || usage; PORT=$2; shift 2 ;;
        --port=*) PORT=${1#--port=}; shift ;;
        --immediate) stop_mode=immediate; shift ;;
        start|url|stop|status|destroy)
            [ -z "$cmd" ] || usage
            cmd=$1; shift ;;
        *) usage ;;
    esac
done
[ -n "$cmd" ] || usage
case "$PORT" in
    ''|*[!0-9]*) die "the port must be a number, got '$PORT'" ;;
esac
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "the port must be 1..65535, got $PORT"
case "$FSYNC" in
    on|off) ;;
    *) die "QUEUE_PG_FSYNC must be on or off, got '$FSYNC'" ;;
esac
case "$DIR" in
    /*) ;;
    *) DIR="$(pwd)/$DIR" ;;
esac
DIR=${DIR%/}
[ -n "$DIR" ] || die "the cluster directory must not be /"

DATA=$DIR/data
SOCKET=$DIR/socket
LOG=$DIR/postgres.log
MARKER=$DIR/$MARKER_NAME
URL="postgres://postgres@127.0.0.1:$PORT/postgres"

# Runs a PostgreSQL program as the cluster's owner: this user, or OS_USER when
# this is root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$OS_USER" -- "$@"
    else
        "$@"
    fi
}

lock() {
    mkdir -p "$(dirname "$DIR")"
    exec 9>>"$DIR.lock"
    flock -w "$LOCK_TIMEOUT" 9 || die "waited ${LOCK_TIMEOUT}s for the lock $DIR.lock"
}

# Refuses a directory this script did not make.
check_ours() {
    if [ -e "$DIR" ] && [ ! -f "$MARKER" ]; then
        if [ -d "$DIR" ] && [ -z "$(ls -A "$DIR")" ]; then
            return 0
        fi
        die "$DIR exists but was not made by this script (no $MARKER_NAME marker): not touching it; choose another --dir / QUEUE_PG_DIR"
    fi
}

install_postgres() {
    [ -x "$PG_BIN/initdb" ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            die "$PG_BIN/initdb is missing and this is neither root nor has sudo; install Debian's 'postgresql-15' package by hand"
        fi
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "no apt-get here; install PostgreSQL 15 so that $PG_BIN/initdb exists"
    exec 8>>/tmp/queue-pg-install.lock
    flock -w "$LOCK_TIMEOUT" 8 || die "waited ${LOCK_TIMEOUT}s for /tmp/queue-pg-install.lock"
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "postgres.sh: installing Debian's postgresql-15 with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package's own cluster (main, port 5432) is not needed: do not
        # create it.
        "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/queue-no-main.conf >/dev/null
        "${sudo[@]}" apt-get update -q >&2
        "${sudo[@]}" apt-get install -y -q --no-install-recommends postgresql-15 >&2 ||
            "${sudo[@]}" apt-get install -y -q --no-install-recommends postgresql >&2 ||
            die "apt-get could not install postgresql-15"
    fi
    exec 8>&-
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL was installed but $PG_BIN/initdb is still missing (not version 15?)"
}

ensure_os_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    if ! id -u "$OS_USER" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$OS_USER" 2>/dev/null ||
            id -u "$OS_USER" >/dev/null 2>&1 ||
            die "could not create the system user $OS_USER"
    fi
}

is_running() {
    [ -f "$DATA/PG_VERSION" ] && as_owner "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

init_cluster() {
    if [ -f "$DATA/PG_VERSION" ]; then
        return 0
    fi
    mkdir -p "$DIR"
    touch "$MARKER"
    rm -rf "$DATA"
    mkdir -p "$DATA" "$SOCKET"
    chmod 700 "$DATA"
    if [ "$(id -u)" -eq 0 ]; then
        chown "$OS_USER:" "$DIR" "$DATA" "$SOCKET"
    fi
    echo "postgres.sh: creating a cluster in $DATA" >&2
    if ! as_owner "$PG_BIN/initdb" -D "$DATA" --username=postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1; then
        cat "$DIR/initdb.log" >&2
        rm -rf "$DATA"
        die "initdb failed (the log is above)"
    fi
    # Settings that depend on the port and the directory are rewritten at each
    # start (queue.conf); the rest is fixed here.
    {
        echo ""
        echo "# Added by scripts/postgres.sh (a throwaway cluster for tests)."
        echo "listen_addresses = '127.0.0.1'"
        echo "max_connections = 400"
        echo "shared_buffers = 128MB"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        echo "include_if_exists = 'queue.conf'"
    } | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
}

start_cluster() {
    {
        echo "# Rewritten by scripts/postgres.sh at every start."
        echo "port = $PORT"
        echo "unix_socket_directories = '$SOCKET'"
        echo "fsync = $FSYNC"
    } | as_owner tee "$DATA/queue.conf" >/dev/null
    # The server must not inherit the lock's descriptors (it would hold the
    # lock for its whole life).
    if ! as_owner "$PG_BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 >/dev/null 2>&1 8>&- 9>&-; then
        echo "postgres.sh: the cluster in $DATA did not start; the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        die "could not start PostgreSQL on port $PORT (is the port taken by another server?)"
    fi
}

case "$cmd" in
    url)
        echo "$URL"
        ;;
    start)
        install_postgres
        ensure_os_user
        lock
        check_ours
        init_cluster
        if ! is_running; then
            start_cluster
            echo "postgres.sh: started PostgreSQL on 127.0.0.1:$PORT ($DIR)" >&2
        fi
        echo "$URL"
        ;;
    stop)
        lock
        check_ours
        if [ ! -f "$DATA/PG_VERSION" ]; then
            echo "postgres.sh: no cluster in $DIR" >&2
            exit 0
        fi
        if is_running; then
            as_owner "$PG_BIN/pg_ctl" stop -D "$DATA" -m "$stop_mode" -w -t 60 >/dev/null ||
                die "pg_ctl could not stop the cluster in $DATA"
            echo "postgres.sh: stopped ($stop_mode) the cluster in $DIR" >&2
        else
            echo "postgres.sh: the cluster in $DIR is not running" >&2
        fi
        ;;
    status)
        if [ ! -f "$DATA/PG_VERSION" ]; then
            echo "absent"
            exit 4
        fi
        if is_running; then
            echo "running $URL"
        else
            echo "stopped"
            exit 3
        fi
        ;;
    destroy)
        lock
        check_ours
        if [ ! -e "$DIR" ]; then
            echo "postgres.sh: no cluster in $DIR" >&2
            exit 0
        fi
        if is_running; then
            as_owner "$PG_BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 60 >/dev/null ||
                die "pg_ctl could not stop the cluster in $DATA"
        fi
        rm -rf "$DIR"
        echo "postgres.sh: removed the cluster in $DIR" >&2
        ;;
esac
