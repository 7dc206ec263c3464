"""The embedded ledger: one SQLite file that every worker of a host writes.

Each process has one writer thread (``writer.SqliteFile``) that group-commits the rows of
every record call that arrived while it was committing the last batch; processes take
turns on the file's write lock. A record call returns when its batch is fsync'd.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Sequence

from . import sql
from .base import Ledger, SoldCount
from .codec import TABLES, Entry, Row
from .migrations import migrate_sqlite
from .writer import SqliteFile

_INSERT = {table: sql.insert(table) for table in TABLES}
_SELECT = {table: sql.select(table) for table in TABLES}


def _insert(entry: Entry, conn: sqlite3.Connection) -> None:
    for table, row in entry.rows:
        conn.execute(_INSERT[table], row)


def _find(lookups: Sequence[tuple[str, str]], conn: sqlite3.Connection) -> list[Row | None]:
    return [conn.execute(_SELECT[table], (key,)).fetchone() for table, key in lookups]


def _sold_counts(since_hour: float, since_day: float, campaign_ids: Sequence[str] | None,
                 conn: sqlite3.Connection) -> dict[str, SoldCount]:
    params: list[object] = [since_hour, since_day]
    where = ""
    if campaign_ids is not None:
        where = f"AND campaign_id IN ({', '.join('?' * len(campaign_ids))})"
        params.extend(campaign_ids)
    return {cid: SoldCount(hourly, daily, cents)
            for cid, hourly, daily, cents in conn.execute(sql.sold_counts(where), params)}


def _drop_chunk(cutoff: float, conn: sqlite3.Connection) -> int:
    return conn.execute(sql.DROP_POSTS, (cutoff,)).rowcount + conn.execute(sql.DROP_PINGS, (cutoff,)).rowcount


class SqliteLedger(Ledger):
    def __init__(self, url: str, file: SqliteFile) -> None:
        self.url = url
        self._file = file

    @classmethod
    async def open(cls, url: str, path: str) -> "SqliteLedger":
        return cls(url, await SqliteFile.open(path, migrate_sqlite))

    @property
    def commits(self) -> int:
        return self._file.commits

    async def _append(self, entry: Entry) -> None:
        await self._file.write(partial(_insert, entry))

    async def _find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        return await self._file.read(partial(_find, lookups))

    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        if campaign_ids is not None and not campaign_ids:
            return {}
        return await self._file.read(partial(_sold_counts, since_hour, since_day, campaign_ids))

    async def drop_traffic_before(self, cutoff: float) -> int:
        dropped = 0
        while chunk := await self._file.write(partial(_drop_chunk, cutoff)):
            dropped += chunk
        return dropped

    async def close(self) -> None:
        await self._file.close()
