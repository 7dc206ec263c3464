"""The ledger contract, run on both backends: a SQLite file, and PostgreSQL behind its journal.

Everything is real: SQLite files in temp dirs, PostgreSQL servers started from the machine's
binaries (tests/pg_support.py), writer processes killed with SIGKILL, a PostgreSQL stopped
mid-traffic, small tmpfs mounts that fill up or are read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from unittest import mock

import asyncpg
import msgspec
import pytest

from pingpost import ledger
from pingpost.ledger import (Ledger, LedgerError, LedgerUnavailable, PurchaseQuery, Sale, SoldCount, SoldLead, codec, migrations,
                            sql)
from pingpost.trace import to_trace
from tests.helpers_process import ROOT, run_cli
from tests.ledger_support import LEAD, no_bid, ping, sold, unsold
from tests.pg_support import PostgresServer, postgres_server, postgres_url  # noqa: F401
from tests.redis_support import free_port
from tests.support.keys import TEST_KEY

KINDS = ("sqlite", "postgresql")


@dataclass
class Books:
    """One backend under test: its URL, a folder for its files, and raw access to its tables."""

    kind: str
    url: str
    folder: Path

    @property
    def journal(self) -> str:
        return str(self.folder / "journal.db")

    async def open(self) -> Ledger:
        return await ledger.open(self.url, journal=self.journal, key=TEST_KEY)

    async def keys(self, table: str, column: str | None = None) -> list[Any]:
        """Every key (or ``column``) in ``table``, read straight from the database."""
        statement = f"SELECT {column or codec.KEYS[table]} FROM {table}"
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url[len("sqlite:///"):])
            try:
                return [key for (key,) in conn.execute(statement)]
            finally:
                conn.close()
        pg = await asyncpg.connect(self.url)
        try:
            return [record[0] for record in await pg.fetch(statement)]
        finally:
            await pg.close()


@pytest.fixture(params=KINDS)
def books(request: pytest.FixtureRequest, tmp_path: Path) -> Books:
    if request.param == "sqlite":
        return Books("sqlite", f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    return Books("postgresql", request.getfixturevalue("postgres_url"), tmp_path)


@pytest.fixture
async def opened(books: Books) -> AsyncIterator[Ledger]:
    books_ = await books.open()
    yield books_
    await books_.close()


async def drained(books: Ledger, within_s: float = 30.0) -> None:
    """Wait until everything recorded reached the system of record (PostgreSQL's backlog)."""
    deadline = time.monotonic() + within_s
    while books.backlog():
        assert time.monotonic() < deadline, f"backlog stuck at {books.backlog()}"
        await asyncio.sleep(0.02)


# Records in, records out -----------------------------------------------------------------


async def test_every_record_kind_round_trips(books: Books) -> None:
    first = await books.open()
    priced, posted_unsold, nothing = ping("p-sold"), ping("p-unsold", campaign_id="c9"), no_bid("p-none")
    for record in (priced, posted_unsold, nothing):
        await first.record_ping(record)
    await first.record_post(priced, sold(priced), LEAD, at=1_700_000_030.5)
    await first.record_post(posted_unsold, unsold(posted_unsold), LEAD, at=1_700_000_031.0)
    await drained(first)
    await first.close()

    again = await books.open()  # read back from the files / the database, not from memory
    try:
        found = await again.get_ping("p-sold")
        assert found is not None and found.post is not None
        assert found.post == sold(priced)
        expected = ping("p-sold")
        expected.post = sold(priced)
        assert found == expected
        assert to_trace(found) == to_trace(expected)  # GET /v1/pings/{id} answers the same body

        found_unsold = await again.get_ping("p-unsold")
        assert found_unsold is not None and found_unsold.post == unsold(posted_unsold)
        assert await again.get_ping("p-none") == no_bid("p-none")
        assert await again.get_ping("nope") is None

        sale = await again.get_sale("L-p-sold")
        assert sale == Sale(lead_id="L-p-sold", ping_id="p-sold", campaign_id="c1", buyer_id="b1", seller_id="acme",
                            buyer_price_cents=725, seller_price_cents=507, sold_at=1_700_000_030.5, test=False,
                            buyer_lead_id="buyer-7")
        assert await again.get_lead("L-p-sold") == LEAD
        assert await again.get_sale("nope") is None and await again.get_lead("nope") is None
        assert sorted(await books.keys("sales")) == ["L-p-sold"]
        assert sorted(await books.keys("lead_data")) == ["L-p-sold"]  # an unsold lead's data is not kept
        assert sorted(await books.keys("posts")) == ["p-sold", "p-unsold"]
    finally:
        await again.close()


async def test_a_record_sent_twice_is_one_row(books: Books) -> None:
    """Idempotent on ping_id and lead_id, across reopenings (a resend after a crash)."""
    record = ping("p-1")
    for _ in range(2):
        books_ = await books.open()
        await books_.record_ping(record)
        await books_.record_ping(record)
        await books_.record_post(record, sold(record), LEAD)
        await drained(books_)
        await books_.close()
    assert await books.keys("pings") == ["p-1"]
    assert await books.keys("posts") == ["p-1"]
    assert await books.keys("sales") == ["L-p-1"]
    assert await books.keys("lead_data") == ["L-p-1"]


async def test_group_commit_batches_concurrent_records(opened: Ledger) -> None:
    records = [ping(f"g-{i}") for i in range(400)]
    before = opened.commits
    await asyncio.gather(*(opened.record_ping(record) for record in records))
    commits = opened.commits - before
    assert 1 <= commits <= len(records) // 2, commits
    await drained(opened)
    for record in random.sample(records, 20):
        assert await opened.get_ping(record.ping_id) == record


async def test_none_records_nothing() -> None:
    books_ = await ledger.open("none", key=TEST_KEY)
    record = ping("p-1")
    await books_.record_ping(record)
    await books_.record_post(record, sold(record), LEAD)
    assert await books_.get_ping("p-1") is None and await books_.get_sale("L-p-1") is None
    assert await books_.sold_counts(0, 0) == {} and books_.backlog() == 0
    assert await books_.purchases(PurchaseQuery(0, 1e12, None, True, None, 10)) == []
    await books_.close()


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://relative.db", "sqlite:///", ""])
async def test_an_unknown_url_is_refused(url: str) -> None:
    with pytest.raises(LedgerError, match="not a ledger URL"):
        await ledger.open(url, key=TEST_KEY)


# Caps and retention ----------------------------------------------------------------------


async def test_sold_counts_per_campaign_since_hour_and_day(opened: Ledger) -> None:
    day, hour = 1_700_000_000.0, 1_700_030_000.0
    sales = [  # (ping_id, campaign, cents, sold_at, test)
        ("yesterday", "c1", 100, day - 1, False),
        ("early", "c1", 200, day, False),
        ("this-hour", "c1", 300, hour, False),
        ("other", "c2", 450, hour + 5, False),
        ("tested", "c1", 999, hour + 6, True),
    ]

    def counted(so_far: list[tuple[str, str, int, float, bool]]) -> dict[str, SoldCount]:
        leads: dict[str, list[SoldLead]] = {}
        for ping_id, campaign_id, cents, sold_at, test in so_far:
            if not test and sold_at >= day:
                leads.setdefault(campaign_id, []).append(SoldLead(ping_id, sold_at >= hour, cents))
        return {campaign_id: SoldCount(tuple(sorted(mine))) for campaign_id, mine in leads.items()}

    for n, (ping_id, campaign_id, cents, sold_at, test) in enumerate(sales, 1):
        record = ping(ping_id, campaign_id=campaign_id, cents=cents, test=test)
        await opened.record_ping(record)
        await opened.record_post(record, sold(record), LEAD, at=sold_at)
        # Right after the answer, whether the sale is still in the journal or already forwarded.
        assert await opened.sold_counts(hour, day) == counted(sales[:n])
    expected = {"c1": SoldCount((SoldLead("early", False, 200), SoldLead("this-hour", True, 300))),
                "c2": SoldCount((SoldLead("other", True, 450),))}
    assert [(c.hourly, c.daily, c.cents_today) for c in expected.values()] == [(1, 2, 500), (1, 1, 450)]
    assert counted(sales) == expected
    unsold_ping = ping("no-sale", campaign_id="c3")
    await opened.record_ping(unsold_ping)
    await opened.record_post(unsold_ping, unsold(unsold_ping), LEAD, at=hour)
    await drained(opened)
    assert await opened.sold_counts(hour, day) == expected
    assert await opened.sold_counts(hour, day, ["c2", "c9"]) == {"c2": expected["c2"]}
    assert await opened.sold_counts(hour, day, []) == {}
    assert await opened.sold_counts(hour + 3600, hour + 3600) == {}


async def test_purchases_are_listed_newest_first_within_a_range_and_a_scope(opened: Ledger) -> None:
    """What a buyer's list and the dashboard read: sales in [since, until), one buyer's when
    asked, test sales only when asked, newest first (the lead_id breaks a tie), after a
    position, at most ``limit``; each with its lead's data and ping's fields."""
    sales = [  # (ping_id, seller, buyer, sold_at, test)
        ("first", "acme", "b1", 100.0, False), ("second", "acme", "b2", 200.0, False),
        ("tested", "acme", "b1", 250.0, True), ("third", "other", "b1", 300.0, False),
        ("tied", "acme", "b1", 300.0, False), ("after", "acme", "b1", 400.0, False),
    ]
    for ping_id, seller_id, buyer_id, sold_at, test in sales:
        record = ping(ping_id, seller_id=seller_id, test=test)
        result = sold(record)
        result.offers[-1] = msgspec.structs.replace(result.offers[-1], buyer_id=buyer_id)
        await opened.record_ping(record)
        await opened.record_post(record, result, LEAD, at=sold_at)

    async def listed(buyer_id: str | None = None, test: bool = False, before: tuple[float, str] | None = None,
                     limit: int = 10) -> list[str]:
        found = await opened.purchases(PurchaseQuery(100.0, 400.0, buyer_id, test, before, limit))
        return [bought.sale.ping_id for bought in found]

    for _ in range(2):  # right after the answers (PostgreSQL: from the journal), then from the database
        assert await listed() == ["tied", "third", "second", "first"]  # L-tied > L-third
        assert await listed(buyer_id="b1") == ["tied", "third", "first"]
        assert await listed(buyer_id="b1", test=True) == ["tied", "third", "tested", "first"]
        assert await listed(buyer_id="b9") == []
        assert await listed(limit=2) == ["tied", "third"]
        assert await listed(before=(300.0, "L-tied")) == ["third", "second", "first"]
        assert await listed(before=(300.0, "L-third")) == ["second", "first"]
        (newest,) = await opened.purchases(PurchaseQuery(0.0, 1e12, None, False, None, 1))
        assert (newest.sale.lead_id, newest.sale.buyer_id, newest.sale.sold_at) == ("L-after", "b1", 400.0)
        assert newest.lead == LEAD and newest.ping == ping("after").ping and newest.filed is None
        await drained(opened)


async def test_retention_drops_old_traffic_never_a_sale(books: Books, opened: Ledger) -> None:
    old, cutoff, new = 1_600_000_000.0, 1_650_000_000.0, 1_700_000_000.0
    kept_sale, unsold_old, nothing_old, recent = (ping("sold-old", created_at=old), ping("unsold-old", created_at=old),
                                                  no_bid("none-old", created_at=old), ping("recent", created_at=new))
    for record in (kept_sale, unsold_old, nothing_old, recent):
        await opened.record_ping(record)
    await opened.record_post(kept_sale, sold(kept_sale), LEAD, at=old + 10)
    await opened.record_post(unsold_old, unsold(unsold_old), LEAD, at=old + 10)
    await opened.record_post(recent, unsold(recent), LEAD, at=new + 10)
    await drained(opened)

    assert await opened.drop_traffic_before(cutoff) == 3  # two old pings and one old unsold post
    assert sorted(await books.keys("pings")) == ["recent", "sold-old"]
    assert sorted(await books.keys("posts")) == ["recent", "sold-old"]
    found = await opened.get_ping("sold-old")
    assert found is not None and found.post == sold(kept_sale)  # a sale keeps its whole trace
    assert await opened.get_sale("L-sold-old") is not None and await opened.get_lead("L-sold-old") == LEAD
    assert await opened.get_ping("unsold-old") is None and await opened.get_ping("none-old") is None
    assert await opened.drop_traffic_before(cutoff) == 0


async def test_retention_works_through_more_than_one_chunk(books: Books, opened: Ledger) -> None:
    count = ledger.sql.DROP_CHUNK + 7
    await asyncio.gather(*(opened.record_ping(no_bid(f"n-{i}", created_at=1.0)) for i in range(count)))
    await drained(opened, within_s=60)
    assert await opened.drop_traffic_before(2.0) == count
    assert await books.keys("pings") == []


# Schema ----------------------------------------------------------------------------------


async def test_opening_migrates_once_and_a_newer_schema_is_refused(books: Books) -> None:
    for _ in range(2):
        books_ = await books.open()
        await books_.close()
    assert await books.keys("schema_version", "version") == list(range(1, migrations.LATEST + 1))
    if books.kind == "sqlite":
        conn = sqlite3.connect(books.url[len("sqlite:///"):])
        conn.execute("INSERT INTO schema_version VALUES (99, 0, 'from the future')")
        conn.commit()
        conn.close()
    else:
        pg = await asyncpg.connect(books.url)
        await pg.execute("INSERT INTO schema_version VALUES (99, 0, 'from the future')")
        await pg.close()
    with pytest.raises(LedgerError, match="version 99, newer than this pingpost knows"):
        await books.open()


async def test_the_ranking_rule_is_kept(books: Books) -> None:
    record = ping("p-expected")
    record.ranking = "expected"
    first = await books.open()
    await first.record_ping(record)
    await drained(first)
    await first.close()
    again = await books.open()
    try:
        found = await again.get_ping("p-expected")
        assert found == record and to_trace(found).ranking == "expected"
    finally:
        await again.close()


#: A pings row as the books wrote it before the ranking had a column: every column but the last.
OLD_PING_COLUMNS = codec.TABLES["pings"][:-1]


def old_ping_row(record: Any) -> tuple[Any, ...]:
    row = codec.ping_entry(record).rows[0][1]
    assert codec.TABLES["pings"][-1] == "ranking" and row[-1] == "bid"
    return row[:-1]


async def test_books_from_before_the_ranking_column_read_as_ranked_by_bid(books: Books) -> None:
    """A ledger made by a pingpost without the column, holding a ping: opening it migrates,
    and the ping reads back as it was (ranked by bid), as does a new one beside it."""
    record = ping("p-old")
    insert = (f"INSERT INTO pings ({', '.join(OLD_PING_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(OLD_PING_COLUMNS))})")
    with mock.patch.object(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1]), \
            mock.patch.object(migrations, "LATEST", 1):
        if books.kind == "sqlite":
            conn = sqlite3.connect(books.url[len("sqlite:///"):], isolation_level=None)
            migrations.migrate_sqlite(conn)
            conn.execute(insert, old_ping_row(record))
            conn.close()
        else:
            pg = await asyncpg.connect(books.url)
            await migrations.migrate_postgres(pg)
            await pg.execute(sql.numbered(insert), *old_ping_row(record))
            await pg.close()
    opened = await books.open()
    try:
        assert await opened.get_ping("p-old") == record
        newer = ping("p-new")
        newer.ranking = "expected"
        await opened.record_ping(newer)
        await drained(opened)
        assert await opened.get_ping("p-new") == newer
    finally:
        await opened.close()
    assert await books.keys("schema_version", "version") == list(range(1, migrations.LATEST + 1))


async def test_a_journal_from_before_the_ranking_column_is_read_and_forwarded(postgres_url: str,  # noqa: F811
                                                                              tmp_path: Path) -> None:
    """Entries a host journaled before an upgrade carry pings rows one column short: they are
    answered from the journal and reach PostgreSQL as pings ranked by bid."""
    journal = tmp_path / "journal.db"
    offline = await ledger.open(f"postgresql://pingpost@127.0.0.1:{free_port()}/down", journal=journal, key=TEST_KEY)
    await offline.close()
    record = ping("p-journaled")
    entry = codec.Entry(record.ping_id, None, [("pings", old_ping_row(record))])
    conn = sqlite3.connect(journal)
    conn.execute("INSERT INTO entries (ping_id, lead_id, body) VALUES (?, ?, ?)",
                 (entry.ping_id, entry.lead_id, codec.pack_rows(entry)))
    conn.commit()
    conn.close()
    offline = await ledger.open(f"postgresql://pingpost@127.0.0.1:{free_port()}/down", journal=journal, key=TEST_KEY)
    try:
        assert await offline.get_ping("p-journaled") == record, "read from the journal"
    finally:
        await offline.close()
    online = await ledger.open(postgres_url, journal=journal, key=TEST_KEY)
    try:
        await drained(online)
        assert await online.get_ping("p-journaled") == record
    finally:
        await online.close()
    assert await Books("postgresql", postgres_url, tmp_path).keys("pings", "ranking") == [None]


async def test_migrate_command(books: Books) -> None:
    code, out, err = await run_cli("ledger", "migrate", "--ledger", books.url)
    assert (code, out.strip()) == (0, f"ledger schema version 0 -> {migrations.LATEST}"), err
    code, out, err = await run_cli("ledger", "migrate", "--ledger", books.url)
    assert (code, out.strip()) == (0, f"ledger schema at version {migrations.LATEST}"), err
    assert not Path(books.journal).exists()  # migrating PostgreSQL makes no journal
    code, _, err = await run_cli("ledger", "migrate", "--ledger", "mysql://x")
    assert code == 1 and "not a ledger URL" in err


async def test_postgresql_with_a_wrong_database_fails_at_open(postgres_server: PostgresServer,  # noqa: F811
                                                              tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        await ledger.open(postgres_server.url("no_such_db"), journal=tmp_path / "j.db", key=TEST_KEY)


# Durability ------------------------------------------------------------------------------


async def run_writer(books: Books, prefix: str, count: int, kill_after_s: float | None) -> list[str]:
    """A writer process; SIGKILLed ``kill_after_s`` after its first answer (None: runs to its
    end). The ping_ids it printed, i.e. whose record calls returned."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.ledger_support", books.url, books.journal, prefix, str(count), "32",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    answered: list[str] = []
    first = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            if line.endswith(b"\n"):
                answered.append(line.decode().strip())
                if not first.done():
                    first.set_result(None)

    reader = asyncio.create_task(read())
    if kill_after_s is not None:
        await asyncio.wait_for(first, 30)
        await asyncio.sleep(kill_after_s)
        process.kill()
    await asyncio.wait_for(process.wait(), 120)
    await reader
    if kill_after_s is None:
        assert process.returncode == 0
    else:
        assert process.returncode == -9, "the writer ended before it was killed: give it more to write"
    return answered


async def test_a_killed_writer_loses_no_answered_record(books: Books) -> None:
    every: set[str] = set()
    for round_ in range(4):
        answered = await run_writer(books, f"r{round_}", 200_000, kill_after_s=random.uniform(0.05, 0.8))
        assert answered, "nothing was answered before the kill"
        every |= set(answered)
        reopened = await books.open()  # recovers the WAL; for PostgreSQL forwards what the journal kept
        await drained(reopened, within_s=60)
        pings, sales = await books.keys("pings"), await books.keys("sales")
        assert len(pings) == len(set(pings)) and len(sales) == len(set(sales))
        assert every <= set(pings), f"answered but lost: {sorted(every - set(pings))[:5]}"
        sold_ids = {ping_id for ping_id in every if int(ping_id.rsplit("-", 1)[1]) % 2 == 0}
        assert {"L-" + ping_id for ping_id in sold_ids} <= set(sales)
        sample = random.choice(sorted(sold_ids))
        found = await reopened.get_ping(sample)
        assert found is not None and found.post is not None and found.post.lead_id == "L-" + sample
        await reopened.close()


async def test_several_processes_write_one_ledger(books: Books) -> None:
    """Workers of one host share the SQLite file, or the journal in front of PostgreSQL
    (where one of them at a time forwards)."""
    results = await asyncio.gather(*(run_writer(books, f"w{i}", 300, kill_after_s=None) for i in range(3)))
    books_ = await books.open()
    await drained(books_)
    await books_.close()
    assert sorted(await books.keys("pings")) == sorted(ping_id for answered in results for ping_id in answered)
    assert len(await books.keys("sales")) == 3 * 150


async def test_a_journal_forwarded_twice_writes_nothing_twice(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The crash between PostgreSQL's commit and the journal's delete, made deterministic: the
    same journal contents are forwarded twice, and PostgreSQL holds each row once."""
    journal = tmp_path / "journal.db"
    offline = await ledger.open(f"postgresql://pingpost@127.0.0.1:{free_port()}/down", journal=journal, key=TEST_KEY)
    records = [ping(f"j-{i}") for i in range(50)]
    for record in records:
        await offline.record_ping(record)
        await offline.record_post(record, sold(record), LEAD)
    await offline.close()
    copy = tmp_path / "copy.db"
    copy.write_bytes(journal.read_bytes())  # closed cleanly: the WAL is checkpointed into the file
    conn = sqlite3.connect(copy)
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 2 * len(records)
    conn.close()
    for path in (journal, copy):
        online = await ledger.open(postgres_url, journal=path, key=TEST_KEY)
        await drained(online)
        await online.close()
    books = Books("postgresql", postgres_url, tmp_path)
    assert sorted(await books.keys("pings")) == sorted(r.ping_id for r in records)
    assert sorted(await books.keys("sales")) == sorted("L-" + r.ping_id for r in records)
    assert len(await books.keys("lead_data")) == len(records)


async def test_postgresql_outage_does_not_stop_recording(tmp_path: Path) -> None:
    """Down at open, then stopped mid-traffic: every record call succeeds from the journal,
    the backlog grows, and once PostgreSQL is back everything arrives exactly once."""
    server = PostgresServer().start()
    try:
        url = server.create_database("outage")
        await asyncio.to_thread(server.stop)
        books_ = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
        answered: list[str] = []
        stop = asyncio.Event()

        async def traffic(worker: int) -> None:
            i = 0
            while not stop.is_set():
                record = ping(f"o{worker}-{i}")
                await books_.record_ping(record)
                await books_.record_post(record, sold(record), LEAD)
                answered.append(record.ping_id)
                i += 1
                await asyncio.sleep(0.002)

        writers = [asyncio.create_task(traffic(w)) for w in range(8)]
        await asyncio.sleep(0.5)
        assert books_.backlog() >= len(answered) > 0  # down since before open: nothing forwarded
        pending = answered[0]
        found = await books_.get_ping(pending)  # read back from the journal while the database is down
        assert found is not None and found.ping_id == pending

        await asyncio.to_thread(server.start)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.stop, "fast")  # mid-traffic
        during = len(answered)
        await asyncio.sleep(1.0)
        assert len(answered) > during and books_.backlog() > 0
        await asyncio.to_thread(server.start)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*writers)
        await drained(books_, within_s=60)
        await books_.close()

        pg = await asyncpg.connect(url)
        try:
            pings = [r[0] for r in await pg.fetch("SELECT ping_id FROM pings")]
            sales = [r[0] for r in await pg.fetch("SELECT lead_id FROM sales")]
        finally:
            await pg.close()
        assert sorted(pings) == sorted(answered)
        assert sorted(sales) == sorted("L-" + ping_id for ping_id in answered)
    finally:
        server.remove()


class SlowToHangUp:
    """A TCP relay to PostgreSQL that passes every byte at once but, when the server hangs up,
    holds the client's side open a while longer, as a slow network or a pooler in between can:
    the server's last message (the FATAL of a shutdown, or of a terminated backend) is read
    well before its connection is seen to close."""

    def __init__(self, port: int, hold_s: float = 1.0) -> None:
        self.port = port
        self.hold_s = hold_s
        self.closing = asyncio.Event()
        self.relays: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, hold_s: float) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), hold_s)
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, 0), pipe(up_reader, writer, self.hold_s))

    async def stop(self) -> None:
        assert self.server is not None
        self.closing.set()
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.relays)
        await self.server.wait_closed()


async def terminate_backends(url: str) -> None:
    """What a fast shutdown does to every session: each backend sends its FATAL and exits."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await conn.close()


@pytest.fixture
async def relayed(postgres_url: str) -> AsyncIterator[tuple[str, SlowToHangUp]]:  # noqa: F811
    """The test's database reached through a ``SlowToHangUp`` relay: its URL, and the relay."""
    relay = SlowToHangUp(int(postgres_url.rsplit(":", 1)[1].split("/")[0]))
    port = await relay.start()
    yield postgres_url.replace(f":{relay.port}/", f":{port}/"), relay
    await relay.stop()


async def test_a_read_on_a_connection_postgresql_just_dropped_is_tried_again(
        relayed: tuple[str, SlowToHangUp], postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    """A pooled connection that has read PostgreSQL's last message but not yet seen it hang up
    fails its next query with an error of the driver's own (a protocol state it cannot leave):
    the read is tried again on a new connection, and is never that error (a post asking the
    books would answer 500)."""
    url, _ = relayed
    books_ = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    try:
        record = ping("p-held")
        await books_.record_ping(record)
        await drained(books_)
        assert await books_.get_ping("p-held") == record  # from PostgreSQL: its connection now idle in the pool
        await terminate_backends(postgres_url)
        await asyncio.sleep(0.2)  # the FATAL is read; the hang-up is held back
        assert await books_.get_ping("p-held") == record
    finally:
        await books_.close()


async def test_a_copy_postgresql_cut_short_logs_no_error(relayed: tuple[str, SlowToHangUp], postgres_url: str,  # noqa: F811
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL's last message read between two statements of the forwarder's transaction:
    asyncpg fails the next COPY at once (the forwarder drops the connection and resends the
    batch) but leaves that COPY's result future behind, and the connection's loss sets an
    exception on it that nobody awaits, which asyncio would log as an error during every
    such outage. With a PostgreSQL ledger open, that line is not logged."""
    url, _ = relayed
    books_ = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TEMP TABLE incoming (ping_id text)")
        await conn.copy_records_to_table("incoming", records=[("a",)], columns=["ping_id"])
        await conn.execute("BEGIN")
        await terminate_backends(postgres_url)
        await asyncio.sleep(0.2)
        with pytest.raises(asyncpg.InternalClientError):
            await conn.copy_records_to_table("incoming", records=[("b",)], columns=["ping_id"])
    finally:
        conn.terminate()
        await books_.close()
    gc.collect()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


# Disk full, read-only --------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that can be filled for real."""
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a small tmpfs, and mounting one needs root (CI runs as root)")
    folder = tmp_path / "fs"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def ledger_in(books: Books, folder: Path) -> tuple[str, Path]:
    """The URL and journal that put this backend's local file in ``folder``: the SQLite
    ledger itself, or the journal in front of a PostgreSQL that is not answering (so the
    journal only grows, as in an outage)."""
    if books.kind == "sqlite":
        return f"sqlite:///{folder / 'ledger.db'}", folder / "unused-journal.db"
    return f"postgresql://pingpost@127.0.0.1:{free_port()}/down", folder / "journal.db"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_full_disk_is_ledger_unavailable_never_a_false_success(kind: str, small_fs: Path,
                                                                      tmp_path: Path) -> None:
    books = Books(kind, "", tmp_path)
    url, journal = ledger_in(books, small_fs)
    books_ = await ledger.open(url, journal=journal, key=TEST_KEY)
    try:
        answered = []
        for i in range(20):
            await books_.record_ping(ping(f"before-{i}"))
            answered.append(f"before-{i}")
        filler = fill(small_fs)
        with pytest.raises(LedgerUnavailable):
            for i in range(5000):  # what still fits in space the files already hold is durable
                await books_.record_ping(ping(f"full-{i}"))
                answered.append(f"full-{i}")
        filler.unlink()
        await books_.record_ping(ping("after"))  # the writer recovers once there is room
        answered.append("after")
        for ping_id in answered:
            assert await books_.get_ping(ping_id) is not None, ping_id
    finally:
        await books_.close()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: mount a read-only filesystem
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)], check=True)
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_read_only_place_is_ledger_unavailable(kind: str, read_only_dir: Path, tmp_path: Path) -> None:
    url, journal = ledger_in(Books(kind, "", tmp_path), read_only_dir)
    with pytest.raises(LedgerUnavailable):
        await ledger.open(url, journal=journal, key=TEST_KEY)


async def test_close_twice_is_harmless(books: Books) -> None:
    books_ = await books.open()
    await books_.record_ping(ping("p-1"))
    await books_.close()
    await books_.close()
    with pytest.raises(LedgerUnavailable, match="closed"):
        await books_.record_ping(ping("p-2"))
