#!/usr/bin/env bash
# End-to-end quickstart: build binsync, start a throwaway MariaDB (binlog ROW + FULL metadata,
# GTID), make some changes, and watch binsync print them as JSON lines; then stop it, change
# one more row, and run it again with --exit-at-end to see it resume from its checkpoint.
#
#   scripts/demo.sh
#
# Environment:
#   BINSYNC_SOURCE=mysql://USER[:PASSWORD]@HOST:PORT   use this server instead of a throwaway one
#                  (the user needs CREATE, DROP, INSERT, UPDATE, DELETE on the demo database,
#                  and what binsync itself needs: REPLICATION SLAVE, REPLICATION CLIENT, SELECT)
#   BINSYNC_DEMO_DB       database the demo creates (default: shop); on BINSYNC_SOURCE it must
#                         not exist yet unless BINSYNC_DEMO_RESET=1 (it is then dropped first)
#   BINSYNC_DEMO_KEEP=1   keep the temp dir (state, outputs, server datadir) for a look after
#   BINSYNC_DEMO_BIN      run this binsync instead of building one
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DB=${BINSYNC_DEMO_DB:-shop}
[[ $DB =~ ^[A-Za-z0-9_]+$ ]] || {
    echo "BINSYNC_DEMO_DB: letters, digits and _ only" >&2
    exit 2
}
SERVER_ID=4242 # binsync's replica id; must differ from the source's own server_id

n=0
bold='' plain=''
if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() {
    n=$((n + 1))
    printf '\n%s==> [%d] %s%s\n' "$bold" "$n" "$*" "$plain"
}
note() { printf '    %s\n' "$@"; }
die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}
indent() { sed 's/^/    /'; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/binsync-demo.XXXXXX")
SERVER_PID=
BINSYNC_PID=
RECEIVER_PID=
cleanup() {
    local rc=$?
    if [[ -n $RECEIVER_PID ]] && kill -0 "$RECEIVER_PID" 2>/dev/null; then
        kill -KILL "$RECEIVER_PID" 2>/dev/null || true
        wait "$RECEIVER_PID" 2>/dev/null || true
    fi
    if [[ -n $BINSYNC_PID ]] && kill -0 "$BINSYNC_PID" 2>/dev/null; then
        kill -KILL "$BINSYNC_PID" 2>/dev/null || true
        wait "$BINSYNC_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n ${BINSYNC_DEMO_KEEP:-} ]]; then
        echo "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binsync ------------------------------------------------------------------------------------
if [[ -n ${BINSYNC_DEMO_BIN:-} ]]; then
    BIN=$BINSYNC_DEMO_BIN
else
    step "Building binsync (cargo build --release)"
    cargo build --release
    BIN=${CARGO_TARGET_DIR:-target}/release/binsync
fi
[[ -x $BIN ]] || die "no binsync binary at $BIN"

# --- the source server --------------------------------------------------------------------------
# A fresh machine: install MariaDB (server and client) when we can.
if ! command -v mariadb >/dev/null || { [[ -z ${BINSYNC_SOURCE:-} ]] && ! command -v mariadb-install-db >/dev/null; }; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        step "Installing MariaDB (apt-get install mariadb-server mariadb-client)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends mariadb-server mariadb-client >/dev/null
    fi
fi
client=$(command -v mariadb || command -v mysql) ||
    die "the mariadb client is missing (apt-get install mariadb-client)"

if [[ -n ${BINSYNC_SOURCE:-} ]]; then
    SOURCE=$BINSYNC_SOURCE
    re='^mysql://([^:@/]+)(:([^@]*))?@([^:/@]+)(:([0-9]+))?/?$'
    [[ $SOURCE =~ $re ]] || die "BINSYNC_SOURCE: expected mysql://USER[:PASSWORD]@HOST:PORT"
    urldecode() { printf '%b' "${1//%/\\x}"; }
    DB_USER=$(urldecode "${BASH_REMATCH[1]}") DB_PASSWORD=$(urldecode "${BASH_REMATCH[3]}")
    DB_HOST=${BASH_REMATCH[4]} DB_PORT=${BASH_REMATCH[6]:-3306}
    step "Using the source server $DB_HOST:$DB_PORT (BINSYNC_SOURCE)"
    # What the output shows of the URL: no password.
    shown_source=$(sed -E 's#^(mysql://[^:@/]+):[^@]*@#\1:***@#' <<<"$SOURCE")
else
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    install_db=$(command -v mariadb-install-db || echo /usr/bin/mariadb-install-db)
    [[ -x $mariadbd && -x $install_db ]] ||
        die "MariaDB is missing (apt-get install mariadb-server mariadb-client), or set BINSYNC_SOURCE"
    DB_USER=root DB_PASSWORD='' DB_HOST=127.0.0.1
    # A port that nothing listens on (bash connects; a refusal means free).
    for _ in $(seq 200); do
        DB_PORT=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$DB_PORT") 2>/dev/null; then break; fi
    done
    SOURCE="mysql://root@127.0.0.1:$DB_PORT"
    shown_source=$SOURCE
    datadir=$TMP/mariadb
    step "Starting a throwaway MariaDB on 127.0.0.1:$DB_PORT (datadir $datadir)"
    user_arg=()
    [[ $(id -u) -eq 0 ]] && user_arg=(--user=root)
    "$install_db" --no-defaults --datadir="$datadir" "${user_arg[@]}" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        --innodb-buffer-pool-size=16M --innodb-log-file-size=8M >"$TMP/install-db.log" 2>&1 ||
        die "mariadb-install-db failed: $(tail -20 "$TMP/install-db.log")"
    server_args=(
        --no-defaults "${user_arg[@]}" --datadir="$datadir" --port="$DB_PORT"
        --bind-address=127.0.0.1 --socket="$datadir/mysqld.sock" --pid-file="$datadir/mysqld.pid"
        --log-error="$datadir/error.log" --skip-name-resolve
        --server-id=1 --log-bin="$datadir/mariadb-bin" --binlog-format=ROW
        --binlog-row-metadata=FULL --binlog-row-image=FULL --gtid-strict-mode=ON
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
        --innodb-buffer-pool-size=16M --innodb-log-file-size=8M --performance-schema=OFF
    )
    note "mariadbd ${server_args[*]}"
    "$mariadbd" "${server_args[@]}" >"$TMP/mariadbd.out" 2>&1 &
    SERVER_PID=$!
fi

sql() {
    MYSQL_PWD=$DB_PASSWORD "$client" --no-defaults --protocol=TCP -h "$DB_HOST" -P "$DB_PORT" \
        -u "$DB_USER" --default-character-set=utf8mb4 --batch --skip-column-names "$@"
}
# Shows the statements, then runs them.
run_sql() {
    printf '%s\n' "$1" | sed -e '/^[[:space:]]*$/d' -e 's/^/    sql> /'
    sql -e "$1"
}

for i in $(seq 300); do
    sql -e 'SELECT 1' >/dev/null 2>&1 && break
    if [[ -n $SERVER_PID ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
        die "mariadbd exited: $(tail -20 "$datadir/error.log" 2>/dev/null)"
    fi
    [[ $i -lt 300 ]] || die "the source is not reachable at $DB_HOST:$DB_PORT"
    sleep 0.1
done
note "$(sql -e "SELECT CONCAT(VERSION(), ', server_id ', @@server_id, ', binlog_format ', @@binlog_format)")"

if [[ -n ${BINSYNC_SOURCE:-} ]]; then
    if [[ -n $(sql -e "SHOW DATABASES LIKE '$DB'") && -z ${BINSYNC_DEMO_RESET:-} ]]; then
        die "database $DB exists on the source; set BINSYNC_DEMO_RESET=1 to drop it, or BINSYNC_DEMO_DB"
    fi
    # Start at the source's current end, not at the beginning of its history.
    read -r bl_file bl_pos _ < <(sql -e 'SHOW MASTER STATUS' 2>/dev/null ||
        sql -e 'SHOW BINARY LOG STATUS') || true
    [[ -n ${bl_file:-} ]] || die "the source has no binlog (log-bin is off)"
    START="file:$bl_file:$bl_pos"
else
    START=earliest
fi

step "Creating the demo table $DB.products"
run_sql "DROP DATABASE IF EXISTS $DB;
CREATE DATABASE $DB;
CREATE TABLE $DB.products (
  id BIGINT UNSIGNED PRIMARY KEY,
  name VARCHAR(64),
  price DECIMAL(10,2),
  tags JSON,
  updated_at DATETIME(6)
);"

step "Preflight: binsync check --source $shown_source"
"$BIN" check --source "$SOURCE" 2>&1 | indent || note "(binsync check exited with status $?)"

# --- first run: live ------------------------------------------------------------------------------
STATE=$TMP/state
run1=(run --source "$SOURCE" --server-id "$SERVER_ID" --state-dir "$STATE" --sink stdout --start "$START")
step "Starting binsync in the background"
note "binsync ${run1[*]/"$SOURCE"/"$shown_source"}"
"$BIN" "${run1[@]}" >"$TMP/run1.out" 2>"$TMP/run1.err" &
BINSYNC_PID=$!
sleep 1
kill -0 "$BINSYNC_PID" 2>/dev/null || {
    wait "$BINSYNC_PID" || true
    indent <"$TMP/run1.err"
    die "binsync exited at start-up (its stderr is above)"
}

step "Changing rows while binsync runs"
run_sql "INSERT INTO $DB.products VALUES
  (1, 'Kettle', 39.90, '[\"kitchen\", \"electric\"]', NOW(6)),
  (2, 'Espresso grinder', 189.00, '[\"coffee\"]', NOW(6)),
  (3, 'Pour-over stand', 24.50, NULL, NOW(6));
UPDATE $DB.products SET price = 34.90, updated_at = NOW(6) WHERE id = 1;
UPDATE $DB.products SET tags = JSON_ARRAY_APPEND(tags, '\$', 'sale'), updated_at = NOW(6) WHERE id = 2;
DELETE FROM $DB.products WHERE id = 3;"
changes=6 # 3 inserted rows, 2 updated, 1 deleted

step "Waiting for binsync to deliver the $changes changes"
for _ in $(seq 100); do
    [[ $(grep -c . "$TMP/run1.out") -ge $changes ]] && break
    kill -0 "$BINSYNC_PID" 2>/dev/null || break
    sleep 0.1
done
sleep 2 # and anything else it has to say
note "sending SIGTERM to binsync (pid $BINSYNC_PID)"
kill -TERM "$BINSYNC_PID" 2>/dev/null || true
for _ in $(seq 150); do
    kill -0 "$BINSYNC_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$BINSYNC_PID" 2>/dev/null; then
    note "still running 15 s after SIGTERM: killing it"
    kill -KILL "$BINSYNC_PID"
fi
rc=0
wait "$BINSYNC_PID" || rc=$?
BINSYNC_PID=
note "binsync exited with status $rc"

step "What binsync printed (stdout: one JSON line per change)"
indent <"$TMP/run1.out"
lines1=$(grep -c . "$TMP/run1.out" || true)
step "binsync's log (stderr, last 15 lines)"
tail -n 15 "$TMP/run1.err" | indent

step "binsync status --state-dir $STATE"
"$BIN" status --state-dir "$STATE" 2>&1 | indent || note "(binsync status exited with status $?)"

# --- second run: resume from the checkpoint -----------------------------------------------------
step "Changing one more row while binsync is stopped"
run_sql "INSERT INTO $DB.products VALUES (4, 'Milk frother', 59.00, '[\"coffee\", \"new\"]', NOW(6));"

run2=(run --source "$SOURCE" --server-id "$SERVER_ID" --state-dir "$STATE" --sink stdout --start "$START" --exit-at-end)
step "Running binsync again with --exit-at-end: it resumes from its checkpoint"
note "binsync ${run2[*]/"$SOURCE"/"$shown_source"}"
rc=0
timeout 120 "$BIN" "${run2[@]}" >"$TMP/run2.out" 2>"$TMP/run2.err" || rc=$?
note "binsync exited with status $rc"
step "What the second run printed"
indent <"$TMP/run2.out"

# --- third run: the sync API -------------------------------------------------------------------
step "Starting the reference sync API receiver: binsync receive"
RSTATE=$TMP/receiver
"$BIN" receive --listen 127.0.0.1:0 --state-dir "$RSTATE" >"$TMP/receiver.out" 2>"$TMP/receiver.err" &
RECEIVER_PID=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$TMP/receiver.out" | head -n 1)
    [[ -n $addr ]] && break
    kill -0 "$RECEIVER_PID" 2>/dev/null || die "binsync receive exited: $(cat "$TMP/receiver.err")"
    sleep 0.1
done
[[ -n $addr ]] || die "binsync receive did not say where it listens"
note "listening on $addr"

run3=(run --source "$SOURCE" --server-id "$SERVER_ID" --state-dir "$TMP/state-http" --sink "http://$addr/sync" --start "$START" --exit-at-end)
step "Streaming the whole history into the sync API, batched per entity"
note "binsync ${run3[*]/"$SOURCE"/"$shown_source"}"
rc3=0
timeout 120 "$BIN" "${run3[@]}" >"$TMP/run3.out" 2>"$TMP/run3.err" || rc3=$?
note "binsync exited with status $rc3"
kill -TERM "$RECEIVER_PID" 2>/dev/null || true
wait "$RECEIVER_PID" 2>/dev/null || true
RECEIVER_PID=

step "What the receiver holds: binsync receive dump --state-dir $RSTATE"
"$BIN" receive dump --state-dir "$RSTATE" >"$TMP/dump.json" 2>"$TMP/dump.err" ||
    die "binsync receive dump failed: $(cat "$TMP/dump.err")"
indent <"$TMP/dump.json"
step "And the source table, for comparison"
sql -e "SELECT id, name, price FROM $DB.products ORDER BY id" | indent
live=$(grep -c '"deleted": false' "$TMP/dump.json" || true)
rows=$(sql -e "SELECT COUNT(*) FROM $DB.products")

step "Result"
ok=true
if [[ $rc3 -ne 0 || $live -ne $rows ]]; then
    note "FAIL: the receiver holds $live live products, the source $rows (binsync exit $rc3)"
    tail -n 15 "$TMP/run3.err" | indent
    ok=false
fi
if [[ $lines1 -lt $changes ]]; then
    note "FAIL: the first run printed $lines1 lines for $changes changes"
    ok=false
fi
if [[ $rc -ne 0 ]]; then
    note "FAIL: the --exit-at-end run exited with status $rc; its log:"
    tail -n 15 "$TMP/run2.err" | indent
    ok=false
fi
if grep -qE 'Kettle|Espresso grinder|Pour-over stand' "$TMP/run2.out"; then
    note "FAIL: the second run repeated changes the first one had delivered"
    ok=false
fi
if ! grep -q 'Milk frother' "$TMP/run2.out"; then
    note "FAIL: the second run did not deliver the change made while binsync was stopped"
    ok=false
fi
if $ok; then
    note "OK: $lines1 changes delivered live; after the restart only the 1 new change, nothing old;"
    note "    the sync API receiver holds the same $rows products as the source table."
else
    exit 1
fi
