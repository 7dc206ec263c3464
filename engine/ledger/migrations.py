"""The ledger's schema, as ordered migrations the ledger applies to itself at open.

``schema_version`` holds one row per applied migration; a ledger opens at the newest
version this code knows and refuses one that is newer (written by a later pingpost). To
change the schema, append a ``Migration``: never edit one that has shipped. Both backends
share the SQL except for the binary type; a migration may give each backend its own
statements when they must differ.

Concurrent openers are serialized: SQLite by ``BEGIN IMMEDIATE`` (the write lock), PostgreSQL
by a transaction-scoped advisory lock, so two workers starting together migrate once.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import LedgerError

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class Migration:
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


def shared(description: str, *statements: str) -> Migration:
    """One migration for both backends; ``{blob}`` is the binary column type, ``{json}`` the
    JSON one (text that SQLite's json functions read; JSONB in PostgreSQL)."""
    return Migration(description, tuple(s.format(blob="BLOB", json="TEXT") for s in statements),
                     tuple(s.format(blob="BYTEA", json="JSONB") for s in statements))


#: Times are epoch seconds (double precision: a record reads back exactly as written),
#: money is integer cents, the trace parts are JSON, the lead's data an opaque blob.
MIGRATIONS: tuple[Migration, ...] = (
    shared(
        "pings, posts, sales and the lead data kept apart",
        """CREATE TABLE pings (
            ping_id TEXT PRIMARY KEY,
            seller_id TEXT NOT NULL,
            test BOOLEAN NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            auction_ms DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            price_cents BIGINT,
            vertical TEXT NOT NULL,
            zip TEXT NOT NULL,
            state TEXT,
            source_id TEXT,
            sub_id TEXT,
            quality_score INTEGER,
            fields {json} NOT NULL,
            bids {json} NOT NULL,
            outcomes {json} NOT NULL,
            not_pinged {json})""",
        "CREATE INDEX pings_created_at ON pings (created_at)",
        """CREATE TABLE posts (
            ping_id TEXT PRIMARY KEY,
            seller_id TEXT NOT NULL,
            test BOOLEAN NOT NULL,
            posted_at DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            price_cents BIGINT,
            lead_id TEXT,
            buyer_lead_id TEXT,
            offers {json} NOT NULL)""",
        "CREATE INDEX posts_posted_at ON posts (posted_at)",
        """CREATE TABLE sales (
            lead_id TEXT PRIMARY KEY,
            ping_id TEXT NOT NULL UNIQUE,
            campaign_id TEXT NOT NULL,
            buyer_id TEXT NOT NULL,
            seller_id TEXT NOT NULL,
            buyer_price_cents BIGINT NOT NULL,
            seller_price_cents BIGINT NOT NULL,
            sold_at DOUBLE PRECISION NOT NULL,
            test BOOLEAN NOT NULL,
            buyer_lead_id TEXT)""",
        "CREATE INDEX sales_sold_at ON sales (sold_at)",
        # The lead's personal data, one row per sold lead, so it can be erased without touching
        # a money row. key_wrapped is the lead's own data key, wrapped by the operator's key, once
        # lead data is encrypted; data is the encoded lead (NULL once erased).
        """CREATE TABLE lead_data (
            lead_id TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            key_wrapped {blob},
            data {blob})""",
    ),
)

LATEST = len(MIGRATIONS)

_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                  "applied_at DOUBLE PRECISION NOT NULL, description TEXT NOT NULL)")

#: pg_advisory_xact_lock key: "pingpost" as an integer, so no other application's lock collides.
_PG_LOCK = int.from_bytes(b"pingpost", "big") >> 1


def _pending(current: int) -> range:
    if current > LATEST:
        raise LedgerError(f"the ledger's schema is at version {current}, newer than this pingpost knows "
                          f"({LATEST}); upgrade pingpost")
    return range(current, LATEST)


def migrate_sqlite(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring a SQLite ledger (a connection in autocommit mode) to ``LATEST``; (from, to)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_VERSION_TABLE)
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        for number in _pending(current):
            for statement in MIGRATIONS[number].sqlite:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                         (number + 1, time.time(), MIGRATIONS[number].description))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return current, LATEST


async def migrate_postgres(conn: asyncpg.Connection) -> tuple[int, int]:
    """Bring a PostgreSQL ledger to ``LATEST``; (from, to)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK)
        await conn.execute(_VERSION_TABLE)
        current: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        for number in _pending(current):
            for statement in MIGRATIONS[number].postgres:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version VALUES ($1, $2, $3)",
                               number + 1, time.time(), MIGRATIONS[number].description)
    return current, LATEST
