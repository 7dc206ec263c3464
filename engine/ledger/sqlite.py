"""The embedded ledger: one SQLite file that every worker of a host writes.

Each process has one writer thread (``writer.SqliteFile``) that group-commits the rows of
every record call that arrived while it was committing the last batch; processes take
turns on the file's write lock. A record call returns when its batch is fsync'd.

The counters reports read are kept a few seconds behind the rows, not in each record's
commit (where they would cost statements per campaign per commit, and pages per fsync):
every ``COUNT_EVERY_S``, and before every report, the reading thread tallies the ping and post
rows past the rowid each table is counted through (``rollup_marks``), whichever process wrote
them, and one short write adds the tally to the counters and moves the marks on, if no other
process moved them meanwhile. The marks move in the write that adds, so every row counts
exactly once, whatever dies when. Retention drops only counted rows, and brings a mark
down to the highest rowid left, since a new row takes the rowid after the highest.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from functools import partial
from typing import NamedTuple, Sequence, TypeVar

from . import privacy, rollups, sql, steps
from .base import Ledger, LedgerUnavailable, SoldCount, tally_sales
from .codec import TABLES, Entry, Row
from .migrations import migrate_sqlite
from .rollups import MARKS, RollupQuery, RunningQuery
from ..trace import PingRecord, PostRecord
from .writer import SqliteFile

log = logging.getLogger("pingpost.ledger")
T = TypeVar("T")

#: How often a process adds what was recorded to the counters: the counts of every record of
#: that long go in together, one upsert per key (a report counts what is left itself first).
COUNT_EVERY_S = 4.0
#: Rows of each table one tally takes (the rest wait for the next).
COUNT_CHUNK = 20_000
#: How long the records this process wrote are kept for counting from (beyond, their rows are
#: counted from the tables: another process counted them already, or will).
HOLD_S = 60.0

#: Records this process wrote, by (table, ping_id): (when, the ping's record, the post's result).
Held = dict[tuple[str, str], tuple[float, PingRecord, PostRecord | None]]

_INSERT = {table: sql.insert(table) for table in TABLES}
_ERASE_IF_SUPPRESSED = privacy.ERASE_IF_SUPPRESSED.format(ids="?")
_SELECT = {table: sql.select(table) for table in TABLES}
#: The keys of the rows past a mark (their whole rows are read only when no record is held).
_PAST = {table: f"SELECT rowid, ping_id FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT {COUNT_CHUNK}"
         for table in ("pings", "posts")}
_DROP = (sql.counted_only(sql.DROP_POSTS, "posts", MARKS), sql.counted_only(sql.DROP_PINGS, "pings", MARKS))
#: After retention: a mark above every rowid left comes down to the highest one, since a new
#: row takes the rowid after the highest.
_LOWER_MARKS = tuple(f"UPDATE {MARKS} SET counted_through = min(counted_through, "
                     f"coalesce((SELECT max(rowid) FROM {table}), 0)) WHERE name = '{table}'" for table in _PAST)


def _insert(entry: Entry, conn: sqlite3.Connection) -> None:
    for table, row in entry.rows:
        conn.execute(_INSERT[table], row)
        if table == "lead_data":
            conn.execute(_ERASE_IF_SUPPRESSED, (row[1], row[0]))


class Tally(NamedTuple):
    """What the rows past the marks add up to, and the marks they were read from and reach."""

    counts: rollups.Counts
    marks: dict[str, tuple[int, int]]
    more: bool


def _tally(held: Held, conn: sqlite3.Connection) -> Tally:
    """Count the rows past the marks, outside any write (the reader's connection): from the
    records in ``held`` when this process wrote them, else from the rows."""
    counts: rollups.Counts = {}
    marks: dict[str, tuple[int, int]] = {}
    more = False
    for table, past in _PAST.items():
        (mark,) = conn.execute(f"SELECT counted_through FROM {MARKS} WHERE name = ?", (table,)).fetchone()
        found = conn.execute(past, (mark,)).fetchall()
        for _, ping_id in found:
            kept = held.pop((table, ping_id), None)
            if kept is not None:
                rollups.count_records(counts, kept[1], kept[2])
                continue
            ping = conn.execute(_SELECT["pings"], (ping_id,)).fetchone()
            rollups.count_rows(counts, ping, None if table == "pings" else
                               conn.execute(_SELECT["posts"], (ping_id,)).fetchone())
        marks[table] = (mark, found[-1][0] if found else mark)
        more = more or len(found) == COUNT_CHUNK
    return Tally(counts, marks, more)


def _apply(tally: Tally, conn: sqlite3.Connection) -> bool:
    """Add a tally to the counters and move the marks on, in one short write, if the marks
    are still where the tally read them; False when another process counted meanwhile."""
    for table, (mark, _) in tally.marks.items():
        if conn.execute(f"SELECT counted_through FROM {MARKS} WHERE name = ?", (table,)).fetchone()[0] != mark:
            return False
    for statement, rows in rollups.writes(tally.counts):
        if rows:
            conn.executemany(statement, rows)
    for table, (mark, reached) in tally.marks.items():
        if reached != mark:
            conn.execute(f"UPDATE {MARKS} SET counted_through = ? WHERE name = ?", (reached, table))
    return True


def _rollups(statement: str, params: list[object], conn: sqlite3.Connection) -> list[Row]:
    return conn.execute(statement, params).fetchall()


def _find(lookups: Sequence[tuple[str, str]], conn: sqlite3.Connection) -> list[Row | None]:
    return [conn.execute(_SELECT[table], (key,)).fetchone() for table, key in lookups]


def _sold_counts(since_hour: float, since_day: float, campaign_ids: Sequence[str] | None,
                 conn: sqlite3.Connection) -> dict[str, SoldCount]:
    params: list[object] = [since_day]
    where = ""
    if campaign_ids is not None:
        where = f"AND campaign_id IN ({', '.join('?' * len(campaign_ids))})"
        params.extend(campaign_ids)
    return tally_sales(conn.execute(sql.live_sales(where), params), since_hour, since_day, campaign_ids)


def _drop_chunk(cutoff: float, conn: sqlite3.Connection) -> int:
    dropped = sum(conn.execute(statement, (cutoff,)).rowcount for statement in _DROP)
    for statement in _LOWER_MARKS:
        conn.execute(statement)
    return dropped


class SqliteLedger(Ledger):
    def __init__(self, url: str, file: SqliteFile) -> None:
        self.url = url
        self._file = file
        self._held: Held = {}
        self._counter: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, path: str) -> "SqliteLedger":
        """Open (migrating) and count what is not counted yet (after an upgrade: everything
        recorded before the counters, a chunk per transaction), then keep counting."""
        ledger = cls(url, await SqliteFile.open(path, migrate_sqlite))
        try:
            await ledger._count_all()
        except BaseException:
            await ledger._file.close()
            raise
        ledger._counter = asyncio.create_task(ledger._keep_counting())
        return ledger

    @property
    def commits(self) -> int:
        return self._file.commits

    @property
    def writable(self) -> bool:
        return not self._file.failing

    async def _append(self, entry: Entry) -> None:
        await self._file.write(partial(_insert, entry))
        if entry.record is not None:
            now = time.monotonic()
            for table, _ in entry.rows:
                if table in _PAST:
                    self._held[(table, entry.ping_id)] = (now, entry.record, entry.result)

    async def _count_all(self) -> None:
        """Count until nothing is past the marks: the rows are tallied by the reading thread
        (which takes the held records it counts out of ``_held``, each a single dictionary
        operation, so this loop's additions never race it), then added in one short write, so
        record commits never queue behind the counting itself."""
        while True:
            tally = await self._file.read(partial(_tally, self._held))
            if not tally.counts and all(mark == reached for mark, reached in tally.marks.values()):
                return
            if await self._file.write(partial(_apply, tally)) and not tally.more:
                return

    async def _keep_counting(self) -> None:
        while True:
            await asyncio.sleep(COUNT_EVERY_S)
            try:
                await self._count_all()
            except LedgerUnavailable as exc:
                log.warning("counting postponed", extra={"event": {"event": "rollups", "error": str(exc)}})
            stale = time.monotonic() - HOLD_S
            for key, (since, _, _) in list(self._held.items()):
                if since < stale:
                    self._held.pop(key, None)

    async def _find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        return await self._file.read(partial(_find, lookups))

    async def _read_steps(self, transaction: steps.Transaction[T]) -> T:
        return await self._file.read(partial(steps.run, transaction))

    async def _write_steps(self, transaction: steps.Transaction[T]) -> T:
        """In the writer's next group commit: its write lock is held for the whole
        transaction, which serializes it with every other process's writes."""
        return await self._file.write(partial(steps.run, transaction))

    async def rollups(self, query: RollupQuery | RunningQuery) -> list[Row]:
        """Everything recorded so far is counted first, so a report includes the records
        answered before it was asked."""
        try:
            await self._count_all()
        except LedgerUnavailable:
            pass  # the counters as they are: the rest counts once the disk takes it
        return await self._file.read(partial(_rollups, *rollups.select(query)))

    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        if campaign_ids is not None and not campaign_ids:
            return {}
        return await self._file.read(partial(_sold_counts, since_hour, since_day, campaign_ids))

    async def drop_traffic_before(self, cutoff: float) -> int:
        """Counts first: retention drops only counted rows."""
        await self._count_all()
        dropped = 0
        while chunk := await self._file.write(partial(_drop_chunk, cutoff)):
            dropped += chunk
        return dropped

    async def _scrub(self) -> None:
        """An erased row's page images out of the write-ahead log (the database's own pages
        were zeroed as it was erased: secure_delete)."""
        await self._file.truncate_log()

    async def close(self) -> None:
        """Count what is left, then close."""
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.cancel()
            await asyncio.gather(counter, return_exceptions=True)
            try:
                await self._count_all()
            except LedgerUnavailable:
                pass  # past the marks still: the next process to count counts it
        await self._file.close()
