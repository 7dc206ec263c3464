"""Fixtures of the tests that run one body over both ledgers: ``url`` is a fresh SQLite file
or a fresh database on the suite's PostgreSQL server, ``opened`` the books at it, with the
tests' operator key and a journal of their own. For exchanges on several workers or hosts,
``backend`` is each of sqlite and postgresql in turn and ``await open_books(host)`` the books
of one worker (SQLite: every worker of one host on one file) or of one host (PostgreSQL: one
database, a journal per host). Registered for every test (tests/conftest.py), after the
PostgreSQL fixtures' own module's imports."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from pingpost import ledger
from pingpost.ledger import Ledger
from tests.pg_support import postgres_server, postgres_url  # noqa: F401  (the fixtures below ask for postgres_url)
from tests.support.exchange import RunningExchange
from tests.support.keys import TEST_KEY


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def opened(url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    yield books
    await books.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_books(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[int], Awaitable[Ledger]]:
    url = (f"sqlite:///{tmp_path / 'books.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("postgres_url")))

    async def open_(host: int = 0) -> Ledger:
        return await ledger.open(url, journal=tmp_path / f"journal-{host}.db", key=TEST_KEY)
    return open_


async def drained(*exchanges: RunningExchange) -> None:
    """Every host's journal forwarded (nothing to wait for with SQLite)."""
    deadline = time.monotonic() + 30
    for ex in exchanges:
        while ex.ledger.backlog():
            assert time.monotonic() < deadline, "the journal did not drain"
            await asyncio.sleep(0.02)
