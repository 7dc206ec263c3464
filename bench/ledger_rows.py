"""Sustained rows per second and record-call latency of the ledger (docs/performance.md, "Ledger").

Run: ``.venv/bin/python bench/ledger_rows.py [--backend sqlite|postgresql|both] [--concurrency 256]
[--seconds 8] [--repeat 3] [--kind ping|sale]``. Each run opens a fresh ledger in a temp dir on
the working disk (PostgreSQL: a server of its own started like the tests', but with fsync on, and
the journal in that temp dir), then ``--concurrency`` tasks record back to back for ``--seconds``:
``ping`` records one ping row per call, ``sale`` a ping call then a sold post call (four rows in two
calls). Latency is each call's await, on the event loop's clock. For PostgreSQL the answer comes
from the journal, so the figures also say what reached PostgreSQL in the window (forwarded/s) and
how long the backlog took to drain after it: sustained throughput is the lower of the two rates.
Prints the median and (min-max) over the runs. ``--baseline`` first measures the ceiling on the
same disk: the same ping rows inserted by a bare sqlite3 loop, 100 rows per commit, no event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pingpost import ledger  # noqa: E402
from pingpost.ledger import codec, sql  # noqa: E402
from pingpost.ledger.migrations import migrate_sqlite  # noqa: E402
from pingpost.ledger.postgres import PostgresLedger  # noqa: E402
from pingpost.ledger.writer import connect  # noqa: E402
from tests.ledger_support import LEAD, ping, sold  # noqa: E402
from tests.pg_support import PostgresServer  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(url: str, journal: str, concurrency: int, seconds: float, kind: str) -> dict[str, float]:
    books = await ledger.open(url, journal=journal)
    latencies: list[float] = []
    rows = 0
    stop = time.perf_counter() + seconds
    forwarded_before = books.forwarded if isinstance(books, PostgresLedger) else 0
    commits_before = books.commits

    async def writer(w: int) -> None:
        nonlocal rows
        i = 0
        while time.perf_counter() < stop:
            record = ping(f"{w}-{i}")
            started = time.perf_counter()
            await books.record_ping(record)
            latencies.append(time.perf_counter() - started)
            rows += 1
            if kind == "sale":
                started = time.perf_counter()
                await books.record_post(record, sold(record), LEAD)
                latencies.append(time.perf_counter() - started)
                rows += 3
            i += 1

    began = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - began
    result: dict[str, float] = {"rows_per_s": rows / elapsed, "calls_per_s": len(latencies) / elapsed}
    latencies.sort()
    result["p50_ms"] = percentile(latencies, 0.50) * 1000
    result["p99_ms"] = percentile(latencies, 0.99) * 1000
    result["calls_per_commit"] = len(latencies) / max(books.commits - commits_before, 1)
    if isinstance(books, PostgresLedger):
        result["forwarded_entries_per_s"] = (books.forwarded - forwarded_before) / elapsed
        result["backlog_at_end"] = books.backlog()
        drain_started = time.perf_counter()
        while books.backlog():
            await asyncio.sleep(0.01)
        result["drain_s"] = time.perf_counter() - drain_started
    await books.close()
    return result


def bare_sqlite(folder: str, seconds: float) -> dict[str, float]:
    """The same rows, WAL + synchronous=FULL, 100 per transaction, from one thread and nothing else."""
    conn = connect(f"{folder}/bare.db")
    migrate_sqlite(conn)
    statement = sql.insert("pings")
    rows, i = 0, 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        batch = [codec.ping_entry(ping(f"b-{i + j}")).rows[0][1] for j in range(100)]
        i += 100
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(statement, batch)
        conn.execute("COMMIT")
        rows += len(batch)
    conn.close()
    return {"rows_per_s": rows / (time.perf_counter() - began)}


def summary(runs: list[dict[str, float]]) -> str:
    parts = []
    for key in runs[0]:
        values = [r[key] for r in runs]
        parts.append(f"{key} {statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kind", choices=["ping", "sale"], default="ping")
    parser.add_argument("--baseline", action="store_true", help="also measure a bare sqlite3 insert loop")
    args = parser.parse_args()
    if args.baseline:
        bare = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="pp-ledger-bench-", dir=".") as folder:
                bare.append(bare_sqlite(folder, args.seconds))
        print(f"bare sqlite3, 100 rows a commit {args.seconds:g}s x{args.repeat}: {summary(bare)}", flush=True)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    server = PostgresServer(durable=True).start() if "postgresql" in backends else None
    try:
        for backend in backends:
            runs: list[dict[str, Any]] = []
            for n in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="pp-ledger-bench-", dir=".") as folder:
                    if backend == "sqlite":
                        url = f"sqlite:///{folder}/ledger.db"
                    else:
                        assert server is not None
                        url = server.create_database(f"bench_{n}_{time.time_ns()}")
                    runs.append(asyncio.run(run(url, f"{folder}/journal.db", args.concurrency, args.seconds,
                                                args.kind)))
            print(f"{backend} kind={args.kind} concurrency={args.concurrency} {args.seconds:g}s x{args.repeat}: "
                  f"{summary(runs)}", flush=True)
    finally:
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
