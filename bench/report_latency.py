"""How long ``GET /v1/reports`` takes over 90 days at 10,000 campaigns (docs/performance.md,
"Reports").

Run: ``.venv/bin/python bench/report_latency.py [--days 90] [--campaigns 10000] [--repeat 7]
[--backends sqlite,postgresql]``. It makes a ledger in a temp dir (and, for postgresql, a server
of its own, started like the tests' but with fsync on), fills its rollups directly with SQL at
that size, and times ``reports.build`` plus the JSON encoding (what the endpoint does besides
HTTP) for a set of reports, each run once to warm the caches and then ``--repeat`` times.
Prints the rows filled and, per report, the median and (min-max) in milliseconds and the rows
answered.

The fill: every campaign has a counter row in every hour (and day) of the range, one seller,
source, vertical and state each; 20 campaigns to a buyer, each buyer 4 rows an hour (and day)
at the buyer level, 60 rows an hour at the level of the whole exchange; and the running totals
of every campaign and buyer, a row an hour. That is the dense case: a real exchange's campaigns
do not all get traffic every hour, but some get several rows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pingpost import ledger, reports  # noqa: E402
from pingpost.access import Principal, Role  # noqa: E402
from pingpost.ledger.rollups import COUNTERS  # noqa: E402
from tests.pg_support import PostgresServer  # noqa: E402

#: The last day of the range. The fill runs from the first day's UTC midnight to two days past
#: the last one's, so that a range in Los Angeles (behind UTC) is whole.
LAST = datetime.date(2026, 12, 1)
STATES = "CATXNYFLILPAOHGANCMI"


def fill_statements(days: int, campaigns: int, postgres: bool) -> list[str]:
    """The SQL that fills both grains at all three levels; numbers from a recursive CTE."""
    first = int(datetime.datetime.combine(LAST - datetime.timedelta(days=days), datetime.time(),
                                          datetime.timezone.utc).timestamp())
    buyers = campaigns // 20
    cast = "::bigint" if postgres else ""
    div = "div({}, {})" if postgres else "({} / {})"
    mod = "mod({}, {})" if postgres else "({} % {})"

    def numbers(name: str, count: int) -> str:
        return f"{name}(i) AS (SELECT 0{cast} UNION ALL SELECT i + 1 FROM {name} WHERE i < {count - 1})"

    def each(n: str, scale: int | str) -> list[str]:
        """A key's counters for one bucket (the same in every bucket: the running totals are
        then ``scale`` = the number of hours so far times them)."""
        pings = f"({scale} * (1 + {mod.format(n, 50)}))"
        return [pings, f"{pings} / 2", f"{pings} / 4", f"{pings} / 4", f"{pings} / 12", f"{pings} / 12",
                f"{pings} / 2", f"{pings} * 125", f"{pings} / 20", f"{pings} / 50", f"{pings} / 12 * 2500",
                f"{pings} / 12 * 2000", "0", "0", "0", "0"]

    def counts(n: str, scale: int | str) -> str:
        return ", ".join(each(n, scale))

    columns = "level, bucket, seller_id, source_id, sub_id, vertical, state, buyer_id, campaign_id, test, " + \
        ", ".join(COUNTERS)
    made = []
    for table, size, scale in (("rollup_hours", 3600, 1), ("rollup_days", 86400, 24)):
        buckets = (days + 2) * 86400 // size
        test = "false" if postgres else "0"
        made.append(
            f"WITH RECURSIVE {numbers('b', buckets)}, {numbers('c', campaigns)} "
            f"INSERT INTO {table} ({columns}) SELECT 2, {first} + b.i * {size}, 'seller-' || {mod.format('c.i', 20)}, "
            f"'s' || {mod.format('c.i', 5)}, '', 'v' || {mod.format('c.i', 3)}, "
            f"substr('{STATES}', 2 * {mod.format('c.i', 10)}{'::int' if postgres else ''} + 1, 2), "
            f"'buyer-' || {div.format('c.i', 20)}, 'campaign-' || c.i, {test}, {counts('c.i', scale)} "
            f"FROM b, c")
        made.append(
            f"WITH RECURSIVE {numbers('b', buckets)}, {numbers('u', buyers * 4)} "
            f"INSERT INTO {table} ({columns}) SELECT 1, {first} + b.i * {size}, 'seller-' || {mod.format('u.i', 4)}, "
            f"'s' || {mod.format('u.i', 5)}, '', 'v0', 'CA', 'buyer-' || {div.format('u.i', 4)}, '', {test}, "
            f"{counts('u.i', 5 * scale)} FROM b, u")
        made.append(
            f"WITH RECURSIVE {numbers('b', buckets)}, {numbers('k', 60)} "
            f"INSERT INTO {table} ({columns}) SELECT 0, {first} + b.i * {size}, 'seller-' || {mod.format('k.i', 20)}, "
            f"'s' || {mod.format('k.i', 5)}, '', 'v' || {mod.format('k.i', 3)}, 'CA', '', '', {test}, "
            f"{counts('k.i', 100 * scale)} FROM b, k")
    hours = (days + 2) * 24
    test = "false" if postgres else "0"
    made.append(
        f"WITH RECURSIVE {numbers('b', hours)}, {numbers('c', campaigns)} "
        f"INSERT INTO rollup_running (level, buyer_id, campaign_id, test, bucket, {', '.join(COUNTERS)}) "
        f"SELECT 2, 'buyer-' || {div.format('c.i', 20)}, 'campaign-' || c.i, {test}, {first} + b.i * 3600, "
        f"{counts('c.i', '(b.i + 1)')} FROM c, b")
    # A buyer's series: its 4 rows an hour together (u = 4 * buyer + row), the same every hour.
    made.append(
        f"WITH RECURSIVE {numbers('b', hours)}, {numbers('w', buyers)}, {numbers('r', 4)}, "
        f"hourly AS (SELECT w.i AS buyer, " + ", ".join(
            f"sum({v}) AS {c}" for v, c in zip(each("(4 * w.i + r.i)", 5), COUNTERS)) + " FROM w, r GROUP BY w.i) "
        f"INSERT INTO rollup_running (level, buyer_id, campaign_id, test, bucket, {', '.join(COUNTERS)}) "
        f"SELECT 1, 'buyer-' || h.buyer, '', {test}, {first} + b.i * 3600, "
        + ", ".join(f"(b.i + 1) * h.{c}" for c in COUNTERS) + " FROM hourly h, b")
    made.append("INSERT INTO rollup_series (level, buyer_id, campaign_id, test) "
                "SELECT DISTINCT level, buyer_id, campaign_id, test FROM rollup_days WHERE level > 0")
    return made


def cases(days: int) -> list[tuple[str, Principal, reports.ReportQuery]]:
    start = LAST - datetime.timedelta(days=days - 1)
    ops, seller, buyer = Principal(Role.OPERATOR, "ops"), Principal(Role.SELLER, "seller-3"), \
        Principal(Role.BUYER, "buyer-7")

    def query(group_by: tuple[str, ...], tz: str = "America/Los_Angeles", first: datetime.date = start) -> Any:
        return reports.ReportQuery(first, LAST, tz, group_by, False, False)

    return [
        ("operator, totals, UTC", ops, query((), "UTC")),
        ("operator, totals", ops, query(())),
        ("operator, by day", ops, query(("day",))),
        ("operator, by campaign", ops, query(("campaign",))),
        ("operator, by buyer", ops, query(("buyer",))),
        ("operator, by campaign, UTC", ops, query(("campaign",), "UTC")),
        ("operator, one day by hour and campaign", ops, query(("hour", "campaign"), first=LAST)),
        ("seller, by day and source", seller, query(("day", "source"))),
        ("buyer (20 campaigns), by campaign", buyer, query(("campaign",))),
        ("buyer (20 campaigns), by day and campaign", buyer, query(("day", "campaign"))),
    ]


async def timed(work: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    result = await work()  # warms the page cache and the statement caches
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = await work()
        times.append((time.perf_counter() - began) * 1000)
    return times, result


async def run(url: str, args: argparse.Namespace, journal: Path) -> None:
    books = await ledger.open(url, journal=journal)
    began = time.perf_counter()
    if url.startswith("sqlite"):
        import sqlite3
        conn = sqlite3.connect(url[len("sqlite:///"):])
        for statement in fill_statements(args.days, args.campaigns, postgres=False):
            conn.execute(statement)
        conn.commit()
        filled = conn.execute("SELECT (SELECT count(*) FROM rollup_hours), (SELECT count(*) FROM rollup_days)").fetchone()
        conn.execute("ANALYZE")
        conn.close()
    else:
        import asyncpg
        pg = await asyncpg.connect(url)
        for statement in fill_statements(args.days, args.campaigns, postgres=True):
            await pg.execute(statement)
        await pg.execute("VACUUM ANALYZE rollup_hours")
        await pg.execute("VACUUM ANALYZE rollup_days")
        filled = tuple(await pg.fetchrow("SELECT (SELECT count(*) FROM rollup_hours), (SELECT count(*) FROM rollup_days)"))
        await pg.close()
    print(f"{url.split(':')[0]}: filled {filled[0]:,} hourly and {filled[1]:,} daily rows in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    print(f"| report ({args.days} days, {args.campaigns:,} campaigns) | median ms | (min-max) | rows |")
    print("|---|---|---|---|")
    for name, principal, query in cases(args.days):
        async def work(principal: Principal = principal, query: reports.ReportQuery = query) -> Any:
            built = await reports.build(books, principal, query)
            reports.to_json(built)
            return built
        times, built = await timed(work, args.repeat)
        print(f"| {name} | {statistics.median(times):,.0f} | ({min(times):,.0f}-{max(times):,.0f}) | "
              f"{len(built.rows):,} |", flush=True)
    await books.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--backends", default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pingpost-report-bench-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                asyncio.run(run(f"sqlite:///{tmp}/ledger.db", args, Path(tmp) / "journal.db"))
            else:
                server = PostgresServer(durable=True).start()
                try:
                    asyncio.run(run(server.url(), args, Path(tmp) / "journal.db"))
                finally:
                    server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
