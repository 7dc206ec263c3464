"""Records for the ledger tests, and the writer process the kill tests SIGKILL.

``python -m tests.ledger_support URL JOURNAL PREFIX COUNT CONCURRENCY`` opens the ledger and
records COUNT pings (every other one posted and sold) from CONCURRENCY tasks, printing each
ping_id on its own line only after its record calls returned: every printed id was answered.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from typing import Any

import asyncpg

from pingpost import ledger
from pingpost.ledger.base import sqlite_path
from pingpost.schema import CampaignOutcome, Lead, PingFields
from pingpost.trace import PingRecord, PostRecord, RankedBid
from tests.support.keys import TEST_KEY

#: Takes books back from schema version 6 (privacy) to 5, for the tests of books made before.
UNDO_PRIVACY = ["DROP INDEX lead_data_email", "DROP INDEX lead_data_phone", "DROP INDEX lead_data_kept",
                *(f"ALTER TABLE lead_data DROP COLUMN {column}" for column in ("email_hash", "phone_hash", "erased_at")),
                "DROP TABLE privacy_keys", "DROP TABLE suppressions", "DROP TABLE privacy_requests"]

LEAD = Lead(first_name="Ana", last_name="Lima", email="ana@example.com", phone="+15555550100", zip="90210",
            address="1 Main St", attributes={"age": 40})


async def read_rows(books: ledger.Ledger, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the books' database (SQLite's ``?`` marks, PostgreSQL's ``$n``)."""
    path = sqlite_path(books.url)
    if path is not None:
        with sqlite3.connect(path) as conn:
            return [tuple(row) for row in conn.execute(statement, params)]
    conn = await asyncpg.connect(books._dsn)  # type: ignore[attr-defined]
    try:
        return [tuple(row) for row in await conn.fetch(statement, *params)]
    finally:
        await conn.close()


def ping(ping_id: str, *, created_at: float = 1_700_000_000.125, test: bool = False, seller_id: str = "acme",
         campaign_id: str = "c1", cents: int = 725) -> PingRecord:
    """A priced ping: ``campaign_id`` bid ``cents`` and ranks first, c2 bid 500, c3 timed out."""
    return PingRecord(
        ping_id=ping_id, seller_id=seller_id, test=test, created_at=created_at, expires_at=created_at + 120,
        auction_ms=12.25,
        ping=PingFields(vertical="auto", zip="90210", state="CA", source_id="s1", sub_id="sub-9", quality_score=80,
                        tcpa_consent=True, attributes={"age": 40, "tags": ["a", True]}),
        bids=[RankedBid(campaign_id, cents, "bid-1"), RankedBid("c2", 500)],
        outcomes=[CampaignOutcome(campaign_id=campaign_id, buyer_id="b1", outcome="bid", bid=cents / 100, ms=3.5),
                  CampaignOutcome(campaign_id="c2", buyer_id="b2", outcome="bid", bid=5.0, ms=4.0),
                  CampaignOutcome(campaign_id="c3", buyer_id="b3", outcome="timeout", ms=100.0),
                  CampaignOutcome(campaign_id="c4", buyer_id="b3", outcome="capped")],
        not_pinged={"vertical": 9}, price_cents=cents * 7 // 10)


def no_bid(ping_id: str, *, created_at: float = 1_700_000_000.125) -> PingRecord:
    return PingRecord(ping_id=ping_id, seller_id="acme", test=False, created_at=created_at,
                      expires_at=created_at + 120, auction_ms=100.5, ping=PingFields(vertical="auto", zip="10001"),
                      bids=[], outcomes=[CampaignOutcome(campaign_id="c3", buyer_id="b3", outcome="no_bid", ms=8.0)])


def sold(record: PingRecord) -> PostRecord:
    """Sold to the first-ranked bid, after campaign c0 was skipped at its cap."""
    first = record.bids[0]
    return PostRecord(status="sold", attempts=1, price_cents=record.price_cents, lead_id="L-" + record.ping_id,
                      buyer_lead_id="buyer-7",
                      offers=[CampaignOutcome(campaign_id="c0", buyer_id="b0", outcome="capped", bid=9.0),
                              CampaignOutcome(campaign_id=first.campaign_id, buyer_id="b1", outcome="accepted",
                                              bid=first.cents / 100, ms=20.5)])


def unsold(record: PingRecord) -> PostRecord:
    return PostRecord(status="unsold", attempts=2, offers=[
        CampaignOutcome(campaign_id=bid.campaign_id, buyer_id="b1", outcome="rejected:not_interested",
                        bid=bid.cents / 100, ms=7.0) for bid in record.bids])


async def write(url: str, journal: str, prefix: str, count: int, concurrency: int) -> None:
    books = await ledger.open(url, journal=journal, key=TEST_KEY)
    numbers = iter(range(count))

    async def writer() -> None:
        for i in numbers:
            record = ping(f"{prefix}-{i}")
            await books.record_ping(record)
            if i % 2 == 0:
                await books.record_post(record, sold(record), LEAD)
            os.write(1, f"{record.ping_id}\n".encode())

    await asyncio.gather(*(writer() for _ in range(concurrency)))
    await books.close()


if __name__ == "__main__":
    url, journal, prefix, count, concurrency = sys.argv[1:]
    asyncio.run(write(url, journal, prefix, int(count), int(concurrency)))
