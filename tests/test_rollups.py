"""The rollups the ledger's writer keeps, on both backends: counters of known records at
each level and grain, and never a record counted twice (resent, a journal forwarded again,
two hosts forwarding at once, a ledger upgraded from before the rollups).

Real SQLite files and a real PostgreSQL (tests/pg_support.py); the exchange's own reports
over these counters are tested against live traffic in tests/test_reports.py.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from pingpost import ledger
from pingpost.ledger import Ledger, RollupQuery, RunningQuery, Span
from pingpost.ledger.rollups import BUYERS, CAMPAIGNS, COUNTERS, KEY, MARKS, PINGS
from pingpost.schema import CampaignOutcome
from tests.helpers_process import ROOT
from tests.ledger_support import LEAD, UNDO_PRIVACY, no_bid, ping, sold, unsold
from tests.pg_support import postgres_server, postgres_url  # noqa: F401
from tests.support.keys import TEST_KEY

HOUR = 1_700_002_800.0  # 2023-11-14 23:00:00 UTC
EVERYTHING = (Span("hour", 0, 2**40),)


async def drained(books: Ledger) -> None:
    deadline = time.monotonic() + 30
    while books.backlog():
        assert time.monotonic() < deadline, "the journal did not drain"
        await asyncio.sleep(0.02)


async def counters(books: Ledger, level: int, grain: str = "hour", test: bool = True) -> dict[tuple[Any, ...], dict]:
    """Every counter row of a level: key (without the level) -> its non-zero counters."""
    keys = KEY[1:]
    rows = await books.rollups(RollupQuery(level, (Span(grain, 0, 2**40),), keys, test=test))
    return {tuple(row[:len(keys)]): {c: v for c, v in zip(COUNTERS, row[len(keys):]) if v} for row in rows}


async def record_traffic_to_journal(books: Ledger) -> None:
    """Four pings in one hour, one the next hour and day; a sale, an unsold post, a test sale
    (returns once they are durable here, not necessarily forwarded)."""
    a, b, none = ping("a", created_at=HOUR + 10), ping("b", created_at=HOUR + 20, campaign_id="c9"), \
        no_bid("n", created_at=HOUR + 30)
    tested, later = ping("t", created_at=HOUR + 40, test=True), ping("l", created_at=HOUR + 3600 + 5, cents=1000)
    for record in (a, b, none, tested, later):
        await books.record_ping(record)
    await books.record_post(a, sold(a), LEAD, at=HOUR + 50)
    await books.record_post(b, unsold(b), LEAD, at=HOUR + 60)
    await books.record_post(tested, sold(tested), LEAD, at=HOUR + 70)


async def record_traffic(books: Ledger) -> None:
    await record_traffic_to_journal(books)
    await drained(books)


def dims(hour: float, buyer: str = "", campaign: str = "", test: bool = False, state: str = "CA",
         source: str = "s1", sub: str = "sub-9") -> tuple[Any, ...]:
    """A counter row's key (without its level); a buyer's and a campaign's have no sub_id."""
    return (int(hour), "acme", source, "" if buyer else sub, "auto", state, buyer, campaign, test)


#: What ``record_traffic`` adds, worked out by hand from tests/ledger_support.py's records: a
#: priced ping has c1 (or c9) bid 7.25 and rank first (b1), c2 bid 5.00 (b2), c3 time out (b3)
#: and c4 capped (not sent); a no-bid ping (no state, source or sub_id) had c3 (b3) say no.
EXPECTED_PINGS = {
    dims(HOUR): {"pings": 2, "priced": 2, "posts": 2, "offers": 3, "accepted": 1, "sold": 1, "bids": 4,
                 "bid_cents": 2450, "timeouts": 2, "revenue_cents": 725, "payout_cents": 507},
    dims(HOUR, state="", source="", sub=""): {"pings": 1},
    dims(HOUR, test=True): {"pings": 1, "priced": 1, "posts": 1, "offers": 1, "accepted": 1, "sold": 1, "bids": 2,
                            "bid_cents": 1225, "timeouts": 1, "revenue_cents": 725, "payout_cents": 507},
    dims(HOUR + 3600): {"pings": 1, "priced": 1, "bids": 2, "bid_cents": 1500, "timeouts": 1},
}


async def test_counters_of_known_records_at_every_level(opened: Ledger) -> None:
    await record_traffic(opened)
    assert await counters(opened, PINGS) == EXPECTED_PINGS
    # No two of those hours' rows fall into one day's row: the day counters are the same rows.
    assert await counters(opened, PINGS, "day") == {(k[0] // 86400 * 86400, *k[1:]): v
                                                    for k, v in EXPECTED_PINGS.items()}
    live = await counters(opened, CAMPAIGNS, test=False)
    # b's post offered c9 and c2 as b1's (the unsold record names b1 for both) and was unsold.
    assert live[dims(HOUR, "b1", "c1")] == {"pings": 1, "priced": 1, "posts": 1, "offers": 1, "accepted": 1,
                                            "sold": 1, "bids": 1, "bid_cents": 725, "revenue_cents": 725,
                                            "payout_cents": 507}
    assert live[dims(HOUR, "b1", "c9")] == {"pings": 1, "priced": 1, "posts": 1, "offers": 1, "bids": 1,
                                            "bid_cents": 725}
    assert live[dims(HOUR, "b1", "c2")] == {"offers": 1}
    assert live[dims(HOUR, "b2", "c2")] == {"pings": 2, "posts": 2, "bids": 2, "bid_cents": 1000}
    assert live[dims(HOUR, "b3", "c3")] == {"pings": 2, "posts": 2, "timeouts": 2}
    assert live[dims(HOUR, "b3", "c3", state="", source="", sub="")] == {"pings": 1}
    assert dims(HOUR, "b3", "c4") not in live  # capped: never sent
    buyers = await counters(opened, BUYERS, test=False)
    assert buyers[dims(HOUR, "b1")] == {"pings": 2, "priced": 2, "posts": 2, "offers": 3, "accepted": 1, "sold": 1,
                                        "bids": 2, "bid_cents": 1450, "revenue_cents": 725, "payout_cents": 507}
    assert buyers[dims(HOUR, "b3")] == {"pings": 2, "posts": 2, "timeouts": 2}  # c3 and c4: the ping once


async def assert_running_totals_agree(books: Ledger, edges: list[float]) -> None:
    """Over every range between two edges, at both levels, by campaign and by buyer: the
    running totals' two lookups give what adding up the hourly counters gives."""
    for start, end in ((a, b) for a in edges for b in edges if a < b):
        for level, keys in ((BUYERS, ("buyer_id",)), (CAMPAIGNS, ("buyer_id", "campaign_id")), (BUYERS, ())):
            for test in (False, True):
                hourly = await books.rollups(RollupQuery(level, (Span("hour", int(start), int(end)),), keys,
                                                         test=test))
                running = await books.rollups(RunningQuery(level, int(start), int(end), keys, test=test))
                if keys:  # a series with nothing in the range answers zeros, which a report leaves out
                    running = [r for r in running if any(r[len(keys):])]
                assert sorted(running) == sorted(hourly), (start, end, level, keys)


async def test_running_totals_equal_the_hourly_counters_over_any_range(opened: Ledger) -> None:
    """Including a post recorded after later pings of the same campaigns: it counts on its
    ping's hour, behind those campaigns' latest running rows, which it must reach too."""
    early = ping("early", created_at=HOUR - 7200 + 1)
    await opened.record_ping(early)
    await record_traffic(opened)
    await opened.record_post(early, sold(early), LEAD, at=HOUR + 3600 + 30)
    await drained(opened)
    await assert_running_totals_agree(opened, [HOUR - 86400, HOUR - 7200, HOUR - 3600, HOUR, HOUR + 3600,
                                               HOUR + 7200, HOUR + 86400])


async def test_a_record_sent_twice_counts_once(url: str, tmp_path: Path) -> None:
    for _ in range(2):
        books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
        await record_traffic(books)
        await record_traffic(books)
        assert await counters(books, PINGS) == EXPECTED_PINGS
        await assert_running_totals_agree(books, [HOUR, HOUR + 3600, HOUR + 7200])
        await books.close()


async def test_a_journal_forwarded_again_after_a_crash_counts_once(postgres_url: str,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    """The forwarder dies between PostgreSQL's commit and the journal's delete: the same entries
    are forwarded again; their rows are there already, so they are not fresh and add nothing."""
    journal = tmp_path / "journal.db"
    offline = await ledger.open("postgresql://pingpost@127.0.0.1:1/down", journal=journal, key=TEST_KEY)
    await record_traffic_to_journal(offline)  # PostgreSQL is down: it waits in the journal
    await offline.close()
    copy = tmp_path / "copy.db"
    copy.write_bytes(journal.read_bytes())
    for path in (journal, copy):
        online = await ledger.open(postgres_url, journal=path, key=TEST_KEY)
        await drained(online)
        assert await counters(online, PINGS) == EXPECTED_PINGS
        await online.close()


async def test_two_hosts_forwarding_into_the_same_counters_at_once(postgres_url: str,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    """Two journals (two hosts) forwarding pings of the same hour and dimensions together:
    their upserts touch the same rows, in key order; every ping counts exactly once."""
    hosts = [await ledger.open(postgres_url, journal=tmp_path / f"host-{i}.db", key=TEST_KEY) for i in range(2)]
    per_host = 300

    async def traffic(i: int, books: Ledger) -> None:
        for n in range(per_host):
            record = ping(f"h{i}-{n}", created_at=HOUR + n % 60, campaign_id=f"c{n % 5}")
            await books.record_ping(record)
            if n % 3 == 0:
                await books.record_post(record, sold(record), LEAD, at=HOUR + 100)

    await asyncio.gather(*(traffic(i, books) for i, books in enumerate(hosts)))
    for books in hosts:
        await drained(books)
    totals = dict(zip(COUNTERS, (await hosts[0].rollups(RollupQuery(PINGS, EVERYTHING, ())))[0]))
    assert (totals["pings"], totals["posts"], totals["sold"]) == (2 * per_host, 2 * 100, 2 * 100)
    by_campaign = await hosts[1].rollups(RollupQuery(CAMPAIGNS, EVERYTHING, ("campaign_id",)))
    assert sum(row[1] for row in by_campaign) == 2 * per_host * 3  # each ping was sent c*, c2 and c3
    await assert_running_totals_agree(hosts[0], [HOUR - 3600, HOUR, HOUR + 3600])
    for books in hosts:
        await books.close()


async def test_an_upgraded_ledger_counts_what_it_recorded_before(url: str, tmp_path: Path) -> None:
    """A ledger from before the rollups (schema version 1, traffic in it) is migrated at open:
    the counters come out as if they had been kept all along."""
    books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    await record_traffic(books)
    await books.close()
    kept = (MARKS,) if url.startswith("sqlite") else ()
    undo = [*(f"DROP TABLE {table}" for table in ("rollup_hours", "rollup_days", "rollup_series", "rollup_running",
                                                  "returns", "money", "outcomes", *kept)),
            "DROP INDEX sales_buyer", "ALTER TABLE pings DROP COLUMN ranking", *UNDO_PRIVACY,
            "DELETE FROM schema_version WHERE version > 1"]
    await run_sql(url, undo)
    books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    assert await counters(books, PINGS) == EXPECTED_PINGS
    await assert_running_totals_agree(books, [HOUR - 3600, HOUR, HOUR + 3600, HOUR + 7200])
    assert (await counters(books, BUYERS))[dims(HOUR, "b3")] == {"pings": 2, "posts": 2, "timeouts": 2}
    await books.close()


async def run_sql(url: str, statements: list[str]) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
    else:
        pg = await asyncpg.connect(url)
        for statement in statements:
            await pg.execute(statement)
        await pg.close()


async def test_books_counted_in_every_commit_are_carried_over(url: str, tmp_path: Path) -> None:
    """Books at schema versions 2 to 4 counted every record in its own commit, and kept sub_id at
    the buyer and campaign levels: migration 5 merges those rows into ones without it and
    (SQLite) starts counting past every row already there, so nothing counts twice."""
    books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    await record_traffic(books)
    await books.close()
    as_version_4 = ["UPDATE rollup_hours SET sub_id = 'sub-9' WHERE level > 0 AND state = 'CA'",
                    "UPDATE rollup_days SET sub_id = 'sub-9' WHERE level > 0 AND state = 'CA'",
                    *UNDO_PRIVACY, "DELETE FROM schema_version WHERE version > 4"]
    await run_sql(url, [*as_version_4, f"DROP TABLE {MARKS}"] if url.startswith("sqlite") else as_version_4)
    books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    assert await counters(books, PINGS) == EXPECTED_PINGS
    assert (await counters(books, BUYERS))[dims(HOUR, "b3")] == {"pings": 2, "posts": 2, "timeouts": 2}
    await books.record_ping(ping("after", created_at=HOUR + 7200))
    await drained(books)
    totals = dict(zip(COUNTERS, (await books.rollups(RollupQuery(PINGS, EVERYTHING, (), test=True)))[0]))
    assert totals["pings"] == 6
    await books.close()


async def test_an_error_outcome_is_counted_and_a_below_min_bid_is_a_bid(opened: Ledger) -> None:
    record = ping("e", created_at=HOUR)
    record.outcomes[1].outcome = "below_min_bid"
    record.outcomes.append(CampaignOutcome(campaign_id="c5", buyer_id="b3", outcome="error:http_500", ms=2.0))
    record.outcomes.append(CampaignOutcome(campaign_id="c6", buyer_id="b3", outcome="filtered:state"))
    await opened.record_ping(record)
    await drained(opened)
    assert (await counters(opened, PINGS))[dims(HOUR)] == {"pings": 1, "priced": 1, "bids": 2, "bid_cents": 1225,
                                                           "timeouts": 1, "errors": 1}
    campaigns = await counters(opened, CAMPAIGNS)
    assert campaigns[dims(HOUR, "b3", "c5")] == {"pings": 1, "errors": 1}
    assert dims(HOUR, "b3", "c6") not in campaigns


async def test_counting_goes_on_after_retention_empties_the_books(opened: Ledger) -> None:
    """Retention drops counted rows only; a row recorded after it empties a table counts too
    (in SQLite it may take a rowid the counters had counted through before)."""
    old = ping("old", created_at=HOUR)
    await opened.record_ping(old)
    await opened.record_post(old, unsold(old), LEAD, at=HOUR + 5)
    await drained(opened)
    assert await opened.drop_traffic_before(HOUR + 3600) == 2
    await opened.record_ping(ping("new", created_at=HOUR + 7200))
    await drained(opened)
    totals = dict(zip(COUNTERS, (await opened.rollups(RollupQuery(PINGS, EVERYTHING, ())))[0]))
    assert (totals["pings"], totals["posts"]) == (2, 1)


async def table_counts(url: str, tmp_path: Path) -> tuple[int, int, int]:
    """(pings, posts, sales) rows in the books, read straight from the database."""
    statement = "SELECT (SELECT count(*) FROM pings), (SELECT count(*) FROM posts), (SELECT count(*) FROM sales)"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return tuple(conn.execute(statement).fetchone())  # type: ignore[return-value]
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return tuple(await pg.fetchrow(statement))  # type: ignore[return-value]
    finally:
        await pg.close()


async def test_a_writer_killed_at_any_moment_leaves_every_row_counted_once(url: str, tmp_path: Path) -> None:
    """SIGKILL between a commit and its counting, or in the middle of counting: once the
    books are open again, the counters say exactly what the tables hold."""
    journal = tmp_path / "journal.db"
    for round_ in range(3):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ledger_support", url, str(journal), f"k{round_}", "200000", "16",
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(random.uniform(1.0, 3.5))  # past a counting pass or two
        process.kill()
        assert await asyncio.wait_for(process.wait(), 60) == -9
        books = await ledger.open(url, journal=journal, key=TEST_KEY)
        await drained(books)
        totals = dict(zip(COUNTERS, (await books.rollups(RollupQuery(PINGS, EVERYTHING, (), test=True)))[0]))
        assert (totals["pings"], totals["posts"], totals["sold"]) == await table_counts(url, tmp_path)
        assert totals["pings"] > 0
        await books.close()
