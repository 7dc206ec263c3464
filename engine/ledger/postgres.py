"""The shared ledger: PostgreSQL (asyncpg) behind this host's durable journal.

A record call returns once its entry is committed to the local journal, so PostgreSQL
being down or slow never holds up a seller. The forwarder (one asyncio task; on each host
only the worker holding the journal's lock forwards) takes the oldest entries in order,
COPYs them into session temp tables and moves them into the ledger's tables with
``INSERT ... ON CONFLICT DO NOTHING`` in one transaction, and only then deletes them from
the journal. An entry resent after a crash between those two steps writes nothing twice.
While PostgreSQL cannot be reached the forwarder retries with backoff and the journal
grows (``backlog``). Reads look in the journal first (what PostgreSQL may not have yet),
then in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, TypeVar

import asyncpg

from . import sql
from .base import Ledger, LedgerError, LedgerUnavailable, SoldCount, count_sales
from .codec import TABLES, Entry, Row
from .journal import Journal
from .migrations import migrate_postgres

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger("pingpost.ledger")
T = TypeVar("T")

#: The journal's file when none is given: beside the process, in the working directory.
DEFAULT_JOURNAL = "pingpost-ledger-journal.db"

CONNECT_TIMEOUT_S = 5.0
#: A forward (COPY + INSERT + COMMIT of one batch) that takes longer is abandoned and resent.
FORWARD_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 5.0
FORWARD_BATCH = 2000
#: How often the forwarder looks for entries other workers of the host wrote.
POLL_S = 0.5
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0
POOL_SIZE = 4
#: How long ``close`` lets the forwarder try to empty the journal.
CLOSE_TIMEOUT_S = 5.0

#: Refusals that are a wrong URL (user, password, database), not an outage: fail at open.
_MISCONFIGURED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
#: A connection that died under a read; the read is tried once more on a fresh one.
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)

_SELECT = {table: sql.numbered(sql.select(table)) for table in TABLES}
_MOVE = {table: f"INSERT INTO {table} ({', '.join(TABLES[table])}) SELECT {', '.join(TABLES[table])} "
                f"FROM incoming_{table} ON CONFLICT DO NOTHING" for table in TABLES}
_SOLD_COUNTS = sql.numbered(sql.sold_counts())
_SOLD_COUNTS_OF = sql.numbered(sql.sold_counts("AND campaign_id = ANY(?)"))
_DROP = (sql.numbered(sql.DROP_POSTS), sql.numbered(sql.DROP_PINGS))


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresLedger(Ledger):
    def __init__(self, url: str, journal: Journal, pool: asyncpg.Pool) -> None:
        self.url = redacted(url)
        self._dsn = url
        self._journal = journal
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._backlog = 0
        self._appended = 0
        #: Entries this process moved into PostgreSQL.
        self.forwarded = 0
        self._forwarder: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, journal_path: str = DEFAULT_JOURNAL) -> "PostgresLedger":
        """Open the journal and try PostgreSQL once (migrating it). A wrong user, password or
        database fails here; PostgreSQL merely unreachable does not: the host sells from the
        journal and the forwarder migrates when it first connects."""
        journal = await Journal.open(journal_path)
        try:
            pool = await asyncpg.create_pool(url, min_size=0, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            await journal.close()
            raise
        ledger = cls(url, journal, pool)
        try:
            await ledger._connection()
        except (*_MISCONFIGURED, LedgerError) as exc:
            await ledger._release()
            raise LedgerError(f"{ledger.url}: {exc}") from None
        except Exception as exc:
            log.warning("ledger database unreachable at start; recording to the journal",
                        extra={"event": {"event": "ledger", "ledger": ledger.url, "error": str(exc)}})
        await ledger._recount()
        ledger._forwarder = asyncio.create_task(ledger._forward_forever())
        return ledger

    @property
    def commits(self) -> int:
        return self._journal.commits

    def backlog(self) -> int:
        return self._backlog

    async def _append(self, entry: Entry) -> None:
        await self._journal.append(entry)
        self._appended += 1
        self._backlog += 1
        self._wake.set()

    async def _recount(self) -> None:
        """The backlog from the journal, plus appends that returned while it was counted (a
        count may miss those; counting one twice only overstates until the next recount),
        so the gauge never reads 0 while an answered record waits."""
        mark = self._appended
        count = await self._journal.count()
        self._backlog = count + self._appended - mark

    # Reads -------------------------------------------------------------------------------

    async def _read(self, work: Callable[[PoolConnectionProxy], Awaitable[T]]) -> T:
        """``work`` on a pooled connection, bounded; an outage is ``LedgerUnavailable``."""
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    async with self._pool.acquire() as conn:
                        return await work(conn)
            except _LOST:
                if attempt == 2:
                    raise LedgerUnavailable(f"{self.url}: the connection was lost") from None
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                raise LedgerUnavailable(f"{self.url}: {exc or type(exc).__name__}") from None
        raise AssertionError("unreachable")

    async def _find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        """The journal's rows, the rest from PostgreSQL. While PostgreSQL cannot answer, what
        the journal holds is answered alone (a ping still waiting here, with its post if this
        host recorded one); a lookup the journal has nothing for raises."""
        found = await self._journal.find(lookups)
        missing = [i for i, row in enumerate(found) if row is None]
        if missing:
            async def fetch(conn: PoolConnectionProxy) -> list[Row | None]:
                rows = []
                for i in missing:
                    table, key = lookups[i]
                    record = await conn.fetchrow(_SELECT[table], key)
                    rows.append(None if record is None else tuple(record))
                return rows
            try:
                fetched = await self._read(fetch)
            except LedgerUnavailable:
                if len(missing) == len(found):
                    raise
                return found
            for i, row in zip(missing, fetched, strict=True):
                found[i] = row
        return found

    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        """PostgreSQL's counts plus the journal's sales it does not have yet. The journal is
        read first and PostgreSQL in one snapshot after it, so a sale forwarded in between is
        counted once, from PostgreSQL."""
        if campaign_ids is not None and not campaign_ids:
            return {}
        pending = await self._journal.sales()

        async def query(conn: PoolConnectionProxy) -> tuple[list[Any], set[str]]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if campaign_ids is None:
                    counted = await conn.fetch(_SOLD_COUNTS, since_hour, since_day)
                else:
                    counted = await conn.fetch(_SOLD_COUNTS_OF, since_hour, since_day, list(campaign_ids))
                present = await conn.fetch("SELECT lead_id FROM sales WHERE lead_id = ANY($1)",
                                           [row[0] for row in pending]) if pending else []
            return counted, {record[0] for record in present}

        counted, present = await self._read(query)
        counts = {cid: SoldCount(hourly, daily, cents) for cid, hourly, daily, cents in counted}
        count_sales(counts, [row for row in pending if row[0] not in present], since_hour, since_day, campaign_ids)
        return counts

    async def drop_traffic_before(self, cutoff: float) -> int:
        async def chunk(conn: PoolConnectionProxy) -> int:
            async with conn.transaction():
                return sum([int((await conn.execute(statement, cutoff)).split()[-1]) for statement in _DROP])

        dropped = 0
        while n := await self._read(chunk):
            dropped += n
        return dropped

    # The forwarder -----------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        """The forwarder's own connection: migrated, with its temp tables, made when needed."""
        if self._conn is None or self._conn.is_closed():
            async with asyncio.timeout(2 * CONNECT_TIMEOUT_S):
                conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
                try:
                    await migrate_postgres(conn)
                    for table in TABLES:
                        await conn.execute(f"CREATE TEMP TABLE incoming_{table} (LIKE {table}) ON COMMIT DELETE ROWS")
                except BaseException:
                    conn.terminate()
                    raise
            self._conn = conn
        return self._conn

    async def _forward(self) -> int:
        """Move the oldest batch of entries to PostgreSQL; how many were moved."""
        pending = await self._journal.pending(FORWARD_BATCH)
        if not pending:
            return 0
        by_table: dict[str, list[Row]] = {}
        for _, rows in pending:
            for table, row in rows:
                by_table.setdefault(table, []).append(row)
        conn = await self._connection()
        async with asyncio.timeout(FORWARD_TIMEOUT_S):
            async with conn.transaction():
                for table, rows in by_table.items():
                    await conn.copy_records_to_table(f"incoming_{table}", records=rows, columns=TABLES[table])
                    await conn.execute(_MOVE[table])
        await self._journal.forwarded(pending[-1][0])
        self.forwarded += len(pending)
        return len(pending)

    async def _forward_forever(self) -> None:
        """Forward until ``close``, which sets ``_closing``: after one last pass (while
        PostgreSQL answers) the loop returns by itself. Shutdown does not rest on
        cancellation alone: Python 3.11's ``wait_for`` can swallow a cancel."""
        pause = RETRY_MIN_S
        failing = False
        while True:
            self._wake.clear()
            try:
                moved = await self._forward() if self._journal.claim() else 0
                await self._recount()
            except Exception as exc:
                if self._closing:
                    return
                if not failing:
                    log.warning("ledger database unreachable; records wait in the journal", extra={"event": {
                        "event": "ledger", "ledger": self.url, "error": str(exc) or type(exc).__name__,
                        "backlog": self._backlog}})
                failing = True
                self._drop_connection()
                await asyncio.sleep(pause)
                pause = min(2 * pause, RETRY_MAX_S)
                continue
            if failing:
                log.info("ledger database reachable again", extra={"event": {
                    "event": "ledger", "ledger": self.url, "backlog": self._backlog}})
            failing, pause = False, RETRY_MIN_S
            if not moved:
                if self._closing:
                    return
                try:
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def close(self) -> None:
        """Stop the forwarder after a last pass at emptying the journal, bounded by
        ``CLOSE_TIMEOUT_S``; what is left stays in the journal for the next start."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            self._closing = True
            self._wake.set()
            await asyncio.wait([forwarder], timeout=CLOSE_TIMEOUT_S)
            while not forwarder.done():
                forwarder.cancel()
                await asyncio.wait([forwarder], timeout=RETRY_MAX_S)
        await self._release()

    async def _release(self) -> None:
        self._drop_connection()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()
        await self._journal.close()
