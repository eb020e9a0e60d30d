#!/usr/bin/env python3
"""The Python side of scripts/bench.sh.

    bench.py pyrepl   --port P --expect N          python-mysql-replication baseline (venv)
    bench.py writer   --port P --rate R --txns N   steady writer for the latency runs (venv)
    bench.py latency  --expect N --ready F --out F binsync's stdout on stdin -> delays (venv)
    bench.py report   RESULTS_DIR                  markdown tables (stdlib only)

Every command prints one JSON object (or, for report, markdown) on stdout; progress and
errors go to stderr. Exit status non-zero when a count does not match.
"""

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone


def log(msg):
    print(f"    {msg}", file=sys.stderr, flush=True)


# --- python-mysql-replication baseline -------------------------------------------------------------


def cmd_pyrepl(args):
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    import pymysqlreplication

    settings = {"host": "127.0.0.1", "port": args.port, "user": "root", "passwd": ""}
    # From the first binlog file's start (log_file + log_pos=4 + resume_stream) to the binlog's
    # end at connection time (blocking=False: BINLOG_DUMP_NON_BLOCK), rotating through the files.
    # Not is_mariadb=True: the library documents it for GTID positioning (auto_position), and its
    # MariaDB COM_BINLOG_DUMP packet (1.0.17) declares one byte less than it sends; the server
    # then closes the connection at the binlog's end with a byte unread, the kernel resets it,
    # the unread tail of the stream is lost, and the library reconnects and starts over, forever.
    # MariaDB's GTID events parse either way (@mariadb_slave_capability=4 is always set).
    # Logging off: the library's fastest setting.
    stream = BinLogStreamReader(
        connection_settings=settings,
        server_id=args.server_id,
        log_file=args.log_file,
        log_pos=4,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False,
    )
    rows = events = 0
    start = time.monotonic()
    try:
        for event in stream:
            events += 1
            # .rows decodes every column of every row image (lazily, on first access).
            rows += len(event.rows)
            if rows > args.expect:  # a stream that starts over: fail rather than loop
                break
    finally:
        stream.close()
    secs = time.monotonic() - start
    out = {
        "version": getattr(pymysqlreplication, "__version__", None) or pkg_version("mysql-replication"),
        "events": events,
        "rows": rows,
        "secs": round(secs, 3),
    }
    print(json.dumps(out))
    if rows != args.expect:
        log(f"python-mysql-replication saw {rows} row changes, expected {args.expect}")
        return 1
    return 0


def pkg_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - informational only
        return None


# --- latency: the writer -----------------------------------------------------------------------------

LIVE_COLUMNS = "id, sku, name, price, stock, weight, attrs, active, updated_at, status"


def live_row(i):
    # Same shape as bench.products; updated_at is NOW(6): the statement's start, in the session
    # time zone (UTC here), at most the statement's run time (~1 ms) before its commit.
    return (
        f"({i},'SKU-{i:010d}','Live product {i} {'x' * 60}',{(i % 100000) / 100 + 1:.2f},"
        f"{i % 1000},{i * 0.25},'{{\"color\": \"blue\", \"size\": {i % 50}}}',{i % 2},"
        f"NOW(6),'{('draft', 'active', 'archived')[i % 3]}')"
    )


def cmd_writer(args):
    import pymysql

    conn = pymysql.connect(
        host="127.0.0.1", port=args.port, user="root", password="", autocommit=True
    )
    cur = conn.cursor()
    cur.execute("SET time_zone = '+00:00'")
    rows_per_txn = args.txn_rows
    txns = args.txns
    interval = rows_per_txn / args.rate
    next_id = args.first_id
    behind_max = 0.0
    start = time.monotonic()
    for k in range(txns):
        due = start + k * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            behind_max = max(behind_max, now - due)
        values = ",".join(live_row(i) for i in range(next_id, next_id + rows_per_txn))
        # One autocommit multi-row INSERT: one transaction of rows_per_txn row changes.
        cur.execute(f"INSERT INTO bench.live ({LIVE_COLUMNS}) VALUES {values}")
        next_id += rows_per_txn
    secs = time.monotonic() - start
    conn.close()
    rows = txns * rows_per_txn
    # On schedule, the last transaction's slot ends at txns * interval; a writer that fell
    # behind took longer, and its rate shows it.
    span = max(secs, txns * interval)
    print(
        json.dumps(
            {
                "rows": rows,
                "txns": txns,
                "txn_rows": rows_per_txn,
                "secs": round(secs, 3),
                "achieved_rate": round(rows / span, 1),
                "max_behind_schedule_ms": round(behind_max * 1000, 1),
            }
        )
    )
    return 0


# --- latency: the reader ------------------------------------------------------------------------------


def parse_utc(text, cache):
    t = cache.get(text)
    if t is None:
        # binsync writes DATETIME(6) as ISO 8601 without a zone ("2026-11-24T09:13:12.727404");
        # the writer's session time zone is UTC.
        t = datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()
        if len(cache) > 100000:
            cache.clear()
        cache[text] = t
    return t


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def cmd_latency(args):
    """Reads binsync's JSON lines from stdin as they arrive; each bench.live row's delay is the
    arrival time (the chunk's os.read return) minus its updated_at (the writer's commit time)."""
    fd = sys.stdin.fileno()
    cache = {}
    delays = []
    seen = 0
    ready = False
    partial = b""
    # Ends at the expected count, or when binsync's output ends (the script kills binsync when
    # the rows are late).
    while len(delays) < args.expect:
        chunk = os.read(fd, 1 << 20)
        now = time.time()
        if not chunk:
            log(f"latency reader: binsync's output ended after {len(delays)} of {args.expect} rows")
            break
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        for line in lines:
            if not line:
                continue
            op = json.loads(line)
            seen += 1
            if op.get("table") != "live":
                continue
            after = op.get("after") or {}
            if int(after["id"]) == 0:  # the sentinel: binsync is streaming
                if not ready:
                    ready = True
                    with open(args.ready, "w") as f:
                        f.write("ready\n")
                continue
            delays.append(now - parse_utc(after["updated_at"], cache))
    delays.sort()
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    out = {
        "rows": len(delays),
        "lines": seen,
        "p50_ms": ms(percentile(delays, 50)),
        "p99_ms": ms(percentile(delays, 99)),
        "max_ms": ms(delays[-1] if delays else None),
        "min_ms": ms(delays[0] if delays else None),
        "cpu_s": round(sum(os.times()[:2]), 2),  # user + system, this process's life
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps(out))
    if not ready:
        # Unblock the script's wait even on failure.
        with open(args.ready, "w") as f:
            f.write("failed\n")
    return 0 if len(delays) == args.expect else 1


# --- report ---------------------------------------------------------------------------------------------


def fmt_num(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def seconds(text):
    """A time bench.sh measured, or None when it has none ("" or "?")."""
    try:
        return float(text)
    except ValueError:
        return None


def read_results(d):
    """The files bench.sh leaves in its results directory."""
    meta = {}
    with open(os.path.join(d, "meta.txt")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    tools = []
    path = os.path.join(d, "tools.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, name, wall, rss, cpu, recv_cpu, note = (line.rstrip("\n").split("\t") + [""] * 7)[:7]
                tools.append(
                    {
                        "key": key,
                        "name": name,
                        "wall": float(wall),
                        "rss_kib": float(rss),
                        "cpu": seconds(cpu),
                        # "" for a tool without a receiver.
                        "recv_cpu": recv_cpu,
                        "note": note,
                    }
                )
    lat = []
    for name in sorted(os.listdir(d)):
        # latency-SINK-RATE.{writer,reader,run}.json, SINK stdout or http.
        if name.startswith("latency-") and name.endswith(".writer.json"):
            base = name[: -len(".writer.json")]
            _, sink, rate = base.split("-", 2)
            parts = {}
            for part in ("writer", "reader", "run"):
                path = os.path.join(d, f"{base}.{part}.json")
                if os.path.exists(path):
                    with open(path) as f:
                        parts[part] = json.load(f)
            w, r, run = parts.get("writer", {}), parts.get("reader", {}), parts.get("run", {})
            lat.append(
                {
                    "sink": sink,
                    "rate": float(rate),
                    **w,
                    "got": r.get("rows"),
                    "requests": r.get("requests"),
                    **{k: r.get(k) for k in ("p50_ms", "p99_ms", "max_ms")},
                    "binsync_cpu": seconds(run.get("binsync_cpu", "")),
                    "reader_cpu": r.get("cpu_s"),
                    "load": run.get("load"),
                }
            )
    lat.sort(key=lambda l: (l["rate"], l["sink"] != "stdout"))
    return meta, tools, lat


def cmd_report(args):
    meta, tools, lat = read_results(args.dir)
    changes = int(meta["changes"])
    by_key = {t["key"]: t for t in tools}
    ref, raw, filesink = by_key.get("binsync_http"), by_key.get("raw"), by_key.get("binsync_file")
    out = [f"# binsync benchmark, {meta['date']}", ""]
    out.append(
        f"Machine: {meta['nproc']} cores, {meta['cpu']}, {meta['mem']}; MariaDB {meta['mariadb']}; "
        f"binsync {meta['binsync_rev']}; load average at the start: {meta['loadavg']}."
    )
    out.append("")
    out.append(
        f"Workload: `bench.products` (10 columns), {int(meta['rows']):,} rows inserted, then each "
        f"updated once, {int(meta['txn_rows']):,} rows per transaction: **{changes:,} row changes**, "
        f"{float(meta['binlog_mib']):.1f} MiB of binlog in {meta['binlog_files']} file(s) "
        f"(binlog_row_image=FULL, binlog_row_metadata=FULL). Each tool reads the whole binlog from "
        f"its start to its end from the server on 127.0.0.1; fastest of {meta['repeat']} run(s) each."
    )
    if tools:
        out += ["", "## Throughput", ""]
        out.append(
            "| tool | wall s | rows/s | CPU s | receiver CPU s | peak RSS MiB | its wall ÷ binsync→HTTP wall |"
        )
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t in tools:
            ratio = t["wall"] / ref["wall"] if ref and ref["wall"] > 0 else None
            rate = changes / t["wall"] if t["wall"] > 0 else None
            recv_cpu = fmt_num(seconds(t["recv_cpu"]), 2) if t["recv_cpu"] else "—"
            out.append(
                f"| {t['name']} | {t['wall']:.2f} | {fmt_num(rate)} | {fmt_num(t['cpu'], 2)} | {recv_cpu} | "
                f"{t['rss_kib'] / 1024:.1f} | {fmt_num(ratio, 2)}x |"
            )
        out.append("")
        out.append(
            "CPU s: user + system time of the timed process and its children. Receiver CPU s: user + "
            "system time of the `binsync receive` process serving that run (for the JetStream row: of "
            "nats-server, which stores the stream), beside binsync's own: "
            "both share the machine's cores (with the server). "
            "Last column: above 1.0x, binsync into the sync API (`binsync receive --discard`) "
            "finishes that many times sooner than the tool; below 1.0x, later."
        )
        if raw and filesink:
            out.append(
                f"Decode alone: binsync → file takes **{filesink['wall'] / raw['wall']:.2f}x** the time "
                "of the raw transfer (`mariadb-binlog --raw`: the same bytes over the same protocol, "
                "written out undecoded)."
            )
        out.append("")
        out.append("Checks and details of each fastest run:")
        out.append("")
        for t in tools:
            if t["note"]:
                out.append(f"- {t['name']}: {t['note']}")
    if lat:
        out += ["", "## Latency: commit → binsync (default settings) → reader or receiver", ""]
        out.append(
            "| sink → where | target rows/s | achieved rows/s | rows | rows per txn | p50 ms | p99 ms | max ms "
            "| binsync CPU s | reader/receiver CPU s | requests | load average |"
        )
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        where = {
            "stdout": "`--sink stdout` → pipe → bench.py",
            "http": "`--sink http` → sync_receiver.py",
        }
        for l in lat:
            out.append(
                f"| {where.get(l['sink'], l['sink'])} | {fmt_num(l['rate'])} | {fmt_num(l['achieved_rate'])} | "
                f"{fmt_num(l['got'])} | {l['txn_rows']} | {fmt_num(l['p50_ms'], 1)} | {fmt_num(l['p99_ms'], 1)} | "
                f"{fmt_num(l['max_ms'], 1)} | {fmt_num(l['binsync_cpu'], 2)} | {fmt_num(l['reader_cpu'], 2)} | "
                f"{fmt_num(l['requests'])} | {l['load'] or 'n/a'} |"
            )
        out.append("")
        out.append(
            "Each row change's delay: its arrival time minus the row's `updated_at`, which the writer "
            "sets to NOW(6) in UTC in a one-statement autocommit transaction (the statement's start, so "
            "a delay includes the commit itself). Arrival: for `--sink stdout`, when binsync's JSON line "
            "reaches the reader's stdin pipe; for `--sink http`, when the request's body has been read by "
            "`scripts/bench/sync_receiver.py`, a plain Python receiver (stdlib `ThreadingHTTPServer`, "
            "HTTP/1.1 keep-alive, an empty `200` for every batch), not binsync's own. One machine, one "
            f"clock. Writer: PyMySQL, {meta['latency_secs']} s per rate and sink, transactions paced on a "
            "fixed schedule. CPU s: user + system time of binsync over the writer's run, and of the "
            "reader or receiver process over its whole life; load average (1 min) at the writer's start "
            "and end."
        )
    print("\n".join(out))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("pyrepl")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--server-id", type=int, default=4343)
    s.add_argument("--log-file", required=True, help="the first binlog file")
    s.add_argument("--expect", type=int, required=True)

    s = sub.add_parser("writer")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--rate", type=float, required=True)
    s.add_argument("--txns", type=int, required=True)
    s.add_argument("--txn-rows", type=int, required=True)
    s.add_argument("--first-id", type=int, default=1)

    s = sub.add_parser("latency")
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--ready", required=True, help="file written once binsync delivers the sentinel")
    s.add_argument("--out", required=True)

    s = sub.add_parser("report")
    s.add_argument("dir", help="bench.sh's results directory")

    args = p.parse_args()
    return {
        "pyrepl": cmd_pyrepl,
        "writer": cmd_writer,
        "latency": cmd_latency,
        "report": cmd_report,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
