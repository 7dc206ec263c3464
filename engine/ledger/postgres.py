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
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, TypeVar

import asyncpg

from ..privacy.keys import OperatorKey
from ..privacy.vault import IDENTIFIER_KEY, first_identifier_key
from . import codec, privacy, returns, rollups, sql
from .base import Ledger, LedgerError, LedgerUnavailable, SoldCount, tally_sales
from .codec import TABLES, Entry, Row
from .journal import Journal
from .migrations import migrate_postgres
from .returns import Purchase, PurchaseQuery
from .rollups import ROLLUP_LOCK, RollupQuery, RunningQuery
from .steps import Transaction, run_async

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
#: After a batch that was not full, how long the forwarder lets the next one gather.
GATHER_S = 1.0
#: How often the forwarder looks for entries other workers of the host wrote.
POLL_S = 0.5
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0
POOL_SIZE = 4
#: Tries of a transaction of what follows a sale that PostgreSQL aborted (a deadlock it broke,
#: a serialization failure): each try runs the transaction again from its first read.
WRITE_TRIES = 5
#: How long ``close`` lets the forwarder try to empty the journal.
CLOSE_TIMEOUT_S = 5.0

#: Refusals that are a wrong URL (user, password, database), not an outage: fail at open.
_MISCONFIGURED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
#: A connection that died under a read, or that had read PostgreSQL's last message (a
#: shutdown's or a terminated backend's FATAL) but not yet seen it hang up, whose next query
#: the driver refuses with an error of its own and drops it: the read is tried once more on
#: a fresh connection.
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, asyncpg.InternalClientError)

_SELECT = {table: sql.numbered(sql.select(table)) for table in TABLES}
_MOVE = {table: f"INSERT INTO {table} ({', '.join(TABLES[table])}) SELECT {', '.join(TABLES[table])} "
                f"FROM incoming_{table} ON CONFLICT DO NOTHING" for table in TABLES}
# The ping and post rows that were new (not resent) are the ones the counters count, in the
# same transaction: an entry forwarded again adds no row and so counts nothing.
_COUNTED = ("pings", "posts")
_MOVE.update({table: f"{_MOVE[table]} RETURNING ping_id" for table in _COUNTED})
_ROWS_OF = {table: f"SELECT {', '.join(TABLES[table])} FROM {table} WHERE ping_id = ANY($1)" for table in _COUNTED}
_WRITES = {statement: sql.numbered(statement) for statement, _ in rollups.writes({})}
_LIVE_SALES = sql.numbered(sql.live_sales())
_LIVE_SALES_OF = sql.numbered(sql.live_sales("AND campaign_id = ANY(?)"))
_DROP = (sql.numbered(sql.DROP_POSTS), sql.numbered(sql.DROP_PINGS))
_ERASE_ARRIVED = sql.numbered(privacy.ERASE_IF_SUPPRESSED.format(ids="SELECT lead_id FROM incoming_lead_data"))


class _AbandonedCopy(logging.Filter):
    """asyncpg makes a COPY's result future before it checks that the connection can start one.
    When PostgreSQL's last message was read between two statements of the forwarder's
    transaction, the COPY fails at once (the forwarder drops the connection and resends the
    batch, and logs the outage), and the connection's loss then sets an exception on that
    future which nothing awaits: asyncio would log an error for an outage already handled.
    This drops that one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, asyncpg.ConnectionDoesNotExistError)
                    and record.getMessage().startswith("Future exception was never retrieved"))


_ABANDONED_COPY = _AbandonedCopy()


async def _write_counts(conn: asyncpg.Connection, counts: rollups.Counts) -> None:
    """Add counts to the counters in the caller's transaction, one host at a time."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", ROLLUP_LOCK)
    for statement, rows in rollups.writes(counts):
        if rows:
            await conn.executemany(_WRITES[statement], rows)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresLedger(Ledger):
    #: A sale this host just made can still be in its journal: a return or outcome of it waits
    #: for the forwarder (about a second while PostgreSQL answers).
    wait_for_sale_s = 10.0

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
        logging.getLogger("asyncio").addFilter(_ABANDONED_COPY)  # once: a filter already there is not added again
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

    @property
    def writable(self) -> bool:
        return not self._journal.failing

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

    async def _read_steps(self, transaction: Transaction[T]) -> T:
        async def work(conn: PoolConnectionProxy) -> T:
            return await run_async(transaction, conn)
        return await self._read(work)

    async def _write_steps(self, transaction: Transaction[T]) -> T:
        """In PostgreSQL, in one transaction (never through the journal: what follows a
        sale is decided against every host's records, so it needs the shared books); tried
        again when PostgreSQL aborted it."""
        async def work(conn: PoolConnectionProxy) -> T:
            for attempt in range(1, WRITE_TRIES + 1):
                try:
                    async with conn.transaction():
                        return await run_async(transaction, conn)
                except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                    if attempt == WRITE_TRIES:
                        raise
            raise AssertionError("unreachable")
        return await self._read(work)

    async def purchases(self, query: PurchaseQuery) -> list[Purchase]:
        """PostgreSQL's and the journal's sales it does not have yet, read as ``sold_counts`` reads
        them (the journal first), so a sale forwarded in between is listed once."""
        pending = [sale for sale in map(codec.sale_of, await self._journal.sales()) if returns.wanted(query, sale)]
        stored = await super().purchases(query)
        known = {purchase.sale.lead_id for purchase in stored}
        waiting = [sale for sale in pending if sale.lead_id not in known]
        if not waiting:
            return stored
        found = await self._find([lookup for sale in waiting
                                  for lookup in (("lead_data", sale.lead_id), ("pings", sale.ping_id))])
        for i, sale in enumerate(waiting):
            data, ping = found[2 * i], found[2 * i + 1]
            stored.append(Purchase(sale, None if data is None else self.open_lead(data[0], data[2], data[3]),
                                   None if ping is None else codec.record_of(ping, None).ping, None))
        stored.sort(key=lambda purchase: (purchase.sale.sold_at, purchase.sale.lead_id), reverse=True)
        return stored[:query.limit]

    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        """PostgreSQL's sales and the journal's it does not have yet, counted together. The
        journal is read first and PostgreSQL in one snapshot after it, so a sale forwarded in
        between is counted once, from PostgreSQL."""
        if campaign_ids is not None and not campaign_ids:
            return {}
        pending = await self._journal.sales()

        async def query(conn: PoolConnectionProxy) -> tuple[list[Any], set[str]]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if campaign_ids is None:
                    stored = await conn.fetch(_LIVE_SALES, since_day)
                else:
                    stored = await conn.fetch(_LIVE_SALES_OF, since_day, list(campaign_ids))
                present = await conn.fetch("SELECT lead_id FROM sales WHERE lead_id = ANY($1)",
                                           [row[0] for row in pending]) if pending else []
            return stored, {record[0] for record in present}

        stored, present = await self._read(query)
        rows = [tuple(record) for record in stored] + [row for row in pending if row[0] not in present]
        return tally_sales(rows, since_hour, since_day, campaign_ids)

    async def rollups(self, query: RollupQuery | RunningQuery) -> list[Row]:
        """From PostgreSQL alone: what waits in a journal counts once it is forwarded (within
        about a second, while PostgreSQL answers)."""
        statement, params = rollups.select(query)

        async def fetch(conn: PoolConnectionProxy) -> list[Row]:
            return [tuple(record) for record in await conn.fetch(sql.numbered(statement), *params)]
        return await self._read(fetch)

    async def _books_key(self, key: OperatorKey) -> bytes:
        """From PostgreSQL, kept in the journal too; while PostgreSQL cannot be reached, the
        journal's copy, or (a host's first start) the key new books start with, which is
        the books' key unless the operator's key was rotated since they were made."""
        try:
            wrapped = await super()._books_key(key)
        except LedgerUnavailable as exc:
            kept = await self._journal.books_key(IDENTIFIER_KEY)
            log.warning("books' keys from the journal", extra={"event": {
                "event": "ledger", "ledger": self.url, "error": str(exc), "copy": kept is not None}})
            return kept if kept is not None else first_identifier_key(key)
        await self._journal.keep_books_key(IDENTIFIER_KEY, wrapped)
        return wrapped

    async def _seal_plain(self) -> None:
        try:
            await super()._seal_plain()
        except LedgerUnavailable:
            pass  # sealed at the next start that reaches PostgreSQL

    async def _scrub(self) -> None:
        """Erased rows' dead versions reclaimed (PostgreSQL's own log and backups keep theirs
        until they are recycled: see docs/privacy.md), and the journal's log emptied of
        forwarded entries (the journal zeroes an entry's pages as it deletes it)."""
        async def vacuum(conn: PoolConnectionProxy) -> None:
            await conn.execute("VACUUM lead_data")
        try:
            await self._read(vacuum)
        except LedgerUnavailable as exc:
            log.warning("vacuum postponed", extra={"event": {"event": "privacy", "error": str(exc)}})
        await self._journal.truncate_log()

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
                fresh: dict[str, list[str]] = {}
                for table, rows in by_table.items():
                    await conn.copy_records_to_table(f"incoming_{table}", records=rows, columns=TABLES[table])
                    if table in _COUNTED:
                        fresh[table] = [record[0] for record in await conn.fetch(_MOVE[table])]
                    else:
                        await conn.execute(_MOVE[table])
                if "lead_data" in by_table:
                    await conn.execute(_ERASE_ARRIVED, time.time())
                if any(fresh.values()):
                    await self._count(conn, fresh, {row[0]: row for row in by_table.get("pings", ())},
                                      {row[0]: row for row in by_table.get("posts", ())})
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
            elif moved < FORWARD_BATCH and not self._closing:
                # Let the next batch gather: the counters pay one upsert per key per batch,
                # so a batch of a second's records costs far less than many small ones.
                await asyncio.sleep(GATHER_S)

    async def _count(self, conn: asyncpg.Connection, fresh: dict[str, list[str]], pings: dict[str, Row],
                     posts: dict[str, Row]) -> None:
        """Add the fresh rows to the counters, in the caller's transaction. A post's ping row
        is in this batch, or in PostgreSQL from an earlier one."""
        missing = [ping_id for ping_id in fresh.get("posts", ()) if ping_id not in pings]
        if missing:
            pings.update({record[0]: tuple(record) for record in await conn.fetch(_ROWS_OF["pings"], missing)})
        counts: rollups.Counts = {}
        for ping_id in fresh.get("pings", ()):
            rollups.count_rows(counts, pings.get(ping_id), None)
        for ping_id in fresh.get("posts", ()):
            rollups.count_rows(counts, pings.get(ping_id), posts[ping_id])
        await _write_counts(conn, counts)

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
