"""Records to rows and back: the one place that knows the ledger's columns.

Each record call becomes an ``Entry``: the rows it adds, in table column order. The same
rows go into SQLite, into the local journal (msgpack) and into PostgreSQL, so what is read
back is the same whichever path a row took. The non-personal ping fields that reports
filter on have columns of their own; the whole ping, the ranked bids and every campaign's
outcome are kept as msgpack blobs, which rebuild the ``PingRecord`` exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import msgspec

from ..privacy.vault import Vault
from ..schema import CampaignOutcome, Lead, PingFields
from ..trace import PingRecord, PostRecord, RankedBid

Row = tuple[Any, ...]

#: Each table's columns, in the order rows carry them.
TABLES: dict[str, tuple[str, ...]] = {
    "pings": ("ping_id", "seller_id", "test", "created_at", "expires_at", "auction_ms", "status", "price_cents",
              "vertical", "zip", "state", "source_id", "sub_id", "quality_score",
              "fields", "bids", "outcomes", "not_pinged", "ranking"),
    "posts": ("ping_id", "seller_id", "test", "posted_at", "status", "attempts", "price_cents", "lead_id",
              "buyer_lead_id", "offers"),
    "sales": ("lead_id", "ping_id", "campaign_id", "buyer_id", "seller_id", "buyer_price_cents",
              "seller_price_cents", "sold_at", "test", "buyer_lead_id"),
    "lead_data": ("lead_id", "created_at", "key_wrapped", "data", "email_hash", "phone_hash", "erased_at"),
}

#: The column each table is unique on: what makes a resent row a no-op.
KEYS: dict[str, str] = {"pings": "ping_id", "posts": "ping_id", "sales": "lead_id", "lead_data": "lead_id"}


class Sale(msgspec.Struct, frozen=True, kw_only=True):
    """A sold lead as the books keep it: money in cents, no personal data."""

    lead_id: str
    ping_id: str
    campaign_id: str
    buyer_id: str
    seller_id: str
    buyer_price_cents: int
    seller_price_cents: int
    sold_at: float
    test: bool
    buyer_lead_id: str | None = None


class Entry(NamedTuple):
    """One record call's rows, with the keys the local journal finds them by, and the records
    they were made of (counted from as they are, when the same process counts them)."""

    ping_id: str
    lead_id: str | None
    rows: list[tuple[str, Row]]
    record: PingRecord | None = None
    result: PostRecord | None = None


_encode = msgspec.msgpack.Encoder().encode
_encode_json = msgspec.json.Encoder().encode
_fields = msgspec.json.Decoder(PingFields).decode
_bids = msgspec.json.Decoder(list[RankedBid]).decode
_outcomes = msgspec.json.Decoder(list[CampaignOutcome]).decode
_not_pinged = msgspec.json.Decoder(dict[str, int]).decode
_rows = msgspec.msgpack.Decoder(list[tuple[str, tuple[Any, ...]]]).decode


def _json(value: Any) -> str:
    """JSON text: a TEXT column in SQLite, JSONB in PostgreSQL."""
    return _encode_json(value).decode()


def _opt(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


def ping_entry(record: PingRecord) -> Entry:
    ping = record.ping
    row = (record.ping_id, record.seller_id, record.test, record.created_at, record.expires_at, record.auction_ms,
           record.status, record.price_cents, ping.vertical, ping.zip, _opt(ping.state), _opt(ping.source_id),
           _opt(ping.sub_id), _opt(ping.quality_score), _json(ping), _json(record.bids),
           _json(record.outcomes), None if record.not_pinged is None else _json(record.not_pinged), record.ranking)
    return Entry(record.ping_id, None, [("pings", row)], record)


def post_entry(record: PingRecord, result: PostRecord, lead: Lead, at: float, vault: Vault | None) -> Entry:
    """The post row; for a sale also the sale (the accepting campaign is the last offer, its
    price the ranked bid's exact cents) and the lead's data row, sealed by ``vault`` (a sale
    needs one). An unsold lead's personal data is not kept: nothing in the books needs it."""
    rows: list[tuple[str, Row]] = [("posts", (
        record.ping_id, record.seller_id, record.test, at, result.status, result.attempts, result.price_cents,
        result.lead_id, result.buyer_lead_id, _json(result.offers)))]
    lead_id = result.lead_id
    if result.status == "sold" and lead_id is not None and result.price_cents is not None:
        sold = result.offers[-1]
        buyer_cents = next(bid.cents for bid in record.bids if bid.campaign_id == sold.campaign_id)
        rows.append(("sales", (lead_id, record.ping_id, sold.campaign_id, sold.buyer_id, record.seller_id,
                               buyer_cents, result.price_cents, at, record.test, result.buyer_lead_id)))
        if vault is None:
            raise ValueError("a sale's lead is recorded sealed: these books were opened without the operator's key")
        rows.append(("lead_data", (lead_id, at, *vault.seal(lead_id, lead), None)))
    return Entry(record.ping_id, lead_id, rows, record, result)


def record_of(ping: Row, post: Row | None) -> PingRecord:
    """The record as it was made; a ping recorded before the ranking had a column (NULL) was
    ranked by bid."""
    (ping_id, seller_id, test, created_at, expires_at, auction_ms, _status, price_cents, *_columns,
     fields, bids, outcomes, not_pinged, ranking) = ping
    record = PingRecord(ping_id=ping_id, seller_id=seller_id, test=bool(test), created_at=created_at,
                        expires_at=expires_at, auction_ms=auction_ms, ping=_fields(fields), bids=_bids(bids),
                        outcomes=_outcomes(outcomes), price_cents=price_cents,
                        not_pinged=None if not_pinged is None else _not_pinged(not_pinged),
                        ranking=ranking or "bid")
    if post is not None:
        record.post = post_of(post)
    return record


def post_of(row: Row) -> PostRecord:
    _, _, _, _, status, attempts, price_cents, lead_id, buyer_lead_id, offers = row
    return PostRecord(status=status, attempts=attempts, offers=_outcomes(offers), price_cents=price_cents,
                      lead_id=lead_id, buyer_lead_id=buyer_lead_id)


def sale_of(row: Row) -> Sale:
    (lead_id, ping_id, campaign_id, buyer_id, seller_id, buyer_cents, seller_cents, sold_at, test,
     buyer_lead_id) = row
    return Sale(lead_id=lead_id, ping_id=ping_id, campaign_id=campaign_id, buyer_id=buyer_id, seller_id=seller_id,
                buyer_price_cents=buyer_cents, seller_price_cents=seller_cents, sold_at=sold_at, test=bool(test),
                buyer_lead_id=buyer_lead_id)


def fields_from(fields: str) -> PingFields:
    """A ping's non-personal fields from its ``fields`` column."""
    return _fields(fields)


def without_hashes(fields: str) -> str:
    """A ping's ``fields`` column without the hashed identifiers a seller may send (erasure)."""
    kept = msgspec.json.decode(fields)
    for name in ("email_sha256", "phone_sha256"):
        kept.pop(name, None)
    return _json(kept)


def pack_rows(entry: Entry) -> bytes:
    """An entry's rows as the local journal stores them."""
    return _encode(entry.rows)


def unpack_rows(body: bytes) -> list[tuple[str, Row]]:
    """An entry's rows from the local journal. A row journaled before its table gained
    columns gets them as NULL, as the migration that added them gave the rows in the books."""
    return [(table, row if len(row) == len(TABLES[table]) else row + (None,) * (len(TABLES[table]) - len(row)))
            for table, row in _rows(body)]


def row_for(rows: Sequence[tuple[str, Row]], table: str, key: str) -> Row | None:
    """The row of ``table`` whose key column is ``key``, among an entry's rows."""
    at = TABLES[table].index(KEYS[table])
    return next((row for name, row in rows if name == table and row[at] == key), None)
