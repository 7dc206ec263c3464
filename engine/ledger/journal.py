"""The local journal in front of PostgreSQL: where a record is durable before PostgreSQL has it.

A record call is answered once its entry (the rows of one call, msgpack) is committed to
this SQLite file (WAL, synchronous=FULL, group commit); a forwarder then moves entries to
PostgreSQL in order and deletes them only after PostgreSQL committed them. Every worker of
a host writes the same journal file; one of them at a time forwards (it holds the lock file
beside the journal; when that worker dies the lock goes with it and another takes over).
Entries are deleted by sequence number: numbers are handed out under the file's write
lock, so everything at or below the last number read has been read.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from functools import partial
from typing import Sequence

from . import codec
from .base import LedgerError, LedgerUnavailable
from .codec import Entry, Row
from .writer import SqliteFile

#: The journal's own layout (PRAGMA user_version); it only ever holds entries not yet forwarded.
VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, ping_id TEXT NOT NULL, "
    "lead_id TEXT, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_ping_id ON entries (ping_id)",
    "CREATE INDEX IF NOT EXISTS entries_lead_id ON entries (lead_id) WHERE lead_id IS NOT NULL",
    # A copy of the books' identifier key (wrapped), for a host that starts while PostgreSQL
    # cannot be reached.
    "CREATE TABLE IF NOT EXISTS books_keys (name TEXT PRIMARY KEY, key_wrapped BLOB NOT NULL)",
)

#: The journal column each ledger table's key is found by.
_BY = {"pings": "ping_id", "posts": "ping_id", "sales": "lead_id", "lead_data": "lead_id"}


def _prepare(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise LedgerError(f"the journal's layout is at version {version}, newer than this pingpost knows "
                              f"({VERSION}); upgrade pingpost")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _append(entry: Entry, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO entries (ping_id, lead_id, body) VALUES (?, ?, ?)",
                 (entry.ping_id, entry.lead_id, codec.pack_rows(entry)))


def _pending(limit: int, conn: sqlite3.Connection) -> list[tuple[int, list[tuple[str, Row]]]]:
    return [(seq, codec.unpack_rows(body))
            for seq, body in conn.execute("SELECT seq, body FROM entries ORDER BY seq LIMIT ?", (limit,))]


def _forwarded(through: int, conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM entries WHERE seq <= ?", (through,))


def _find(lookups: Sequence[tuple[str, str]], conn: sqlite3.Connection) -> list[Row | None]:
    found: list[Row | None] = []
    for table, key in lookups:
        bodies = conn.execute(f"SELECT body FROM entries WHERE {_BY[table]} = ? ORDER BY seq", (key,))
        found.append(next((row for (body,) in bodies
                           if (row := codec.row_for(codec.unpack_rows(body), table, key)) is not None), None))
    return found


def _sales(conn: sqlite3.Connection) -> list[Row]:
    return [row for (body,) in conn.execute("SELECT body FROM entries WHERE lead_id IS NOT NULL")
            for table, row in codec.unpack_rows(body) if table == "sales"]


def _count(conn: sqlite3.Connection) -> int:
    count: int = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    return count


class Journal:
    def __init__(self, file: SqliteFile, lock_fd: int) -> None:
        self._file = file
        self._lock_fd = lock_fd
        self._leading = False

    @classmethod
    async def open(cls, path: str) -> "Journal":
        file = await SqliteFile.open(path, _prepare)
        try:
            lock_fd = await asyncio.to_thread(os.open, path + ".forwarder.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            await file.close()
            raise LedgerUnavailable(f"{path}: cannot open the forwarder lock: {exc}") from None
        return cls(file, lock_fd)

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def commits(self) -> int:
        return self._file.commits

    @property
    def failing(self) -> bool:
        return self._file.failing

    async def append(self, entry: Entry) -> None:
        """Returns once the entry is durable here."""
        await self._file.write(partial(_append, entry))

    async def pending(self, limit: int) -> list[tuple[int, list[tuple[str, Row]]]]:
        """The oldest entries not yet forwarded: (sequence number, rows)."""
        return await self._file.read(partial(_pending, limit))

    async def forwarded(self, through: int) -> None:
        """PostgreSQL committed every entry up to ``through``: forget them."""
        await self._file.write(partial(_forwarded, through))

    async def find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        return await self._file.read(partial(_find, lookups))

    async def sales(self) -> list[Row]:
        """Sales rows not yet forwarded."""
        return await self._file.read(_sales)

    async def count(self) -> int:
        return await self._file.read(_count)

    async def truncate_log(self) -> None:
        """The file's write-ahead log emptied (``SqliteFile.truncate_log``): after an erasure,
        no frame of a forwarded entry with the erased lead's key stays in it."""
        await self._file.truncate_log()

    async def books_key(self, name: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT key_wrapped FROM books_keys WHERE name = ?", (name,)).fetchone()
            return None if row is None else bytes(row[0])
        return await self._file.read(read)

    async def keep_books_key(self, name: str, wrapped: bytes) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO books_keys VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET key_wrapped = "
                         "excluded.key_wrapped", (name, wrapped))
        await self._file.write(write)

    def claim(self) -> bool:
        """Whether this process is (now) the host's forwarder: a non-blocking lock on the file
        beside the journal (no disk I/O), held until ``close`` or the process ends."""
        if not self._leading:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self._leading = True
        return True

    async def close(self) -> None:
        await self._file.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
