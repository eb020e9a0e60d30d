#!/usr/bin/env bash
# The reproducible benchmark: starts a throwaway MariaDB, loads the standard workload
# (bench.products, 10 columns: 200,000 rows inserted then each updated once, 1,000 rows per
# transaction = 400,000 row changes, ~100 MiB of binlog), then times, side by side, each reading
# the whole binlog from its start to its end:
#   mariadb-binlog --raw                          the transfer alone (no decoding)
#   mariadb-binlog -v --base64-output=DECODE-ROWS MariaDB's own decoder, printing text
#   python-mysql-replication                      the usual Python CDC library, counting rows
#   binsync -> file, -> sync API (discarding receiver), -> sync API (storing receiver),
#   -> NATS JetStream (a nats-server started here: R1 stream, file storage; its CPU is the
#   receiver side; then `binsync receive --from nats://` applies the stream, timed too), and
#   beside it the floor: examples/nats_publish_floor.rs, a plain async-nats publisher sending
#   the same payloads (the file sink's lines) with the same headers into a fresh nats-server,
#   nothing decoded or checkpointed
# and measures the commit-to-delivery latency of binsync (default settings) at a steady 2,000 and
# 20,000 row changes/s, through --sink stdout and through --sink http into a plain Python receiver
# (scripts/bench/sync_receiver.py, not binsync's own). Prints markdown tables (wall time, rows/s,
# CPU time, and for the sync API runs the receiver's CPU time beside binsync's, peak RSS) and
# writes them to BENCH_OUT.
#
# Then the initial snapshot, on a fresh server: bench.products with BENCH_SNAPSHOT_ROWS rows
# (inserted only), read whole by `mariadb-dump --single-transaction --quick` to /dev/null and by
# a first `binsync run --exit-at-end` (fresh state dir, the default --snapshot when-needed) into
# the file sink on /dev/shm and into the sync API (`binsync receive --discard`): wall time,
# rows/s, the ratio to mariadb-dump's time, peak RSS.
#
#   scripts/bench.sh            everything
#   scripts/bench.sh snapshot   the snapshot part alone
#
# Environment:
#   BENCH_ROWS=N            rows of the workload (default 200000; changes = 2 x N)
#   BENCH_LATENCY_SECS=S    seconds the writer runs per latency rate (default 30)
#   BENCH_LATENCY_RATES     row changes/s of the latency runs (default "2000 20000"; "" skips)
#   BENCH_REPEAT=N          run each throughput tool N times and keep the fastest (default 3)
#   BENCH_BIG_TXN_ROWS=N    rows of the single big transaction of the memory check (default 500000)
#   BENCH_SNAPSHOT_ROWS=N   rows of the snapshot part's table (default 1000000)
#   BENCH_OUT=PATH          where the tables go (default target/bench/latest.md)
#   BENCH_BIN=PATH          benchmark this binsync binary instead of `cargo build --release`
#   BENCH_CACHE=DIR         where the pinned Python venv is kept (default ~/.cache/binsync-bench)
#   BENCH_KEEP=1            keep the temp dir (server datadir, outputs, logs)
#
# Needs: MariaDB (mariadbd, mariadb-install-db, mariadb, mariadb-binlog), nats-server, GNU time,
# python3 with venv, curl; as root on Debian, the missing ones are installed with apt-get.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

case ${1:-all} in
all | snapshot) PART=${1:-all} ;;
*)
    echo "usage: scripts/bench.sh [snapshot]" >&2
    exit 2
    ;;
esac
ROWS=${BENCH_ROWS:-200000}
SNAP_ROWS=${BENCH_SNAPSHOT_ROWS:-1000000}
TXN_ROWS=1000
LAT_SECS=${BENCH_LATENCY_SECS:-30}
LAT_RATES=${BENCH_LATENCY_RATES-2000 20000}
REPEAT=${BENCH_REPEAT:-3}
OUT=${BENCH_OUT:-target/bench/latest.md}
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/binsync-bench}
HELPER=$ROOT/scripts/bench/bench.py
REQUIREMENTS=$ROOT/scripts/bench/requirements.txt
SERVER_ID=4242 # binsync's replica id; the source is 1
OTHER_OPS=0    # operations besides the row changes in the stream runs (set by the file run)

for v in ROWS LAT_SECS REPEAT SNAP_ROWS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || {
        n=${v/LAT_/LATENCY_}
        echo "BENCH_${n/SNAP_/SNAPSHOT_}: a positive integer, not '${!v}'" >&2
        exit 2
    }
done
for r in $LAT_RATES; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || {
        echo "BENCH_LATENCY_RATES: positive integers, not '$r'" >&2
        exit 2
    }
done
CHANGES=$((2 * ROWS))

n=0
step() {
    n=$((n + 1))
    printf '\n==> [%d] %s\n' "$n" "$*"
}
note() { printf '    %s\n' "$@"; }
die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/binsync-bench.XXXXXX")
RES=$TMP/results
mkdir -p "$RES"
# Background processes this script started and has not reaped yet: killed by pid on any exit.
PIDS=()
forget_pid() { # pid: reaped, so never signalled again (its number may be reused)
    local p kept=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}
stop_pid() { # pid: TERM, up to 10 s, then KILL, then reap
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}
cleanup() {
    local rc=$?
    local pid
    for pid in "${PIDS[@]}"; do
        [[ $pid == "${SERVER_PID:-}" ]] && continue
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${SERVER_PID:-} ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n ${SNAP_OUT:-} ]] && rm -f "$SNAP_OUT"
    if [[ -n ${BENCH_KEEP:-} ]]; then
        echo "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools --------------------------------------------------------------------------------------
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
step "Checking the tools (load average now: $LOADAVG)"
missing=()
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || missing+=(mariadb-server)
command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
command -v mariadb >/dev/null || missing+=(mariadb-client)
command -v mariadb-binlog >/dev/null || missing+=(mariadb-client)
command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
[[ -x /usr/bin/time ]] || missing+=(time)
if [[ $PART == all ]]; then
    command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
fi
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        note "installing ${missing[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        die "missing: ${missing[*]} (Debian packages)"
    fi
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
note "$("$MARIADBD" --version)"

# The Python side in a venv pinned by scripts/bench/requirements.txt, cached across runs (the
# snapshot part alone needs none).
if [[ $PART == all ]]; then
    py_ver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    req_hash=$(sha256sum "$REQUIREMENTS" | cut -c1-12)
    VENV=$CACHE/venv-py$py_ver-$req_hash
    if [[ ! -f $VENV/.complete ]]; then
        note "creating the Python venv $VENV (pip install -r scripts/bench/requirements.txt)"
        rm -rf "$VENV"
        mkdir -p "$CACHE"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" ||
            die "pip install failed"
        touch "$VENV/.complete"
    fi
    PY=$VENV/bin/python
    note "python $("$PY" -c 'import sys; print(sys.version.split()[0])'), $("$PY" -c '
from importlib.metadata import version as v
print("mysql-replication", v("mysql-replication") + ", PyMySQL", v("PyMySQL"))')"
fi

if [[ -n ${BENCH_BIN:-} ]]; then
    SRC_BIN=$BENCH_BIN
else
    step "Building binsync (cargo build --release)"
    cargo build --release
    SRC_BIN=${CARGO_TARGET_DIR:-target}/release/binsync
fi
if [[ $PART == all ]]; then
    step "Building the reference JetStream publisher (cargo build --release --example nats_publish_floor)"
    cargo build --release --example nats_publish_floor
    FLOOR_BIN=$TMP/nats_publish_floor
    cp "${CARGO_TARGET_DIR:-target}/release/examples/nats_publish_floor" "$FLOOR_BIN"
fi
[[ -x $SRC_BIN ]] || die "no binsync binary at $SRC_BIN"
# A copy: a rebuild while the benchmark runs does not change what is measured.
BIN=$TMP/binsync
cp "$SRC_BIN" "$BIN"
"$BIN" receive --help >/dev/null 2>&1 || die "$SRC_BIN has no \`receive\` command: rebuild it"
note "binsync: $SRC_BIN ($(git describe --always --dirty 2>/dev/null || echo 'no git'))"

# --- the server ---------------------------------------------------------------------------------
user_arg=()
[[ $(id -u) -eq 0 ]] && user_arg=(--user=root)
innodb_args=(--innodb-buffer-pool-size=128M --innodb-log-file-size=128M
    --innodb-flush-log-at-trx-commit=2)
sql() {
    mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$PORT" -u root \
        --default-character-set=utf8mb4 --batch --skip-column-names "$@"
}
# start_server DIR [MARIADBD-ARGS]: a new MariaDB with an empty datadir TMP/DIR on a free port
# (the arguments override the defaults); sets PORT, SOURCE, DATADIR, SERVER_PID and
# MARIADB_VERSION.
start_server() {
    local i
    for _ in $(seq 200); do
        PORT=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    done
    SOURCE=mysql://root@127.0.0.1:$PORT
    DATADIR=$TMP/$1
    shift
    step "Starting MariaDB on 127.0.0.1:$PORT (datadir $DATADIR)"
    mariadb-install-db --no-defaults --datadir="$DATADIR" "${user_arg[@]}" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        "${innodb_args[@]}" >"$TMP/install-db.log" 2>&1 ||
        die "mariadb-install-db failed: $(tail -20 "$TMP/install-db.log")"
    local server_args=(
        --no-defaults "${user_arg[@]}" --datadir="$DATADIR" --port="$PORT"
        --bind-address=127.0.0.1 --socket="$DATADIR/mysqld.sock" --pid-file="$DATADIR/mysqld.pid"
        --log-error="$DATADIR/error.log" --skip-name-resolve
        --server-id=1 --log-bin="$DATADIR/mariadb-bin" --binlog-format=ROW
        --binlog-row-metadata=FULL --binlog-row-image=FULL --sync-binlog=0
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
        "${innodb_args[@]}" --performance-schema=OFF "$@"
    )
    note "mariadbd ${server_args[*]}"
    "$MARIADBD" "${server_args[@]}" >"$TMP/mariadbd.out" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for i in $(seq 300); do
        sql -e 'SELECT 1' >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "mariadbd exited: $(tail -20 "$DATADIR/error.log")"
        [[ $i -lt 300 ]] || die "mariadbd is not reachable on port $PORT after 30 s"
        sleep 0.1
    done
    MARIADB_VERSION=$(sql -e 'SELECT VERSION()')
    note "MariaDB $MARIADB_VERSION, binlog $(sql -e 'SELECT CONCAT(@@binlog_format, ", row image ",
        @@binlog_row_image, ", row metadata ", @@binlog_row_metadata)')"
}
stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

# The standard table, empty.
create_products() {
    sql -e "CREATE DATABASE bench;
CREATE TABLE bench.products (
  id BIGINT UNSIGNED PRIMARY KEY,
  sku VARCHAR(32) NOT NULL,
  name VARCHAR(200) NOT NULL,
  price DECIMAL(12,2) NOT NULL,
  stock INT NOT NULL,
  weight DOUBLE,
  attrs JSON,
  active TINYINT(1) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  status ENUM('draft','active','archived') NOT NULL
) ENGINE=InnoDB;"
}
# insert_sql FIRST SIZE: one autocommit statement inserting the rows FIRST..FIRST+SIZE-1 of
# bench.products, from MariaDB's sequence engine. The values are functions of the id (no
# RAND()): the same binlog contents every run.
insert_sql() {
    echo "INSERT INTO bench.products SELECT id, CONCAT('SKU-', LPAD(id, 10, '0')),
  CONCAT('Product ', id, ' ', ELT(1 + id % 4, 'kettle', 'grinder', 'lamp', 'chair'), ' ',
    REPEAT('abcdefghij', 7)),
  1 + (id % 100000) / 100, id % 1000, id * 0.25,
  JSON_OBJECT('color', ELT(1 + id % 4, 'red', 'green', 'blue', 'black'), 'size', id % 50),
  id % 2, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL id SECOND + INTERVAL id % 999983 MICROSECOND,
  1 + id % 3
FROM (SELECT $(($1 - 1)) + seq AS id FROM seq_1_to_$2) s;"
}

# timed NAME CMD...: runs CMD under GNU time; sets WALL (s), RSS (KiB, peak) and CPU (user +
# system s of CMD and its children). Fails the
# benchmark if CMD fails, showing its stderr. WALL is taken around the call to the
# microsecond (time's own %e has 10 ms steps, too coarse for the raw transfer).
timed() {
    local name=$1
    shift
    local rc=0 t0 t1 _e user sys
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%e %M %U %S' -o "$TMP/time.out" "$@" 2>"$TMP/$name.err" || rc=$?
    t1=$EPOCHREALTIME
    if ((rc)); then
        tail -n 20 "$TMP/$name.err" | sed 's/^/    | /' >&2
        die "$name exited with status $rc (its stderr is above)"
    fi
    read -r _e RSS user sys <"$TMP/time.out"
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
}

# A new receiver (binsync receive) on a free port; sets RECV_PID and RECV_ADDR.
start_receiver() { # state-dir [--discard]
    local out=$TMP/receiver.out
    : >"$out"
    "$BIN" receive --listen 127.0.0.1:0 --state-dir "$@" >"$out" 2>"$TMP/receiver.err" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    RECV_ADDR=
    for _ in $(seq 100); do
        RECV_ADDR=$(sed -n '1s/^listening on //p' "$out")
        [[ -n $RECV_ADDR ]] && return 0
        kill -0 "$RECV_PID" 2>/dev/null ||
            die "binsync receive exited: $(tail -5 "$TMP/receiver.err")"
        sleep 0.1
    done
    die "binsync receive did not print 'listening on ADDR' within 10 s"
}
json_field() { # json key
    python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"
}


# measure KEY NAME FUNCTION [ARGS]: BENCH_REPEAT runs, the fastest one goes into the table.
# tools.tsv (M_TSV if set), one line per tool: key, name, wall s, peak RSS KiB, CPU s, receiver
# CPU s (empty without a receiver), note. Rows/s count M_ROWS rows if set, else CHANGES.
measure() {
    local key=$1 name=$2 best_wall='' best_rss='' best_cpu='' best_recv_cpu='' best_note='' i
    shift 2
    step "$name"
    for ((i = 1; i <= REPEAT; i++)); do
        RECV_CPU=
        "$@"
        note "$(printf '%s s, %s rows/s, CPU %s s%s, peak RSS %s MiB; %s' "$WALL" \
            "$(awk -v c="${M_ROWS:-$CHANGES}" -v w="$WALL" 'BEGIN { printf "%.0f", (w > 0 ? c / w : 0) }')" \
            "$CPU" "${RECV_CPU:+, receiver CPU $RECV_CPU s}" "$(mib $((RSS * 1024)))" "$NOTE")"
        if [[ -z $best_wall ]] || awk -v a="$WALL" -v b="$best_wall" 'BEGIN { exit !(a < b) }'; then
            best_wall=$WALL best_rss=$RSS best_cpu=$CPU best_recv_cpu=$RECV_CPU best_note=$NOTE
        fi
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$name" "$best_wall" "$best_rss" "$best_cpu" \
        "$best_recv_cpu" "$best_note" >>"${M_TSV:-$RES/tools.tsv}"
}

# --- the initial snapshot ---------------------------------------------------------------------
# A first `binsync run` (fresh state dir, the default --snapshot when-needed, no --start) on a
# table with rows reads them all as `read` operations, then streams from the binlog end; with
# --exit-at-end it stops once the snapshot is delivered. Measured against mariadb-dump reading
# the same table. On its own fresh server: no other table is there to snapshot.
SNAP_TXN_ROWS=10000
# The file sink's output on tmpfs: the disk is not measured.
SNAP_DIR=/dev/shm
[[ -d $SNAP_DIR && -w $SNAP_DIR ]] || SNAP_DIR=$TMP
SNAP_OUT=$SNAP_DIR/binsync-bench-snapshot.$$.jsonl
snapshot_load() {
    step "Snapshot: loading $SNAP_ROWS rows into bench.products (inserted only), $SNAP_TXN_ROWS rows per transaction"
    create_products
    local first t0
    t0=$EPOCHREALTIME
    for ((first = 1; first <= SNAP_ROWS; first += SNAP_TXN_ROWS)); do
        insert_sql "$first" $((SNAP_ROWS - first + 1 < SNAP_TXN_ROWS ? SNAP_ROWS - first + 1 : SNAP_TXN_ROWS))
    done | sql --database=bench
    local got
    got=$(sql -e 'SELECT COUNT(*) FROM bench.products')
    [[ $got -eq $SNAP_ROWS ]] || die "bench.products has $got rows, expected $SNAP_ROWS"
    sql -e 'ANALYZE TABLE bench.products' >/dev/null
    SNAP_TABLE_MIB=$(sql -e "SELECT ROUND((data_length + index_length) / 1048576, 1)
        FROM information_schema.tables WHERE table_schema = 'bench' AND table_name = 'products'")
    note "loaded in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s; the table: $SNAP_TABLE_MIB MiB (InnoDB data + indexes)"
}
run_dump() {
    timed dump bash -c 'exec mariadb-dump "$@" >/dev/null' mariadb-dump --no-defaults \
        --single-transaction --quick --host=127.0.0.1 --port="$PORT" --user=root bench products
    NOTE="SQL text to /dev/null"
}
run_snapshot_file() {
    rm -rf "$TMP/state" "$SNAP_OUT"
    timed snapshot-file "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" \
        --state-dir "$TMP/state" --exit-at-end --sink "file:$SNAP_OUT"
    local reads ends lines bytes
    reads=$(grep -c '"op":"read"' "$SNAP_OUT" || true)
    ends=$(grep -c '"op":"snapshot_end"' "$SNAP_OUT" || true)
    lines=$(wc -l <"$SNAP_OUT")
    bytes=$(wc -c <"$SNAP_OUT")
    rm -f "$SNAP_OUT"
    [[ $reads -eq $SNAP_ROWS ]] || die "binsync wrote $reads read lines; expected $SNAP_ROWS"
    [[ $ends -eq 1 && $lines -eq $((SNAP_ROWS + 1)) ]] ||
        die "binsync wrote $lines lines, $ends snapshot_end; expected $SNAP_ROWS reads and 1 snapshot_end"
    NOTE="$reads read lines and $ends snapshot_end checked, $(mib "$bytes") MiB on $SNAP_DIR"
}
run_snapshot_http() {
    local stats got recv_hwm
    rm -rf "$TMP/state" "$TMP/recv-state"
    start_receiver "$TMP/recv-state" --discard
    timed snapshot-http "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" \
        --state-dir "$TMP/state" --exit-at-end --sink "http://$RECV_ADDR/sync"
    stats=$(curl -sf "http://$RECV_ADDR/stats") || die "GET http://$RECV_ADDR/stats failed"
    got=$(json_field "$stats" ops_received)
    recv_hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$RECV_PID/status" 2>/dev/null || echo 0)
    RECV_CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$RECV_PID/stat" 2>/dev/null || echo '?')
    stop_pid "$RECV_PID"
    rm -rf "$TMP/recv-state"
    [[ $got -eq $((SNAP_ROWS + 1)) ]] ||
        die "the receiver's ops_received is $got; expected $SNAP_ROWS reads + 1 snapshot_end ($stats)"
    NOTE="receiver ops_received = $got ($SNAP_ROWS reads + 1 snapshot_end) in $(json_field "$stats" batches) batches; receiver peak RSS $(mib $((recv_hwm * 1024))) MiB"
}
# The snapshot part: a fresh server, the table, the three tools; RES/snapshot.md.
snapshot_part() {
    SNAP_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
    snapshot_load
    M_ROWS=$SNAP_ROWS M_TSV=$RES/snapshot.tsv
    measure dump 'mariadb-dump --single-transaction --quick' run_dump
    measure snapshot_file 'binsync snapshot → file (/dev/shm)' run_snapshot_file
    measure snapshot_http 'binsync snapshot → sync API (receive --discard)' run_snapshot_http
    M_ROWS='' M_TSV=''
    local end_loadavg
    end_loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
    awk -F'\t' -v rows="$SNAP_ROWS" -v mib="$SNAP_TABLE_MIB" -v repeat="$REPEAT" \
        -v l0="$SNAP_LOADAVG" -v l1="$end_loadavg" '
        function fmt(n,   s) { # 1234567 -> 1,234,567
            s = sprintf("%.0f", n)
            while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
            return s
        }
        { key[NR] = $1; name[NR] = $2; wall[NR] = $3; rss[NR] = $4; cpu[NR] = $5; rcpu[NR] = $6
          note[NR] = $7; if ($1 == "dump") ref = $3 }
        END {
            print ""
            print "## Initial snapshot"
            print ""
            printf "A fresh server, `bench.products` (10 columns) with %s rows inserted (%s MiB), read whole; fastest of %s run(s) each; load average %s at the start, %s at the end.\n", fmt(rows), mib, repeat, l0, l1
            print ""
            print "| tool | wall s | rows/s | its wall ÷ mariadb-dump wall | CPU s | receiver CPU s | peak RSS MiB |"
            print "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
            for (i = 1; i <= NR; i++)
                printf "| %s | %.2f | %s | %.2fx | %.2f | %s | %.1f |\n", name[i], wall[i], fmt(rows / wall[i]),
                    wall[i] / ref, cpu[i], (rcpu[i] == "" ? "—" : rcpu[i]), rss[i] / 1024
            print ""
            print "binsync: a first `binsync run --exit-at-end` with a fresh state dir (the default --snapshot when-needed, no --start): every row as a `read` line (contract v3), then it stops at the binlog end. Targets (issue 12): into the file sink within 2x mariadb-dump'"'"'s time (aim 1.5x), peak RSS under 100 MB."
            print ""
            print "Checks and details of each fastest run:"
            print ""
            for (i = 1; i <= NR; i++) if (note[i] != "") printf "- %s: %s\n", name[i], note[i]
        }' "$RES/snapshot.tsv" >"$RES/snapshot.md"
}

# The report's first lines.
report_header() {
    echo "# binsync benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/^MemTotal:/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); MariaDB $MARIADB_VERSION; binsync $(git describe --always --dirty 2>/dev/null || echo unknown); load average at the start: $LOADAVG."
}
# The snapshot's server: the 1M-row table (~350 MiB) fits its buffer pool, so both tools read
# from memory.
SNAP_SERVER_ARGS=(--innodb-buffer-pool-size=1G)

if [[ $PART == snapshot ]]; then
    start_server mariadb "${SNAP_SERVER_ARGS[@]}"
    snapshot_part
    mkdir -p "$(dirname "$OUT")"
    { report_header && cat "$RES/snapshot.md"; } >"$TMP/report.md"
    cp "$TMP/report.md" "$OUT"
    step "Results (also in $OUT)"
    echo
    cat "$TMP/report.md"
    exit 0
fi
start_server mariadb

# --- the workload -------------------------------------------------------------------------------
step "Loading the workload: $ROWS rows inserted, then each updated once, $TXN_ROWS rows per transaction"
create_products
load_sql() {
    local first size
    for ((first = 1; first <= ROWS; first += TXN_ROWS)); do
        size=$((ROWS - first + 1 < TXN_ROWS ? ROWS - first + 1 : TXN_ROWS))
        insert_sql "$first" "$size"
    done
    for ((first = 1; first <= ROWS; first += TXN_ROWS)); do
        echo "UPDATE bench.products SET price = price + 1, stock = stock + 7,
  attrs = JSON_SET(attrs, '\$.size', id % 50 + 1), active = 1 - active,
  updated_at = updated_at + INTERVAL 1 DAY, status = 1 + (id + 1) % 3
WHERE id BETWEEN $first AND $((first + TXN_ROWS - 1));"
    done
}
t0=$EPOCHREALTIME
load_sql | sql --database=bench
load_secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
got=$(sql -e 'SELECT COUNT(*) FROM bench.products')
[[ $got -eq $ROWS ]] || die "bench.products has $got rows, expected $ROWS"
mapfile -t binlogs < <(sql -e 'SHOW BINARY LOGS' | awk '{ print $1 }')
BINLOG_BYTES=$(sql -e 'SHOW BINARY LOGS' | awk '{ s += $2 } END { print s }')
FIRST_BINLOG=${binlogs[0]}
note "loaded in $load_secs s: $CHANGES row changes, binlog $(mib "$BINLOG_BYTES") MiB in ${#binlogs[@]} file(s) (${binlogs[*]})"

# --- throughput ---------------------------------------------------------------------------------
# One run of each tool; each sets WALL, RSS, CPU and NOTE, and the sync API runs RECV_CPU.
run_raw() {
    rm -rf "$TMP/raw" && mkdir "$TMP/raw"
    timed raw mariadb-binlog --no-defaults --read-from-remote-server --raw --to-last-log \
        --host=127.0.0.1 --port="$PORT" --user=root --result-file="$TMP/raw/" "$FIRST_BINLOG"
    local bytes
    bytes=$(cat "$TMP"/raw/* | wc -c)
    [[ $bytes -eq $BINLOG_BYTES ]] || die "the raw transfer wrote $bytes bytes; the binlog has $BINLOG_BYTES"
    NOTE="$(mib "$bytes") MiB in $(find "$TMP/raw" -type f | wc -l) file(s), byte count checked"
    rm -rf "$TMP/raw"
}
run_decode() {
    timed decode bash -c 'exec mariadb-binlog "$@" >/dev/null' mariadb-binlog --no-defaults \
        --read-from-remote-server -v --base64-output=DECODE-ROWS --to-last-log \
        --host=127.0.0.1 --port="$PORT" --user=root "$FIRST_BINLOG"
    NOTE="text to /dev/null"
}
run_pyrepl() {
    timed pyrepl bash -c 'exec "$@" >"'"$TMP/pyrepl.json"'"' pyrepl \
        "$PY" "$HELPER" pyrepl --port "$PORT" --server-id 4343 --log-file "$FIRST_BINLOG" \
        --expect "$CHANGES"
    local out
    out=$(cat "$TMP/pyrepl.json")
    NOTE="mysql-replication $(json_field "$out" version): counted $(json_field "$out" rows) row changes in $(json_field "$out" events) row events"
}
run_binsync_file() {
    rm -rf "$TMP/state" "$TMP/out.jsonl"
    timed binsync-file "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" \
        --state-dir "$TMP/state" --start earliest --exit-at-end --sink "file:$TMP/out.jsonl"
    local lines rows bytes
    lines=$(wc -l <"$TMP/out.jsonl")
    rows=$(grep -c -E '"op":"(insert|update|delete)"' "$TMP/out.jsonl" || true)
    bytes=$(wc -c <"$TMP/out.jsonl")
    [[ $rows -eq $CHANGES ]] || die "binsync wrote $rows row changes; expected $CHANGES"
    # The rest: the CREATE TABLE's ddl operation (--start earliest reads it too).
    OTHER_OPS=$((lines - rows))
    NOTE="$rows row change lines checked (+ $OTHER_OPS ddl), $(mib "$bytes") MiB"
    # The reference JetStream publisher sends these very lines.
    mv "$TMP/out.jsonl" "$TMP/floor.jsonl"
}
run_binsync_http() { # discard|store
    local mode=$1 stats got key
    rm -rf "$TMP/state" "$TMP/recv-state"
    if [[ $mode == discard ]]; then
        start_receiver "$TMP/recv-state" --discard
        key=ops_received
    else
        start_receiver "$TMP/recv-state"
        key=ops_applied
    fi
    timed "binsync-http-$mode" "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" \
        --state-dir "$TMP/state" --start earliest --exit-at-end --sink "http://$RECV_ADDR/sync"
    stats=$(curl -sf "http://$RECV_ADDR/stats") || die "GET http://$RECV_ADDR/stats failed"
    got=$(json_field "$stats" "$key")
    local recv_hwm
    recv_hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$RECV_PID/status" 2>/dev/null || echo 0)
    # The receiver's user + system time over its whole life (fields 14, 15; the command name in
    # field 2 has no spaces here): it shares the cores with binsync.
    RECV_CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$RECV_PID/stat" 2>/dev/null || echo '?')
    stop_pid "$RECV_PID"
    [[ $got -eq $((CHANGES + OTHER_OPS)) ]] ||
        die "the receiver's $key is $got; expected $CHANGES row changes + $OTHER_OPS ddl ($stats)"
    NOTE="receiver $key = $got in $(json_field "$stats" batches) batches; receiver peak RSS $(mib $((recv_hwm * 1024))) MiB"
    rm -rf "$TMP/recv-state"
}

# A throwaway nats-server with JetStream on free ports, its store in TMP/nats (never the system
# server on 4222); sets NATS_PID, NATS_PORT and NATS_MON (its monitoring port).
start_nats() {
    local i
    for _ in $(seq 200); do
        NATS_PORT=$((20000 + RANDOM % 10000)) NATS_MON=$((30000 + RANDOM % 2000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$NATS_MON") 2>/dev/null; then break; fi
    done
    rm -rf "$TMP/nats" && mkdir -p "$TMP/nats"
    "$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -js -sd "$TMP/nats/js" \
        -l "$TMP/nats/server.log" >"$TMP/nats/console.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    for i in $(seq 100); do
        curl -sf "http://127.0.0.1:$NATS_MON/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$NATS_PID" 2>/dev/null || die "nats-server exited: $(tail -5 "$TMP/nats/console.log" "$TMP/nats/server.log")"
        sleep 0.1
    done
    die "nats-server is not ready on port $NATS_PORT after 10 s"
}
nats_messages() { # messages stored on the server (it holds one stream)
    curl -sf "http://127.0.0.1:$NATS_MON/jsz" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["messages"])'
}
run_binsync_nats() {
    local got hwm ref pct floor floor_pct t0 consumed applied
    rm -rf "$TMP/state" "$TMP/recv-state"
    start_nats
    timed binsync-nats "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" \
        --state-dir "$TMP/state" --start earliest --exit-at-end \
        --sink "nats://127.0.0.1:$NATS_PORT" --nats-stream bench
    got=$(nats_messages) || die "GET http://127.0.0.1:$NATS_MON/jsz failed"
    # nats-server is the receiver side here: its CPU and peak RSS over the run.
    RECV_CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$NATS_PID/stat" 2>/dev/null || echo '?')
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$NATS_PID/status" 2>/dev/null || echo 0)
    [[ $got -eq $((CHANGES + OTHER_OPS)) ]] ||
        die "the stream holds $got messages; expected $CHANGES row changes + $OTHER_OPS ddl, each once"
    # The reference consumer applies the stream into its SQLite store (not in the timed figures
    # above; --exit-when-idle adds its 1 s of idleness at the end).
    t0=$EPOCHREALTIME
    "$BIN" receive --from "nats://127.0.0.1:$NATS_PORT" --nats-stream bench \
        --state-dir "$TMP/recv-state" --exit-when-idle 1s >/dev/null 2>"$TMP/nats-consumer.err" ||
        die "binsync receive --from nats:// failed: $(tail -5 "$TMP/nats-consumer.err")"
    consumed=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a - 1 }')
    applied=$("$BIN" receive dump --state-dir "$TMP/recv-state" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["stats"]["ops_received"])')
    [[ $applied -eq $got ]] || die "binsync receive --from nats:// received $applied of $got messages"
    stop_pid "$NATS_PID"
    ref=$(awk -F'\t' '$1 == "binsync_http" { print $3 }' "$RES/tools.tsv")
    pct=$(awk -v r="$ref" -v w="$WALL" 'BEGIN { printf "%.0f", (w > 0 ? 100 * r / w : 0) }')
    floor=$(awk -F'\t' '$1 == "nats_floor" { print $3 }' "$RES/tools.tsv")
    floor_pct=$(awk -v r="$floor" -v w="$WALL" 'BEGIN { printf "%.0f", (w > 0 ? 100 * r / w : 0) }')
    NOTE="stream holds $got messages ($CHANGES row changes + $OTHER_OPS ddl, each once); throughput $pct% of binsync → sync API (receive --discard) (target ≥ 60%), $floor_pct% of the plain publisher's; receiver CPU = nats-server's (R1, file storage), its peak RSS $(mib $((hwm * 1024))) MiB; then \`binsync receive --from nats://\` applied the $applied messages into SQLite in $consumed s"
    rm -rf "$TMP/nats" "$TMP/recv-state"
}

# The floor of the JetStream row: the same messages published by a plain async-nats publisher.
run_nats_floor() {
    local got hwm
    start_nats
    timed nats-floor "$FLOOR_BIN" "nats://127.0.0.1:$NATS_PORT" floor "$TMP/floor.jsonl"
    got=$(nats_messages) || die "GET http://127.0.0.1:$NATS_MON/jsz failed"
    RECV_CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$NATS_PID/stat" 2>/dev/null || echo '?')
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$NATS_PID/status" 2>/dev/null || echo 0)
    stop_pid "$NATS_PID"
    [[ $got -eq $((CHANGES + OTHER_OPS)) ]] ||
        die "the reference publisher stored $got messages; expected $((CHANGES + OTHER_OPS))"
    NOTE="stream holds $got messages: binsync's payloads (the file sink's lines) with its five headers, window 512, nothing decoded or checkpointed; receiver CPU = nats-server's (R1, file storage), its peak RSS $(mib $((hwm * 1024))) MiB"
    rm -rf "$TMP/nats"
}

measure raw 'mariadb-binlog --raw (transfer only)' run_raw
measure decode 'mariadb-binlog -v --base64-output=DECODE-ROWS' run_decode
measure pyrepl 'python-mysql-replication (count rows)' run_pyrepl
measure binsync_file 'binsync → file' run_binsync_file
measure binsync_http 'binsync → sync API (receive --discard)' run_binsync_http discard
measure binsync_http_store 'binsync → sync API (storing receiver)' run_binsync_http store
measure nats_floor 'plain async-nats publisher → NATS JetStream (R1, file storage), same messages' run_nats_floor
rm -f "$TMP/floor.jsonl"
measure binsync_nats 'binsync → NATS JetStream (R1, file storage)' run_binsync_nats

# --- latency ------------------------------------------------------------------------------------
# A writer commits bench.live rows at a steady rate (200 transactions/s: rate/200 rows each);
# each row's delay is its arrival time minus its updated_at (NOW(6) at commit, UTC). Twice per
# rate, binsync with its default settings each time:
#   stdout  binsync's JSON lines (flushed per write) into the helper's reader on a pipe;
#   http    the sync API into scripts/bench/sync_receiver.py, a plain Python receiver (stdlib
#           ThreadingHTTPServer, not binsync's own) that answers 200 and notes each operation's
#           arrival.
# Also the CPU time of binsync over the run and of the reader or receiver over its life.
LIVE_COLUMNS='id, sku, name, price, stock, weight, attrs, active, updated_at, status'
cpu_of() { # pid: user + system s so far (fields 14, 15; the command names have no spaces)
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null ||
        echo '?'
}
latency_run() { # stdout|http rows/s
    local sink=$1 rate=$2 txn_rows txns expect ready=$TMP/live.ready i rc
    local base=$RES/latency-$sink-$rate fifo=$TMP/live.fifo rd_pid bs_pid addr
    txn_rows=$((rate / 200 > 0 ? rate / 200 : 1))
    txns=$(((rate * LAT_SECS + txn_rows / 2) / txn_rows))
    ((txns > 0)) || txns=1
    expect=$((txns * txn_rows))
    step "Latency at $rate row changes/s through --sink $sink: $txns transactions of $txn_rows rows over ${LAT_SECS} s"
    sql -e 'DROP TABLE IF EXISTS bench.live; CREATE TABLE bench.live LIKE bench.products'
    rm -rf "$TMP/state" "$fifo" "$ready" "$base.reader.json"
    if [[ $sink == stdout ]]; then
        mkfifo "$fifo"
        note "binsync run --start latest --include bench.live --sink stdout | bench.py latency"
        "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" --state-dir "$TMP/state" \
            --start latest --include bench.live --sink stdout >"$fifo" 2>"$TMP/latency-binsync.err" &
        bs_pid=$!
        "$PY" "$HELPER" latency --expect "$expect" --ready "$ready" \
            --out "$base.reader.json" <"$fifo" >/dev/null 2>"$TMP/latency-reader.err" &
        rd_pid=$!
        PIDS+=("$rd_pid")
    else
        "$PY" "$ROOT/scripts/bench/sync_receiver.py" --expect "$expect" --ready "$ready" \
            --out "$base.reader.json" >"$TMP/live-recv.out" 2>"$TMP/latency-reader.err" &
        rd_pid=$!
        PIDS+=("$rd_pid")
        addr=
        for ((i = 0; i < 100; i++)); do
            addr=$(sed -n '1s/^listening on //p' "$TMP/live-recv.out")
            [[ -n $addr ]] && break
            kill -0 "$rd_pid" 2>/dev/null || die "sync_receiver.py exited: $(tail -5 "$TMP/latency-reader.err")"
            sleep 0.1
        done
        [[ -n $addr ]] || die "sync_receiver.py did not print 'listening on ADDR' within 10 s"
        note "binsync run --start latest --include bench.live --sink http://$addr/sync (default settings) -> sync_receiver.py"
        "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" --state-dir "$TMP/state" \
            --start latest --include bench.live --sink "http://$addr/sync" 2>"$TMP/latency-binsync.err" &
        bs_pid=$!
    fi
    PIDS+=("$bs_pid")
    # A sentinel row (id 0), re-sent every second until binsync has delivered it: from then on
    # binsync is streaming, and the writer starts.
    for ((i = 0; ; i++)); do
        [[ -s $ready ]] && break
        kill -0 "$bs_pid" 2>/dev/null ||
            die "binsync exited: $(tail -5 "$TMP/latency-binsync.err")"
        kill -0 "$rd_pid" 2>/dev/null || die "the latency reader exited: $(tail -5 "$TMP/latency-reader.err")"
        ((i < 300)) || die "binsync did not deliver the sentinel row within 30 s"
        if ((i % 10 == 0)); then
            sql -e "INSERT INTO bench.live ($LIVE_COLUMNS) VALUES
                (0, 'sentinel', 'sentinel', 0, 0, 0, NULL, 0, NOW(6), 1)
                ON DUPLICATE KEY UPDATE updated_at = NOW(6)"
        fi
        sleep 0.1
    done
    [[ $(cat "$ready") == ready ]] || die "the latency reader failed: $(tail -5 "$TMP/latency-reader.err")"
    note "binsync is streaming; writer (PyMySQL) starts"
    local cpu0_bs load0
    cpu0_bs=$(cpu_of "$bs_pid") load0=$(cut -d' ' -f1 /proc/loadavg)
    "$PY" "$HELPER" writer --port "$PORT" --rate "$rate" --txns "$txns" --txn-rows "$txn_rows" \
        >"$base.writer.json" || die "the latency writer failed"
    local w achieved
    w=$(cat "$base.writer.json")
    achieved=$(json_field "$w" achieved_rate)
    note "writer: $(json_field "$w" rows) rows in $(json_field "$w" secs) s, achieved $achieved rows/s (at most $(json_field "$w" max_behind_schedule_ms) ms behind schedule)"
    if awk -v a="$achieved" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }'; then
        note "WARNING: the writer fell short of $rate rows/s; the table shows the rate it achieved"
    fi
    # The last rows get 30 s to arrive (the reader ends, the receiver writes its figures); then
    # binsync is stopped, which ends the reader's input; the receiver is stopped after it.
    for ((i = 0; i < 300; i++)); do
        if [[ $sink == stdout ]]; then
            kill -0 "$rd_pid" 2>/dev/null || break
        else
            [[ -s $base.reader.json ]] && break
        fi
        sleep 0.1
    done
    # binsync's CPU over the writer's run and the wait (the reader's or receiver's is its own
    # life's, in its figures: the reader ends at the count).
    local cpu_bs
    cpu_bs=$(awk -v a="$cpu0_bs" -v b="$(cpu_of "$bs_pid")" 'BEGIN { printf "%.2f", b - a }')
    stop_pid "$bs_pid"
    if [[ $sink == http ]]; then
        kill -TERM "$rd_pid" 2>/dev/null || true
    fi
    rc=0
    wait "$rd_pid" || rc=$?
    forget_pid "$rd_pid"
    local load1 r what=reader
    load1=$(cut -d' ' -f1 /proc/loadavg)
    printf '{"binsync_cpu": "%s", "load": "%s to %s"}\n' "$cpu_bs" "$load0" "$load1" \
        >"$base.run.json"
    r=$(cat "$base.reader.json" 2>/dev/null || echo '{}')
    ((rc == 0)) || die "binsync delivered $(json_field "$r" rows) of $expect rows at $rate rows/s through --sink $sink: $(tail -5 "$TMP/latency-reader.err")"
    [[ $sink == http ]] && what="receiver ($(json_field "$r" requests) requests)"
    note "delay over $(json_field "$r" rows) rows: p50 $(json_field "$r" p50_ms) ms, p99 $(json_field "$r" p99_ms) ms, max $(json_field "$r" max_ms) ms"
    note "CPU s: binsync $cpu_bs over the run, $what $(json_field "$r" cpu_s) over its life; load average $load0 to $load1"
}
for rate in $LAT_RATES; do
    latency_run stdout "$rate"
    latency_run http "$rate"
done

# --- memory against transaction size -----------------------------------------------------------
# binsync never holds a whole transaction: its peak RSS on one huge transaction must stay at the
# level of the standard workload's 1,000-row transactions.
BIG_ROWS=${BENCH_BIG_TXN_ROWS:-500000}
step "One transaction of $BIG_ROWS rows into the file sink: binsync's peak RSS"
# The table exists before the start position: the run reads the insert only (a CREATE ... LIKE
# in its range would name bench.products, which --include leaves out of the schema history).
sql -e 'CREATE TABLE bench.big LIKE bench.products'
read -r big_file big_pos _ < <(sql -e 'SHOW MASTER STATUS')
sql -e "INSERT INTO bench.big SELECT seq, CONCAT('SKU-', seq), CONCAT('Product ', seq), 1.50, seq % 1000,
  seq * 0.25, JSON_OBJECT('color', 'red', 'size', seq % 50), 1,
  TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq SECOND, 1 + seq % 3 FROM bench.seq_1_to_$BIG_ROWS;"
rm -rf "$TMP/state" "$TMP/out.jsonl"
timed binsync-big "$BIN" run --source "$SOURCE" --server-id "$SERVER_ID" --state-dir "$TMP/state" \
    --start "file:$big_file:$big_pos" --include bench.big --exit-at-end --sink "file:$TMP/out.jsonl"
big_lines=$(wc -l <"$TMP/out.jsonl")
[[ $big_lines -eq $BIG_ROWS ]] || die "binsync wrote $big_lines lines for the big transaction; expected $BIG_ROWS"
rm -f "$TMP/out.jsonl"
small_rss=$(awk -F'\t' '$1 == "binsync_file" { print $4 }' "$RES/tools.tsv")
note "one $BIG_ROWS-row transaction: peak RSS $(mib $((RSS * 1024))) MiB in $WALL s; 1,000-row transactions: $(mib $((${small_rss%.*} * 1024))) MiB"
{
    echo
    echo "## Memory against transaction size"
    echo
    echo "| binsync → file | rows | peak RSS MiB |"
    echo "| --- | ---: | ---: |"
    echo "| standard workload, 1,000-row transactions | $CHANGES | $(mib $((${small_rss%.*} * 1024))) |"
    echo "| one $BIG_ROWS-row transaction | $BIG_ROWS | $(mib $((RSS * 1024))) |"
} >"$RES/memory.md"

# --- the initial snapshot, on a fresh server -----------------------------------------------------
stop_server
start_server mariadb-snapshot "${SNAP_SERVER_ARGS[@]}"
snapshot_part

# --- report -------------------------------------------------------------------------------------
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "mem=$(awk '/^MemTotal:/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "mariadb=$MARIADB_VERSION"
    echo "binsync_rev=$(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "loadavg=$LOADAVG"
    echo "rows=$ROWS"
    echo "txn_rows=$TXN_ROWS"
    echo "changes=$CHANGES"
    echo "binlog_mib=$(mib "$BINLOG_BYTES")"
    echo "binlog_files=${#binlogs[@]}"
    echo "repeat=$REPEAT"
    echo "latency_secs=$LAT_SECS"
} >"$RES/meta.txt"
mkdir -p "$(dirname "$OUT")"
python3 "$HELPER" report "$RES" >"$TMP/report.md"
cat "$RES/memory.md" "$RES/snapshot.md" >>"$TMP/report.md"
cp "$TMP/report.md" "$OUT"
step "Results (also in $OUT)"
echo
cat "$TMP/report.md"
