"""A SQLite file written with group commit: one writer thread per file and process.

The event loop never waits on the disk. A write puts its job on a queue and awaits a
future; the writer thread takes every job that arrived while it was committing the last
batch, runs them in one transaction and commits, and only then resolves their futures
(``call_soon_threadsafe``). The file is in WAL mode with ``synchronous=FULL``, so COMMIT
returns after the log is fsync'd: a resolved future means the rows survive a crash of the
process or of the machine. ``BEGIN IMMEDIATE`` takes the write lock up front, and other
processes writing the same file wait for it up to ``BUSY_TIMEOUT_S`` instead of failing
midway. Reads have their own thread and connection, which WAL lets run beside the writer.

The ledger's SQLite backend and the PostgreSQL backend's local journal are both such files.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple, TypeVar

from .base import LedgerUnavailable

log = logging.getLogger("pingpost.ledger")
T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]

#: How long a write waits for another process's transaction before the record call fails.
BUSY_TIMEOUT_S = 5.0

#: The most jobs one transaction takes; more wait for the next one.
MAX_BATCH = 1000


class _Job(NamedTuple):
    work: Work[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise LedgerUnavailable(f"{path}: write-ahead logging is not available (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            # What is deleted or overwritten is zeroed on its page, not left in free space.
            conn.execute("PRAGMA secure_delete=ON")
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        raise LedgerUnavailable(f"{path}: {exc}") from None
    return conn


class SqliteFile:
    """One SQLite file: ``write`` through the group-commit thread, ``read`` beside it."""

    def __init__(self, path: str, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self.path = path
        self.commits = 0
        #: Whether the last transaction failed; see ``Ledger.writable``.
        self.failing = False
        self._writer = writer
        self._reader = reader
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"ledger-writer:{path}", daemon=True)
        self._thread.start()
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="ledger-reader")

    @classmethod
    async def open(cls, path: str, prepare: Work[Any]) -> "SqliteFile":
        """Open (creating if need be) and ``prepare`` the file (migrations) before any write."""
        def opened() -> SqliteFile:
            writer = connect(path)
            try:
                prepare(writer)
                reader = connect(path)
            except sqlite3.Error as exc:
                writer.close()
                raise LedgerUnavailable(f"{path}: {exc}") from None
            except BaseException:
                writer.close()
                raise
            return cls(path, writer, reader)
        return await asyncio.to_thread(opened)

    def write(self, work: Work[T]) -> asyncio.Future[T]:
        """Run ``work`` in the next transaction; the future resolves once it is committed."""
        if self._closed:
            raise LedgerUnavailable(f"{self.path}: the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(work, future, loop))
        return future

    async def read(self, work: Work[T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reads, work, self._reader)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"{self.path}: {exc}") from None

    async def truncate_log(self, tries: int = 20) -> None:
        """Copy the write-ahead log into the database and empty it, so no page image older
        than the database's own (an erased row's, say) is left in the log file. Another
        process's reader can hold the log for a while: then it is logged, and the next call
        (or the last connection's close) empties it."""
        def checkpoint(conn: sqlite3.Connection) -> bool:
            busy: int = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            return busy == 0
        for _ in range(tries):
            if await self.read(checkpoint):
                return
            await asyncio.sleep(0.05)
        log.warning("log not truncated", extra={"event": {"event": "privacy", "file": self.path,
                                                          "error": "the write-ahead log is in use"}})

    async def close(self) -> None:
        """Commit what was handed over, then close both connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._writer.close()
        await asyncio.get_running_loop().run_in_executor(self._reads, self._reader.close)
        self._reads.shutdown()

    # The writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after committing this batch
                    break
                batch.append(job)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        conn = self._writer
        results: list[Any] = []
        error: Exception | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [job.work(conn) for job in batch]
            conn.execute("COMMIT")
            self.commits += 1
            self.failing = False
        except Exception as exc:
            self.failing = True
            error = LedgerUnavailable(f"{self.path}: {exc}") if isinstance(exc, sqlite3.Error) else exc
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the failed COMMIT already rolled back
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = defaultdict(list)
        for i, job in enumerate(batch):
            by_loop[job.loop].append((job.future, results[i] if error is None else None))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, settled, error)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more


def _resolve(settled: list[tuple[asyncio.Future[Any], Any]], error: Exception | None) -> None:
    for future, result in settled:
        if future.done():
            continue  # the caller stopped waiting (cancelled); the outcome stands all the same
        if error is None:
            future.set_result(result)
        elif isinstance(error, LedgerUnavailable):
            future.set_exception(LedgerUnavailable(*error.args))  # each waiter raises its own
        else:
            future.set_exception(error)
