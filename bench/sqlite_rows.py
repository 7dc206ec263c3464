"""The least a durable ping row costs: CPU per row of a bare sqlite3 loop writing the books'
own ping rows, with no event loop and no writer thread, only the loop, the row's encoding and
SQLite (docs/performance.md, "Against the floor: what is left to take").

Run: ``.venv/bin/python bench/sqlite_rows.py [--rows N] [--per-commit K ...] [--rounds R]``.
Each run opens a fresh file in a temp dir on the working disk with the ledger's schema and
connection settings (``writer.connect``: WAL, ``synchronous=FULL``), then inserts N rows of a
5-http ping's record (``codec.ping_entry``: five outcomes, five ranked bids), K rows per
``BEGIN IMMEDIATE ... COMMIT``, and takes the process CPU time per row (the kernel's fsync
work included, and the record's encoding into its row, as the books do it). Two kinds of
``ping_id`` are tried, alternated: ``ordered`` as the exchange makes them (``ids.ordered``: the
epoch milliseconds, then 24 random hex digits, so new rows land at the end of the primary key's
index) and ``random``, the 24 random digits alone (``ids.token``, as ping ids were made before),
so each row lands at a random place of it. Printed: median and range per kind and K.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pingpost import ids  # noqa: E402
from pingpost.ledger.codec import ping_entry  # noqa: E402
from pingpost.ledger.migrations import migrate_sqlite  # noqa: E402
from pingpost.ledger.sqlite import _INSERT  # noqa: E402
from pingpost.ledger.writer import connect  # noqa: E402
from pingpost.schema import CampaignOutcome, PingFields  # noqa: E402
from pingpost.trace import PingRecord, RankedBid  # noqa: E402


def record(ping_id: str, now: float) -> PingRecord:
    campaigns = [f"campaign-{n}" for n in range(5)]
    return PingRecord(
        ping_id=ping_id, seller_id="acme", test=False, created_at=now, expires_at=now + 300, auction_ms=10.52,
        ping=PingFields(vertical="auto", zip="90210", state="CA", source_id="src-1", sub_id="a",
                        attributes={"age": 34, "credit": "good"}),
        bids=[RankedBid(c, 1_000 + n) for n, c in enumerate(campaigns)],
        outcomes=[CampaignOutcome(campaign_id=c, buyer_id=f"buyer-{n}", outcome="bid", bid=10 + n / 100, ms=10.5)
                  for n, c in enumerate(campaigns)],
        price_cents=850)


def ping_id(kind: str) -> str:
    return ids.token() if kind == "random" else ids.ordered()


def cpu_per_row(kind: str, rows: int, per_commit: int, directory: str) -> float:
    path = os.path.join(directory, f"{kind}-{per_commit}.db")
    conn = connect(path)
    migrate_sqlite(conn)
    insert = _INSERT["pings"]
    started = time.process_time()
    for _ in range(rows // per_commit):
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(per_commit):
            ((_, row),) = ping_entry(record(ping_id(kind), time.time())).rows
            conn.execute(insert, row)
        conn.execute("COMMIT")
    spent = time.process_time() - started
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return spent / (rows // per_commit * per_commit) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--per-commit", type=int, action="append", help="rows per commit (default: 1, 16, 128)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(dir=ROOT) as directory:
        for n in range(args.rounds):
            for per_commit in args.per_commit or [1, 16, 128]:
                kinds = ["random", "ordered"] if n % 2 == 0 else ["ordered", "random"]
                for kind in kinds:
                    figures.setdefault((kind, per_commit), []).append(
                        cpu_per_row(kind, args.rows // 10 if per_commit == 1 else args.rows, per_commit, directory))
    for (kind, per_commit), values in sorted(figures.items(), key=lambda item: (item[0][1], item[0][0])):
        print(f"{kind:8} {per_commit:4} rows/commit: {statistics.median(values):6.1f} µs CPU per row "
              f"({min(values):.1f}–{max(values):.1f}, {len(values)} runs)")


if __name__ == "__main__":
    main()
