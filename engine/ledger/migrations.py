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

from . import frozen_2, rollups
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


#: Migration 6. A lead's data row gains the keyed hashes of its email and phone (what a
#: deletion finds it by) and when it was erased. privacy_keys holds the keys of the books
#: themselves, wrapped by the operator's key ("identifiers": the key of every keyed hash).
#: suppressions is the opt-out list, numbered in the order entries were committed (writers
#: take a lock first), which is how every worker's copy catches up.
_PRIVACY = (
    "ALTER TABLE lead_data ADD COLUMN email_hash {blob}",
    "ALTER TABLE lead_data ADD COLUMN phone_hash {blob}",
    "ALTER TABLE lead_data ADD COLUMN erased_at DOUBLE PRECISION",
    "CREATE INDEX lead_data_email ON lead_data (email_hash)",
    "CREATE INDEX lead_data_phone ON lead_data (phone_hash)",
    "CREATE INDEX lead_data_kept ON lead_data (created_at) WHERE erased_at IS NULL",
    """CREATE TABLE privacy_keys (
        name TEXT PRIMARY KEY,
        key_wrapped {blob} NOT NULL,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE suppressions (
        seq {serial},
        hash {blob} NOT NULL UNIQUE,
        added_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE privacy_requests (
        request_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        completed_at DOUBLE PRECISION,
        leads_erased INTEGER NOT NULL)""",
    "CREATE INDEX privacy_requests_received ON privacy_requests (received_at)",
)

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
    Migration(frozen_2.DESCRIPTION, frozen_2.SQLITE, frozen_2.POSTGRES),
    # NULL for the pings recorded before: they were ranked by bid.
    shared("the rule that ranked each ping's bids", "ALTER TABLE pings ADD COLUMN ranking TEXT"),
    shared(
        "returns, the money entries they book, the buyers' outcomes; a buyer's sales by time",
        # One return per lead (lead_id unique); the sale's ids, prices and time are copied in,
        # so a decision reads one row. status: approved, pending or denied.
        """CREATE TABLE returns (
            return_id TEXT PRIMARY KEY,
            lead_id TEXT NOT NULL UNIQUE,
            ping_id TEXT NOT NULL,
            buyer_id TEXT NOT NULL,
            seller_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            test BOOLEAN NOT NULL,
            sold_at DOUBLE PRECISION NOT NULL,
            buyer_price_cents BIGINT NOT NULL,
            seller_price_cents BIGINT NOT NULL,
            reason TEXT NOT NULL,
            note TEXT,
            status TEXT NOT NULL,
            requested_at DOUBLE PRECISION NOT NULL,
            decided_at DOUBLE PRECISION,
            decided_by TEXT,
            decision_note TEXT)""",
        "CREATE INDEX returns_queue ON returns (status, requested_at, return_id)",
        "CREATE INDEX returns_requested ON returns (requested_at, return_id)",
        "CREATE INDEX returns_month ON returns (buyer_id, sold_at)",
        # Money moved after a sale, never an edit of the sale: kind buyer_credit (the buyer's
        # price back to the buyer) or seller_debit (the seller's price taken back from its payout).
        """CREATE TABLE money (
            entry_id TEXT PRIMARY KEY,
            return_id TEXT NOT NULL,
            lead_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            party_id TEXT NOT NULL,
            cents BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            test BOOLEAN NOT NULL)""",
        "CREATE INDEX money_party ON money (party_id, at)",
        # The latest outcome a buyer told of each lead it bought.
        """CREATE TABLE outcomes (
            lead_id TEXT PRIMARY KEY,
            buyer_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            value_cents BIGINT,
            reported_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX sales_buyer ON sales (buyer_id, sold_at)",
    ),
    Migration("counters kept behind the rows: buyer and campaign levels without sub_id; SQLite's marks",
              rollups.upgrade(postgres=False), rollups.upgrade(postgres=True)),
    Migration("privacy: lead data sealed and findable by keyed hashes, the books' keys, opt-outs, requests",
              *(tuple(s.format(blob=blob, serial=serial) for s in _PRIVACY)
                for blob, serial in (("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"), ("BYTEA", "BIGSERIAL PRIMARY KEY")))),
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
