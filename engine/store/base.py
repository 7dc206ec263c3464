"""The store interface: everything that must outlive one request or be shared by workers.

The auction talks only to this interface. Two things shape it:

* the hot path must not wait on the store more than the contract allows, so each ping
  writes everything in one call (``save_ping``) and reads caps and benches from a local
  view (``blocks``), which the store keeps current;
* caps are never exceeded under concurrent posts, so an offer first *reserves* its share
  of the cap, and the reservation is committed on accept or released on reject.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

from .. import money
from ..config import Campaign, ExchangeSettings, zone
from ..targeting import BENCHED, CAPPED, OPEN
from ..trace import PingRecord, PostRecord


#: How stale the local view of caps and benches may get.
REFRESH_S = 0.25

Clock = Callable[[], float]
"""The time of day in seconds since the epoch: ``time.time`` in production; tests pass a
clock they move, so an expiry needs no sleep."""


class StoreUnavailable(Exception):
    """The shared store cannot be reached; the server answers 503 store_unavailable."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A campaign's caps in the store's units (0 = none)."""

    hourly: int
    daily: int
    budget_cents: int

    @classmethod
    def of(cls, campaign: Campaign) -> "Limits":
        return cls(campaign.caps.hourly, campaign.caps.daily, money.to_cents(campaign.caps.daily_budget))

    @property
    def any_cap(self) -> bool:
        """Whether counts can ever block the campaign; without a cap only a bench can."""
        return bool(self.hourly or self.daily or self.budget_cents)

    def exceeded(self, hour: int, day: int, cents_today: int, cents: int) -> bool:
        """Would one more lead worth ``cents`` pass a cap, on top of what is counted? With
        ``cents=1`` this is "the campaign is at a cap", the test the view uses. The Redis
        store's reserve script makes the same test."""
        return bool((self.hourly and hour + 1 > self.hourly) or (self.daily and day + 1 > self.daily)
                    or (self.budget_cents and cents_today + cents > self.budget_cents))

    def block(self, benched: bool, hour: int, day: int, cents_today: int) -> int:
        """The view's byte for a campaign with these counts, the same for every store."""
        return BENCHED if benched else CAPPED if self.exceeded(hour, day, cents_today, 1) else OPEN


@dataclass(frozen=True, slots=True)
class Numbering:
    """A config's campaigns numbered as the targeting index numbers them, with what the
    store derives from them: made before the config is swapped in, so a reload that fails
    leaves the store's numbering as it was."""

    campaign_ids: list[str]
    numbers: dict[str, int]
    limits: list[Limits]
    capped: list[int]
    exchange: ExchangeSettings
    tz: datetime.tzinfo

    @classmethod
    def of(cls, campaigns: Sequence[Campaign], exchange: ExchangeSettings) -> "Numbering":
        ids = [c.id for c in campaigns]
        limits = [Limits.of(c) for c in campaigns]
        return cls(ids, {cid: i for i, cid in enumerate(ids)}, limits,
                   [i for i, each in enumerate(limits) if each.any_cap], exchange, zone(exchange.timezone))


@dataclass(frozen=True, slots=True)
class Reservation:
    """One lead counted against a campaign's caps until it is committed or released;
    ``token`` tells a shared store's reservations apart."""

    campaign_id: str
    cents: int
    hour: str
    day: str
    token: str = ""


@dataclass(frozen=True, slots=True)
class OpenedPost:
    """What ``open_post`` found: the ping (None if unknown), the first post's result if it
    finished, and whether this caller now holds the post lock."""

    record: PingRecord | None
    result: PostRecord | None
    acquired: bool


class Store(ABC):
    """Shared state. ``blocks[i]`` and ``last_bids[i]`` follow ``campaign_ids[i]``."""

    #: Pause between refreshes; a store whose refresh costs a round trip pauses less so
    #: the view still stays within ``REFRESH_S``.
    refresh_s: float = REFRESH_S

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.campaign_ids: list[str] = []
        self._numbers: dict[str, int] = {}
        self.capped: list[int] = []
        self.limits: list[Limits] = []
        self.blocks = bytearray()
        self.last_bids: list[int] = []
        self.exchange = ExchangeSettings()
        self._tz: datetime.tzinfo = datetime.timezone.utc
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, campaigns: Sequence[Campaign], exchange: ExchangeSettings) -> None:
        """Take the campaigns' numbering and fill the view, then keep it fresh."""
        self.adopt(Numbering.of(campaigns, exchange))
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())

    def adopt(self, numbering: Numbering) -> None:
        """Take a config's numbering. A campaign that stays keeps its block and last bid, so
        swapping in a new config reopens no capped campaign (one whose caps were removed is
        open). ``capped`` lists the campaigns with a cap: only their counts can block them,
        so only they need rereading on each refresh."""
        known = {cid: (self.blocks[i], self.last_bids[i]) for i, cid in enumerate(self.campaign_ids)}
        carried = [known.get(cid, (OPEN, 0)) for cid in numbering.campaign_ids]
        self.campaign_ids = numbering.campaign_ids
        self._numbers = numbering.numbers
        self.limits = numbering.limits
        self.capped = numbering.capped
        self.blocks = bytearray(OPEN if block == CAPPED and not limits.any_cap else block
                                for (block, _), limits in zip(carried, self.limits))
        self.last_bids = [bid for _, bid in carried]
        self.exchange = numbering.exchange
        self._tz = numbering.tz

    async def _refresh_forever(self) -> None:
        """Keep the view within ``REFRESH_S`` of the truth; a failed refresh is retried next tick."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except StoreUnavailable:
                pass

    async def close(self) -> None:
        """Stop the refresher; subclasses also release their connections."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    def buckets(self, now: float) -> tuple[str, str]:
        """Clock hour and day in the exchange's time zone, the units caps count in."""
        local = datetime.datetime.fromtimestamp(now, self._tz)
        return local.strftime("%Y%m%d%H"), local.strftime("%Y%m%d")

    def index_of(self, campaign_id: str) -> int:
        return self._numbers[campaign_id]

    # The ping path ---------------------------------------------------------------------

    @abstractmethod
    async def save_ping(self, record: PingRecord, keep_s: float, timed_out: Sequence[str],
                        bids: Sequence[tuple[str, int]]) -> None:
        """Everything one ping writes, in one call: the record (kept ``keep_s``), the
        campaigns that timed out (bench counting) and the bids seen (last known bids)."""

    @abstractmethod
    async def get_ping(self, ping_id: str) -> PingRecord | None:
        """The record with its post result, if any (for the trace endpoint)."""

    # The post path ---------------------------------------------------------------------

    @abstractmethod
    async def open_post(self, ping_id: str, lock_s: float) -> OpenedPost:
        """Fetch the ping and, unless a post finished or is running, take its post lock."""

    @abstractmethod
    async def finish_post(self, ping_id: str, result: PostRecord) -> None:
        """Store the post's result on the ping record and release the lock."""

    @abstractmethod
    async def unlock_post(self, ping_id: str) -> None:
        """Give the lock back without a result: the post was refused (expired, no bid, mismatch)."""

    @abstractmethod
    async def reserve(self, campaign_id: str, cents: int, now: float) -> Reservation | None:
        """Count one lead worth ``cents`` against the campaign's caps, or None at a cap."""

    @abstractmethod
    async def commit(self, reservation: Reservation) -> None:
        """The buyer accepted: the reservation becomes a sale."""

    @abstractmethod
    async def release(self, reservation: Reservation) -> None:
        """The buyer did not take the lead: give the reservation back."""

    @abstractmethod
    async def duplicate_buyers(self, buyer_ids: Sequence[str], keys: Sequence[str]) -> set[str]:
        """Which of these buyers accepted a lead with any of these keys within their window."""

    @abstractmethod
    async def remember(self, buyer_id: str, keys: Sequence[str], days: int) -> None:
        """The buyer accepted a lead with these keys; remember it for ``days``."""

    # The local view --------------------------------------------------------------------

    @abstractmethod
    async def refresh(self) -> None:
        """Bring ``blocks`` up to date (cap rollover, bench expiry, other workers' sales)."""

