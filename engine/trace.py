"""The records an auction leaves behind: what the post needs and what the seller may ask.

A ``PingRecord`` is written once per ping (bid or not) and a ``PostRecord`` once per post;
both are plain msgspec Structs so the memory store keeps them as objects and the Redis
store as msgpack, and a ledger can take them as they are.
"""

from __future__ import annotations

import datetime

import msgspec
from msgspec import Struct

from . import money
from .schema import CampaignOutcome, PingFields, PingTrace, PostTrace, Ranking


#: A campaign's ping outcomes that mean it was sent the ping (a fixed-price campaign bids
#: without a call and counts as sent), besides every ``SENT_PREFIX`` one: the buyer's own records.
SENT_OUTCOMES = ("bid", "no_bid", "timeout", "below_min_bid")
SENT_PREFIX = "error:"
#: Bids the auction saw from a campaign, whether or not they cleared the seller's minimum.
BID_OUTCOMES = ("bid", "below_min_bid")
#: A post offer's outcomes when the lead was sent to the buyer (what ``attempts`` counts):
#: ``ACCEPTED`` or a ``REJECTED_PREFIX`` one; ``duplicate``, ``capped`` and ``skipped:*`` were not.
ACCEPTED = "accepted"
REJECTED_PREFIX = "rejected:"


def was_sent(outcome: str) -> bool:
    return outcome in SENT_OUTCOMES or outcome.startswith(SENT_PREFIX)


def was_offered(outcome: str) -> bool:
    return outcome == ACCEPTED or outcome.startswith(REJECTED_PREFIX)


class RankedBid(Struct, array_like=True):
    campaign_id: str
    cents: int
    bid_id: str | None = None


class PostRecord(Struct, kw_only=True):
    status: str
    attempts: int
    offers: list[CampaignOutcome]
    price_cents: int | None = None
    lead_id: str | None = None
    buyer_lead_id: str | None = None


class PingRecord(Struct, kw_only=True):
    ping_id: str
    seller_id: str
    test: bool
    created_at: float
    expires_at: float
    auction_ms: float
    ping: PingFields
    bids: list[RankedBid]
    outcomes: list[CampaignOutcome]
    not_pinged: dict[str, int] | None = None
    price_cents: int | None = None
    post: PostRecord | None = None
    #: The rule that ordered ``bids`` (``[exchange] ranking``); records made before there
    #: was a choice were ranked by bid.
    ranking: Ranking = "bid"

    @property
    def status(self) -> str:
        """What the seller was told: a price means a bid."""
        return "bid" if self.price_cents is not None else "no_bid"


pack = msgspec.msgpack.Encoder().encode
_unpack_record = msgspec.msgpack.Decoder(PingRecord).decode
_unpack_post = msgspec.msgpack.Decoder(PostRecord).decode


def unpack(record: bytes | None, post: bytes | None) -> PingRecord | None:
    """A stored record (msgpack), with its post result if one was stored."""
    if record is None:
        return None
    found = _unpack_record(record)
    if post is not None:
        found.post = _unpack_post(post)
    return found


def rfc3339(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_trace(record: PingRecord) -> PingTrace:
    """The seller-facing view of a record (GET /v1/pings/{ping_id})."""
    trace = PingTrace(
        ping_id=record.ping_id,
        status=record.status,  # type: ignore[arg-type]
        test=record.test,
        created_at=rfc3339(record.created_at),
        expires_at=rfc3339(record.expires_at),
        auction_ms=record.auction_ms,
        ranking=record.ranking,
        campaigns=record.outcomes,
    )
    if record.not_pinged is not None:
        trace.not_pinged = record.not_pinged
    if record.price_cents is not None:
        trace.price = money.to_amount(record.price_cents)
    post = record.post
    if post is not None:
        trace.post = PostTrace(status=post.status, attempts=post.attempts, offers=post.offers)  # type: ignore[arg-type]
        if post.price_cents is not None:
            trace.post.price = money.to_amount(post.price_cents)
        if post.lead_id is not None:
            trace.post.lead_id = post.lead_id
    return trace
