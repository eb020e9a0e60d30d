#!/usr/bin/env bash
# load.sh METADATA OUTDIR: a throwaway MariaDB with scripts/bench.sh's server arguments but
# binlog_row_metadata=METADATA (FULL or MINIMAL) loads bench.sh's standard workload (its SQL,
# copied verbatim), FLUSH BINARY LOGS, copies the closed binlog file(s) to OUTDIR and leaves the
# server running: its port, pid and datadir are in OUTDIR/server.env (kill -TERM the pid).
set -euo pipefail
META=$1 OUT=$2
ROWS=${BENCH_ROWS:-200000} TXN_ROWS=1000
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench11-srv-$META.XXXX")
for _ in $(seq 200); do
    PORT=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
done
DATADIR=$TMP/mariadb
user_arg=(); [[ $(id -u) -eq 0 ]] && user_arg=(--user=root)
innodb_args=(--innodb-buffer-pool-size=128M --innodb-log-file-size=128M --innodb-flush-log-at-trx-commit=2)
mariadb-install-db --no-defaults --datadir="$DATADIR" "${user_arg[@]}" \
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
    "${innodb_args[@]}" >"$TMP/install-db.log" 2>&1
/usr/sbin/mariadbd --no-defaults "${user_arg[@]}" --datadir="$DATADIR" --port="$PORT" \
    --bind-address=127.0.0.1 --socket="$DATADIR/mysqld.sock" --pid-file="$DATADIR/mysqld.pid" \
    --log-error="$DATADIR/error.log" --skip-name-resolve \
    --server-id=1 --log-bin="$DATADIR/mariadb-bin" --binlog-format=ROW \
    --binlog-row-metadata="$META" --binlog-row-image=FULL --sync-binlog=0 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    "${innodb_args[@]}" --performance-schema=OFF >"$TMP/mariadbd.out" 2>&1 &
SERVER_PID=$!
echo "PORT=$PORT SERVER_PID=$SERVER_PID DATADIR=$DATADIR" >"$OUT/server.env"
sql() { mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$PORT" -u root \
        --default-character-set=utf8mb4 --batch --skip-column-names "$@"; }
for i in $(seq 600); do sql -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
sql -e "SELECT VERSION(), @@binlog_format, @@binlog_row_image, @@binlog_row_metadata"
# --- verbatim from scripts/bench.sh (the workload) ---
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
load_sql() {
    local first size
    for ((first = 1; first <= ROWS; first += TXN_ROWS)); do
        size=$((ROWS - first + 1 < TXN_ROWS ? ROWS - first + 1 : TXN_ROWS))
        echo "INSERT INTO bench.products SELECT id, CONCAT('SKU-', LPAD(id, 10, '0')),
  CONCAT('Product ', id, ' ', ELT(1 + id % 4, 'kettle', 'grinder', 'lamp', 'chair'), ' ',
    REPEAT('abcdefghij', 7)),
  1 + (id % 100000) / 100, id % 1000, id * 0.25,
  JSON_OBJECT('color', ELT(1 + id % 4, 'red', 'green', 'blue', 'black'), 'size', id % 50),
  id % 2, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL id SECOND + INTERVAL id % 999983 MICROSECOND,
  1 + id % 3
FROM (SELECT $((first - 1)) + seq AS id FROM seq_1_to_$size) s;"
    done
    for ((first = 1; first <= ROWS; first += TXN_ROWS)); do
        echo "UPDATE bench.products SET price = price + 1, stock = stock + 7,
  attrs = JSON_SET(attrs, '\$.size', id % 50 + 1), active = 1 - active,
  updated_at = updated_at + INTERVAL 1 DAY, status = 1 + (id + 1) % 3
WHERE id BETWEEN $first AND $((first + TXN_ROWS - 1));"
    done
}
# --- end of the workload ---
load_sql | sql --database=bench
sql -e 'SELECT COUNT(*) FROM bench.products'
sql -e 'FLUSH BINARY LOGS'   # closes the file that holds the workload
sql -e 'SHOW BINARY LOGS' | tee "$OUT/binlogs.txt"
mapfile -t files < <(sql -e 'SHOW BINARY LOGS' | awk '{ print $1 }' | head -n -1)
for f in "${files[@]}"; do cp "$DATADIR/$f" "$OUT/"; done
ls -l "$OUT"
