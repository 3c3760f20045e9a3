#!/usr/bin/env bash
# A team's MLflow tracking server: `mlflow server` on a PostgreSQL database, artifacts in a local folder.
#
#   scripts/tracking-server.sh start     # PostgreSQL, then MLflow on http://127.0.0.1:5000
#   scripts/tracking-server.sh status
#   scripts/tracking-server.sh stop      # both, by the pids it recorded
#
# Settings, from the environment:
#   RNAS_SERVER_DIR    the database, artifacts, logs and secrets (default: .tracking-server in the
#                      project, which git ignores). Made on the first start; later starts reuse it.
#   RNAS_SERVER_HOST   where MLflow listens (default 127.0.0.1: this machine only). To expose it
#                      deliberately, give another address (0.0.0.0: every interface) and
#                      RNAS_SERVER_ADMIN_PASSWORD_FILE: beyond loopback the server runs MLflow's
#                      basic-auth app, and it refuses to start without that password.
#   RNAS_SERVER_ADMIN_PASSWORD_FILE  a file of mode 0600 holding the password of MLflow's user
#                      `admin` (clients: MLFLOW_TRACKING_USERNAME=admin, MLFLOW_TRACKING_PASSWORD).
#   RNAS_SERVER_AUTH=1 basic auth on loopback too.
#   RNAS_SERVER_PORT   MLflow's port (default 5000); RNAS_PG_PORT PostgreSQL's (default 5433).
#   RNAS_SERVER_ALLOWED_HOSTS  passed to mlflow server --allowed-hosts (the names clients use for it).
#   RNAS_PG_OS_USER    the account PostgreSQL runs as when this script runs as root (default
#                      postgres): PostgreSQL refuses to run as root.
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow's job runner, off unless set to true (RNAS runs no
#                      MLflow jobs; the runner is seven more processes).
#
# PostgreSQL listens on 127.0.0.1 only (no Unix socket), and its password is generated on the
# first start into files of mode 0600 in RNAS_SERVER_DIR (db-password, and pgpass, which MLflow
# reads through PGPASSFILE): it is never on a command line nor in a tracked file.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${RNAS_SERVER_DIR:-$ROOT/.tracking-server}
HOST=${RNAS_SERVER_HOST:-127.0.0.1}
PORT=${RNAS_SERVER_PORT:-5000}
PG_PORT=${RNAS_PG_PORT:-5433}
PG_OS_USER=${RNAS_PG_OS_USER:-postgres}
DB_USER=rnas
DB_NAME=mlflow

die() { echo "error: $*" >&2; exit 2; }

pg_bin() {
    local initdb
    initdb=$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$initdb" ] || die "PostgreSQL is not installed: install it (Debian: apt-get install postgresql)"
    dirname "$(readlink -f "$initdb")"
}

as_pg() {  # PostgreSQL's own commands: as RNAS_PG_OS_USER when we are root
    if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

mlflow_bin() {
    if [ -x "$ROOT/.venv/bin/mlflow" ]; then echo "$ROOT/.venv/bin/mlflow"; else command -v mlflow || die "mlflow is not installed (pip install -r requirements.txt)"; fi
}

exposed() { case "$HOST" in 127.0.0.1|localhost|::1) [ "${RNAS_SERVER_AUTH:-0}" = 1 ];; *) return 0;; esac; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

check_credentials() {
    exposed || return 0
    local file=${RNAS_SERVER_ADMIN_PASSWORD_FILE:-}
    [ -n "$file" ] || die "RNAS_SERVER_HOST=$HOST exposes the server beyond this machine: set RNAS_SERVER_ADMIN_PASSWORD_FILE to a file of mode 0600 holding the admin password (MLflow's basic-auth app then asks every client for it)"
    [ -f "$file" ] && [ -s "$file" ] || die "RNAS_SERVER_ADMIN_PASSWORD_FILE=$file: no such file, or it is empty"
    [ "$(stat -c %a "$file")" = 600 ] || die "RNAS_SERVER_ADMIN_PASSWORD_FILE=$file: its mode is $(stat -c %a "$file"); make it 0600 (chmod 600 $file)"
    [ "$(head -n 1 "$file" | wc -c)" -gt 12 ] || die "RNAS_SERVER_ADMIN_PASSWORD_FILE=$file: the password must have at least 12 characters (MLflow's rule)"
}

init_database() {  # once: a cluster owned by the database user rnas, with a generated password
    local bin=$1 version
    version=$("$bin/initdb" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
    if [ -f "$DIR/pgdata/PG_VERSION" ]; then
        local had; had=$(cat "$DIR/pgdata/PG_VERSION")
        [ "$had" = "$version" ] || die "$DIR/pgdata holds a PostgreSQL $had database, and this machine has PostgreSQL $version: upgrade it (pg_upgrade), or start with another RNAS_SERVER_DIR"
        return 0
    fi
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$DIR/db-password"
     printf '127.0.0.1:*:*:%s:%s\n' "$DB_USER" "$(cat "$DIR/db-password")" > "$DIR/pgpass")
    local pwfile="$DIR/pgdata.pw" staging="$DIR/pgdata.new"
    rm -rf "$staging"; mkdir -m 700 "$staging"
    (umask 077; cp "$DIR/db-password" "$pwfile")
    if [ "$(id -u)" = 0 ]; then chown "$PG_OS_USER" "$staging" "$pwfile"; fi
    as_pg "$bin/initdb" -D "$staging" -U "$DB_USER" --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 >"$DIR/initdb.log" 2>&1 \
        || { rm -f "$pwfile"; die "initdb failed: see $DIR/initdb.log"; }
    rm -f "$pwfile"
    mv "$staging" "$DIR/pgdata"  # whole or absent: a failed initdb leaves nothing a later start would trust
}

start_postgres() {
    local bin=$1
    if as_pg "$bin/pg_ctl" -D "$DIR/pgdata" status >/dev/null 2>&1; then return 0; fi
    touch "$DIR/postgresql.log"
    if [ "$(id -u)" = 0 ]; then chown "$PG_OS_USER" "$DIR/postgresql.log"; fi
    as_pg "$bin/pg_ctl" -D "$DIR/pgdata" -l "$DIR/postgresql.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=''" start >/dev/null \
        || die "PostgreSQL did not start: see $DIR/postgresql.log"
    local exists
    exists=$(PGPASSFILE="$DIR/pgpass" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -d postgres -tAc \
             "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")
    [ "$exists" = 1 ] || PGPASSFILE="$DIR/pgpass" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB_NAME"
}

start_mlflow() {
    if alive "$DIR/mlflow.pid"; then echo "MLflow already runs: http://$HOST:$PORT"; return 0; fi
    local args=(server --backend-store-uri "postgresql+psycopg2://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME"
                --artifacts-destination "$DIR/artifacts" --host "$HOST" --port "$PORT")
    [ -z "${RNAS_SERVER_ALLOWED_HOSTS:-}" ] || args+=(--allowed-hosts "$RNAS_SERVER_ALLOWED_HOSTS")
    if exposed; then
        (umask 077; printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s\nadmin_username = admin\nadmin_password = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
            "$DIR/basic_auth.db" "$(cat "$RNAS_SERVER_ADMIN_PASSWORD_FILE")" > "$DIR/basic_auth.ini"
         [ -s "$DIR/flask-secret" ] || head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$DIR/flask-secret")
        args+=(--app-name basic-auth)
    fi
    (   # secrets reach MLflow through its environment, never its command line
        export PGPASSFILE="$DIR/pgpass"
        # MLflow's job runner (seven huey worker processes, for GenAI jobs) has nothing to run for RNAS
        export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
        if exposed; then
            export MLFLOW_AUTH_CONFIG_PATH="$DIR/basic_auth.ini"
            MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$DIR/flask-secret"); export MLFLOW_FLASK_SERVER_SECRET_KEY
        fi
        exec setsid "$(mlflow_bin)" "${args[@]}" >"$DIR/mlflow.log" 2>&1 < /dev/null
    ) &
    echo $! > "$DIR/mlflow.pid"
    for _ in $(seq 120); do
        if curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; then
            echo "MLflow runs: http://$HOST:$PORT (PostgreSQL on 127.0.0.1:$PG_PORT; everything in $DIR)"
            return 0
        fi
        alive "$DIR/mlflow.pid" || { tail -n 5 "$DIR/mlflow.log" >&2; rm -f "$DIR/mlflow.pid"; die "mlflow server stopped: see $DIR/mlflow.log"; }
        sleep 0.5
    done
    die "mlflow server does not answer after 60 s: see $DIR/mlflow.log"
}

stop_mlflow() {
    alive "$DIR/mlflow.pid" || { rm -f "$DIR/mlflow.pid"; return 0; }
    local pid; pid=$(cat "$DIR/mlflow.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$DIR/mlflow.pid"
}

case "${1:-}" in
    start)
        check_credentials
        BIN=$(pg_bin)
        mkdir -p "$DIR"; chmod 700 "$DIR"
        if [ "$(id -u)" = 0 ]; then chmod 711 "$DIR"; fi  # PostgreSQL's account reaches its own folders only
        init_database "$BIN"
        start_postgres "$BIN"
        start_mlflow
        ;;
    stop)
        stop_mlflow
        if [ -d "$DIR/pgdata" ]; then as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pgdata" -m fast stop >/dev/null 2>&1 || true; fi
        echo "stopped"
        ;;
    status)
        if alive "$DIR/mlflow.pid"; then echo "MLflow: running (pid $(cat "$DIR/mlflow.pid")), http://$HOST:$PORT"; else echo "MLflow: stopped"; fi
        if [ -d "$DIR/pgdata" ] && as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pgdata" status >/dev/null 2>&1; then
            echo "PostgreSQL: running, 127.0.0.1:$PG_PORT"; else echo "PostgreSQL: stopped"; fi
        ;;
    *)
        echo "usage: scripts/tracking-server.sh start|stop|status   (settings: see the top of this script)" >&2
        exit 2
        ;;
esac
