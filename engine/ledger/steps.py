"""A transaction written once for both backends: a generator of statements (sans I/O).

What follows a sale (a return filed or decided, an outcome) reads rows and decides what to
write from them, in one transaction. Written as a generator that yields each statement with
its parameters and is sent back its rows, the logic is the same code on both backends:
SQLite runs it on its writer's connection inside the group commit's ``BEGIN IMMEDIATE``
(``run``), PostgreSQL on a pooled connection inside a transaction (``run_async``). Statements
use ``?`` placeholders, numbered for PostgreSQL here.

A ``Lock`` step serializes the transactions that share its key across processes and hosts:
PostgreSQL takes a transaction-scoped advisory lock; SQLite needs none, since the writer
already holds the file's one write lock for the whole transaction.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Generator, NamedTuple, TypeVar

from . import sql
from .codec import Row

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

T = TypeVar("T")


class Lock(NamedTuple):
    """Hold ``key`` (in ``space``) until the transaction ends; with no key, the one lock
    ``space`` itself names (a 64-bit key, as the forwarder takes the counters' lock)."""

    space: int
    key: str | None = None


class Query(NamedTuple):
    statement: str
    params: tuple[Any, ...]


Step = Lock | Query
#: A transaction: yields steps, is sent each query's rows (nothing for a lock), returns its result.
Steps = Generator[Step, list[Row], T]
Transaction = Callable[[], Steps[T]]


def q(statement: str, *params: Any) -> Query:
    return Query(statement, params)


def run(transaction: Transaction[T], conn: sqlite3.Connection) -> T:
    """On a SQLite connection already in a transaction (or a read)."""
    steps = transaction()
    try:
        step = next(steps)
        while True:
            step = steps.send([] if isinstance(step, Lock) else conn.execute(step.statement, step.params).fetchall())
    except StopIteration as done:
        result: T = done.value
        return result


@lru_cache(maxsize=256)
def _numbered(statement: str) -> str:
    return sql.numbered(statement)


async def run_async(transaction: Transaction[T], conn: PoolConnectionProxy) -> T:
    """On a PostgreSQL connection already in a transaction."""
    steps = transaction()
    try:
        step = next(steps)
        while True:
            rows: list[Row] = []
            if isinstance(step, Lock) and step.key is None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", step.space)
            elif isinstance(step, Lock):
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", step.space, step.key)
            else:
                rows = [tuple(record) for record in await conn.fetch(_numbered(step.statement), *step.params)]
            step = steps.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result
