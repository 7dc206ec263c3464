"""The exchange's own buyer protocol, the default format and the hot path of every ping.

Every buyer of one ping gets the same body but for two fields, so the body is encoded once
per ping (``PingBody``) and each buyer's bytes are one ``%`` away from it.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from .. import money
from ..schema import BidAnswer, BuyerPing, BuyerPost, PingFields, PostAnswer
from .results import Answer, BidResult, PostResult, clean_reason

_encode = msgspec.json.Encoder().encode
_read_bid_body = msgspec.json.Decoder(BidAnswer).decode
_read_post_body = msgspec.json.Decoder(PostAnswer).decode


class PingBody:
    """The buyers' ping bodies of one ping, encoded once: only ``campaign_id`` and
    ``tmax_ms`` differ between buyers, so they lead the object and the shared fields (the
    lead's non-personal ones only: the Struct has no others) follow as the same bytes."""

    __slots__ = ("_shared",)

    def __init__(self, ping: PingFields, ping_id: str, seller_id: str, test: bool) -> None:
        self._shared = _encode(BuyerPing(
            ping_id=ping_id, vertical=ping.vertical, zip=ping.zip, seller_id=seller_id, test=test,
            state=ping.state, source_id=ping.source_id, sub_id=ping.sub_id, quality_score=ping.quality_score,
            tcpa_consent=ping.tcpa_consent, email_sha256=ping.email_sha256, phone_sha256=ping.phone_sha256,
            attributes=ping.attributes,
        ))[1:]

    def to(self, campaign_id: str, tmax_ms: int) -> bytes:
        return b'{"campaign_id":%s,"tmax_ms":%d,%s' % (_encode(campaign_id), tmax_ms, self._shared)


def is_json(content_type: bytes) -> bool:
    """``application/json`` or ``application/<anything>+json``, any case, any parameters."""
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def answer_problem(answer: Answer) -> str | None:
    """Why an answer cannot be read as a 200 JSON answer (the reason for the trace), or None."""
    if answer.failure is not None:
        return answer.failure
    if answer.status != 200:
        return f"error:http_{answer.status}"
    if not is_json(answer.content_type):
        return "error:content_type"
    return None


def read_bid(answer: Answer) -> BidResult:
    """Every answer but a well-formed bid is a no-bid, with the reason kept for the trace."""
    if answer.status == 204 and answer.failure is None:
        return BidResult(None, None, "no_bid")
    problem = answer_problem(answer)
    if problem is not None:
        return BidResult(None, None, problem)
    try:
        parsed = _read_bid_body(answer.body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        bad_bid = str(exc).endswith("`$.bid`")
        return BidResult(None, None, "error:bad_bid" if bad_bid else "error:bad_answer")
    except (msgspec.DecodeError, RecursionError):  # the latter: an answer nested too deep to read
        return BidResult(None, None, "error:bad_json")
    bid = parsed.bid
    if bid is None or bid == 0:
        return BidResult(None, parsed.bid_id, "no_bid")
    if not math.isfinite(bid) or bid < 0:
        return BidResult(None, None, "error:bad_bid")
    cents = money.to_cents(bid)
    if cents == 0:
        return BidResult(None, parsed.bid_id, "no_bid")
    return BidResult(cents, parsed.bid_id, "bid")


def post_body(ping_id: str, bid_id: str | None, campaign_id: str, cents: int, test: bool,
              lead: dict[str, Any]) -> bytes:
    return _encode(BuyerPost(ping_id=ping_id, bid_id=bid_id, campaign_id=campaign_id,
                             price=money.to_amount(cents), test=test, lead=lead))


def read_post(answer: Answer) -> PostResult:
    """Only ``200 {"accepted": true}`` is a sale; anything else is a reject with a reason."""
    problem = answer_problem(answer)
    if problem is not None:
        return PostResult(False, None, "rejected:" + problem)
    try:
        parsed = _read_post_body(answer.body)
    except msgspec.ValidationError:  # a subclass of DecodeError: test it first
        return PostResult(False, None, "rejected:error:bad_answer")
    except (msgspec.DecodeError, RecursionError):  # the latter: an answer nested too deep to read
        return PostResult(False, None, "rejected:error:bad_json")
    if parsed.accepted:
        return PostResult(True, parsed.lead_id, "accepted")
    return PostResult(False, None, "rejected:" + clean_reason(parsed.reason))
