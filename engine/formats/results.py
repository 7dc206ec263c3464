"""What a buyer call brings back and what a format makes of it: the values that cross
between the I/O (``buyers``) and the formats, which know nothing of each other."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Largest answer a buyer may send; larger ones are refused unread.
MAX_ANSWER = 64 * 1024
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(slots=True)
class Answer:
    """A buyer's HTTP answer, or the transport failure that stood in for one."""

    status: int = 0
    body: bytes = b""
    failure: str | None = None
    content_type: bytes = b""
    ms: float = 0.0


@dataclass(slots=True)
class BidResult:
    cents: int | None
    bid_id: str | None
    outcome: str


@dataclass(slots=True)
class PostResult:
    accepted: bool
    lead_id: str | None
    outcome: str


def clean_reason(reason: str | None) -> str:
    """A buyer's free-text reason, cut to a short safe token for traces, logs and labels.
    ``timeout`` is the exchange's own word for a post that got no answer, so a buyer that
    says it is recorded as ``buyer_timeout``."""
    cleaned = _REASON_UNSAFE.sub("_", reason or "").strip("_")[:48]
    if cleaned == "timeout":
        return "buyer_timeout"
    return cleaned or "unspecified"
