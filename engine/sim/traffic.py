"""Seller traffic: realistic pings and synthetic leads, and a runner that sends them.

Three layers that ``bench`` can take separately: ``Generator`` makes the data (no I/O),
``Seller`` sends one request of a kind over a keep-alive session and records a ``Call``,
and ``run`` is the demo's loop (ping, post a share of the bids, direct-post a share).
Leads are obviously fake (``Test Lead 123``, ``lead123@example.com``, 555-01xx phone
numbers, TEST-NET addresses) so nothing that leaves a test run can reach a person.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import aiohttp
import msgspec
from msgspec import Struct

#: (state, 3-digit zip prefix, city, area code): zip, state, city and phone always agree.
PLACES = (
    ("CA", "941", "San Francisco", "415"), ("CA", "900", "Los Angeles", "213"), ("TX", "787", "Austin", "512"),
    ("TX", "752", "Dallas", "214"), ("FL", "331", "Miami", "305"), ("NY", "100", "New York", "212"),
    ("IL", "606", "Chicago", "312"), ("WA", "981", "Seattle", "206"), ("GA", "303", "Atlanta", "404"),
    ("AZ", "850", "Phoenix", "602"), ("CO", "802", "Denver", "303"), ("MA", "021", "Boston", "617"),
    ("PA", "191", "Philadelphia", "215"), ("OH", "432", "Columbus", "614"), ("NC", "282", "Charlotte", "704"),
)
SOURCES = ("google", "facebook", "bing", "affiliate_12", "affiliate_31", "email")
PHONE_FORMATS = ("({a}) 555-01{n:02d}", "{a}-555-01{n:02d}", "+1 {a} 555 01{n:02d}", "{a}55501{n:02d}")


def _auto(rng: random.Random) -> dict[str, Any]:
    return {"vehicle_year": rng.randint(2005, 2025), "vehicles": rng.randint(1, 3),
            "currently_insured": rng.random() < 0.7, "credit": rng.choice(("excellent", "good", "fair", "poor"))}


def _home(rng: random.Random) -> dict[str, Any]:
    return {"home_value": rng.randrange(120_000, 1_500_000, 5_000), "homeowner": rng.random() < 0.8,
            "property_type": rng.choice(("single_family", "condo", "townhouse", "mobile"))}


def _solar(rng: random.Random) -> dict[str, Any]:
    return {"monthly_bill": rng.randrange(60, 400, 10), "homeowner": rng.random() < 0.85,
            "roof_shade": rng.choice(("none", "some", "heavy"))}


def _mortgage(rng: random.Random) -> dict[str, Any]:
    return {"loan_amount": rng.randrange(80_000, 900_000, 5_000), "loan_type": rng.choice(("purchase", "refinance")),
            "credit": rng.choice(("excellent", "good", "fair", "poor"))}


#: vertical -> its attributes' maker
VERTICALS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "auto_insurance": _auto, "home_insurance": _home, "solar": _solar, "mortgage": _mortgage,
}


class Sample(Struct):
    """One would-be lead: the ping a seller sends first and the lead it posts after."""

    ping: dict[str, Any]
    lead: dict[str, Any]

    def direct(self) -> dict[str, Any]:
        """The body of a direct post (``POST /v1/leads``)."""
        return {**self.ping, "lead": self.lead}


class Generator:
    """Random but repeatable (per seed) samples across ``verticals``."""

    def __init__(self, seed: int | None = None, verticals: Sequence[str] = tuple(VERTICALS)) -> None:
        unknown = set(verticals) - VERTICALS.keys()
        if unknown:
            raise ValueError(f"no attribute maker for vertical(s) {sorted(unknown)}; known: {sorted(VERTICALS)}")
        self.rng = random.Random(seed)
        self.verticals = tuple(verticals)
        self.counter = itertools.count(1)

    def sample(self) -> Sample:
        rng, n = self.rng, next(self.counter)
        vertical = rng.choice(self.verticals)
        state, prefix, city, area = rng.choice(PLACES)
        zip_code = f"{prefix}{rng.randrange(100):02d}"
        email = f"lead{n}@example.com"
        phone_tail = rng.randrange(100)
        ping: dict[str, Any] = {"vertical": vertical, "zip": zip_code, "state": state,
                                "source_id": rng.choice(SOURCES), "sub_id": f"sub{rng.randrange(1, 20)}",
                                "quality_score": rng.randint(20, 100), "tcpa_consent": rng.random() < 0.9,
                                "attributes": VERTICALS[vertical](rng)}
        if rng.random() < 0.7:
            ping["email_sha256"] = _sha256(email)
            ping["phone_sha256"] = _sha256(f"{area}55501{phone_tail:02d}")
        lead = {"first_name": "Test", "last_name": f"Lead {n}", "email": email,
                "phone": rng.choice(PHONE_FORMATS).format(a=area, n=phone_tail),
                "zip": zip_code, "state": state, "city": city, "address": f"{n} Example St",
                "ip_address": f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randrange(1, 255)}",
                "dob": (datetime.date(1950, 1, 1) + datetime.timedelta(days=rng.randrange(18_000))).isoformat(),
                "consent_cert_url": f"https://cert.example.com/{n}"}
        return Sample(ping, lead)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# Sending ---------------------------------------------------------------------------------

Kind = Literal["ping", "post", "direct"]


class Call(Struct, kw_only=True):
    """One finished request. ``outcome`` is the answer's ``status`` (bid, no_bid, sold,
    unsold), else ``<http status>:<error code>``, or ``client:<exception>`` when no answer came."""

    kind: Kind
    http_status: int
    ms: float
    outcome: str
    ping_id: str | None = None
    price: float | None = None
    auction_ms: float | None = None
    attempts: int | None = None


class Seller:
    """One seller's client of the seller API over a shared keep-alive session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def ping(self, sample: Sample) -> Call:
        return await self._send("ping", "/v1/ping", sample.ping)

    async def post(self, ping_id: str, sample: Sample) -> Call:
        return await self._send("post", "/v1/post", {"ping_id": ping_id, "lead": sample.lead})

    async def direct(self, sample: Sample) -> Call:
        return await self._send("direct", "/v1/leads", sample.direct())

    async def _send(self, kind: Kind, path: str, body: dict[str, Any]) -> Call:
        data = msgspec.json.encode(body)
        started = time.perf_counter()
        try:
            async with self.session.post(self.base_url + path, data=data, headers=self.headers) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Call(kind=kind, http_status=0, ms=_ms_since(started), outcome=f"client:{type(exc).__name__}")
        ms = _ms_since(started)
        try:
            answer = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if status != 200:
            error = answer.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            return Call(kind=kind, http_status=status, ms=ms, outcome=f"{status}:{code or 'unreadable'}")
        return Call(kind=kind, http_status=status, ms=ms, outcome=str(answer.get("status")),
                    ping_id=answer.get("ping_id"), price=answer.get("price"),
                    auction_ms=answer.get("auction_ms"), attempts=answer.get("attempts"))


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def run(sellers: Sequence[Seller], generator: Generator, count: int, *, concurrency: int = 50,
              post_share: float = 0.9, direct_share: float = 0.1, seed: int | None = None,
              on_call: Callable[[Call], None] | None = None) -> list[Call]:
    """Send ``count`` leads, at most ``concurrency`` at once: a ``direct_share`` of them as
    direct posts, the rest as pings of which a ``post_share`` of the bids are posted.
    Sellers take turns at random. Returns every ``Call``; ``on_call`` sees each as it ends."""
    rng = random.Random(seed)
    calls: list[Call] = []
    remaining = iter(range(count))

    def record(call: Call) -> Call:
        calls.append(call)
        if on_call is not None:
            on_call(call)
        return call

    async def worker() -> None:
        for _ in remaining:
            seller, sample = rng.choice(sellers), generator.sample()
            if rng.random() < direct_share:
                record(await seller.direct(sample))
                continue
            ping = record(await seller.ping(sample))
            if ping.outcome == "bid" and ping.ping_id and rng.random() < post_share:
                record(await seller.post(ping.ping_id, sample))

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    return calls


# Summing up ------------------------------------------------------------------------------


class Summary(Struct, kw_only=True):
    pings: int            #: ping calls (direct posts not included)
    bids: int             #: pings answered "bid"
    posts: int            #: post and direct-post calls
    sold: int
    revenue: float        #: sum of the prices the seller was paid, dollars
    failures: dict[str, int]  #: outcome -> count, of the calls without a 200
    auction_p50_ms: float | None   #: from the exchange's ``auction_ms``
    auction_p99_ms: float | None
    ping_p50_ms: float | None      #: round trip seen by the seller
    ping_p99_ms: float | None

    @property
    def bid_rate(self) -> float:
        return self.bids / self.pings if self.pings else 0.0


def summarize(calls: Iterable[Call]) -> Summary:
    calls = list(calls)
    pings = [c for c in calls if c.kind == "ping"]
    posts = [c for c in calls if c.kind != "ping"]
    sold = [c for c in posts if c.outcome == "sold"]
    auction = [c.auction_ms for c in pings if c.auction_ms is not None]
    round_trips = [c.ms for c in pings if c.http_status == 200]
    return Summary(
        pings=len(pings), bids=sum(c.outcome == "bid" for c in pings), posts=len(posts), sold=len(sold),
        revenue=sum(round((c.price or 0) * 100) for c in sold) / 100,
        failures=dict(Counter(c.outcome for c in calls if c.http_status != 200).most_common()),
        auction_p50_ms=percentile(auction, 50), auction_p99_ms=percentile(auction, 99),
        ping_p50_ms=percentile(round_trips, 50), ping_p99_ms=percentile(round_trips, 99),
    )


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (a value that was observed), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
