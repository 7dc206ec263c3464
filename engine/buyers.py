"""The only place that talks to buyers.

Like a Prebid Server adapter, each message is a pair of pure functions, one that makes
the request bytes and one that reads the answer into a typed result. The I/O around them
(one keep-alive session per worker, per-call deadlines, cancellation, body caps) lives in
``BuyerClient`` and nowhere else, so every buyer gets the same misbehaviour handling.
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from dataclasses import dataclass
from typing import Any, Iterable

import aiohttp
import msgspec

from . import money
from .config import Campaign
from .schema import BidAnswer, BuyerPing, BuyerPost, PingFields, PostAnswer

#: Largest answer a buyer may send; larger ones are refused unread.
MAX_ANSWER = 64 * 1024
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")

_encode = msgspec.json.Encoder().encode
_read_bid_body = msgspec.json.Decoder(BidAnswer).decode
_read_post_body = msgspec.json.Decoder(PostAnswer).decode


@dataclass(slots=True)
class Answer:
    """A buyer's HTTP answer, or the transport failure that stood in for one."""

    status: int = 0
    body: bytes = b""
    failure: str | None = None
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


# Pure translations ------------------------------------------------------------------------


def ping_body(ping: PingFields, ping_id: str, campaign_id: str, seller_id: str, test: bool, tmax_ms: int) -> bytes:
    """The buyer's ping: the lead's non-personal fields only (the Struct has no others)."""
    return _encode(BuyerPing(
        ping_id=ping_id, campaign_id=campaign_id, vertical=ping.vertical, zip=ping.zip, seller_id=seller_id,
        test=test, tmax_ms=tmax_ms, state=ping.state, source_id=ping.source_id, sub_id=ping.sub_id,
        quality_score=ping.quality_score, tcpa_consent=ping.tcpa_consent, email_sha256=ping.email_sha256,
        phone_sha256=ping.phone_sha256, attributes=ping.attributes,
    ))


def read_bid(answer: Answer) -> BidResult:
    """Every answer but a well-formed bid is a no-bid, with the reason kept for the trace."""
    if answer.failure is not None:
        return BidResult(None, None, answer.failure)
    if answer.status == 204:
        return BidResult(None, None, "no_bid")
    if answer.status != 200:
        return BidResult(None, None, f"error:http_{answer.status}")
    try:
        parsed = _read_bid_body(answer.body)
    except msgspec.DecodeError:
        return BidResult(None, None, "error:bad_json")
    except msgspec.ValidationError:
        return BidResult(None, None, "error:bad_bid")
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
    if answer.failure is not None:
        return PostResult(False, None, "rejected:" + answer.failure)
    if answer.status != 200:
        return PostResult(False, None, f"rejected:error:http_{answer.status}")
    try:
        parsed = _read_post_body(answer.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return PostResult(False, None, "rejected:error:bad_answer")
    if parsed.accepted:
        return PostResult(True, parsed.lead_id, "accepted")
    return PostResult(False, None, "rejected:" + clean_reason(parsed.reason))


def clean_reason(reason: str | None) -> str:
    """A buyer's free-text reason, cut to a short safe token for traces, logs and labels."""
    cleaned = _REASON_UNSAFE.sub("_", reason or "").strip("_")[:48]
    return cleaned or "unspecified"


# I/O ------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class BuyerClient:
    """One keep-alive session per worker for every buyer call.

    The connector has no pool limit, so a ping never queues behind other pings; every call
    carries its own deadline and a cancelled call closes its connection instead of returning
    it to the pool half-read.
    """

    def __init__(self, ca_file: str | None = None) -> None:
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, dict[str, str]] = {}

    async def start(self, campaigns: Iterable[Campaign]) -> None:
        self.learn(campaigns)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=self._ssl, keepalive_timeout=30,
                                         ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              skip_auto_headers=("User-Agent",))

    def learn(self, campaigns: Iterable[Campaign]) -> None:
        """Pre-build each campaign's request headers once per config."""
        self._headers = {c.id: {**c.headers, "Content-Type": "application/json"} for c in campaigns}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, campaign_id: str, url: str, body: bytes, timeout_s: float) -> Answer:
        """POST ``body``; never raises: a failure becomes ``Answer.failure``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = Answer()
        if timeout_s <= 0:
            answer.failure = "timeout"
            return answer
        assert self._session is not None, "BuyerClient.start() was not awaited"
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.post(url, data=body, headers=self._headers[campaign_id],
                                              allow_redirects=False) as response:
                    answer.status = response.status
                    if (response.content_length or 0) > MAX_ANSWER:
                        raise _TooLarge
                    answer.body = await _read_capped(response.content)
        except TimeoutError:
            answer.failure = "timeout"
        except _TooLarge:
            answer.failure = "error:too_large"
        except aiohttp.ClientSSLError:
            answer.failure = "error:tls"
        except (aiohttp.ClientConnectorError, ConnectionError):
            answer.failure = "error:connection"
        except (aiohttp.ClientError, OSError, ValueError):
            answer.failure = "error:protocol"
        answer.ms = round((loop.time() - started) * 1000, 2)
        return answer


async def _read_capped(stream: aiohttp.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)
