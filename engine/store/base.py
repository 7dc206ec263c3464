"""The store interface: everything that must outlive one request or be shared by workers.

The auction talks only to this interface. Four things shape it:

* the hot path must not wait on the store more than the contract allows, so each ping
  writes everything in one call (``save_ping``) and reads caps and benches from a local
  view (``blocks``), which the store keeps current;
* caps are never exceeded under concurrent posts, so an offer first *reserves* its share
  of the cap, and the reservation is committed on accept or released on reject;
* caps are never exceeded when the store forgets its counts either (a Redis that comes
  back empty, a memory store's process restarted): given a ``Recount``, the store refills
  them from the ledger's sales before it counts again;
* ``expected`` ranking weighs bids by each campaign's accept rate: live offers' outcomes are
  counted (``count_offer``, a write the cascade defers) and read back like caps, as a local
  view (``accept_ppm``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Awaitable, Callable, NamedTuple, Sequence

from .. import money
from ..config import Campaign, ExchangeSettings, zone
from ..ledger.base import SoldCount
from ..targeting import BENCHED, CAPPED, OPEN
from ..trace import PingRecord, PostRecord
from .accepts import AcceptRates


#: How stale the local view of caps and benches may get.
REFRESH_S = 0.25

Clock = Callable[[], float]
"""The time of day in seconds since the epoch: ``time.time`` in production; tests pass a
clock they move, so an expiry needs no sleep."""


Recount = Callable[[float, float], Awaitable[dict[str, SoldCount]]]
"""The ledger's live sales per campaign (absent: none) since the cap hour and day began
(epoch seconds): ``Ledger.sold_counts``. The ledger knows every sale, so it is what counts the
store lost are refilled from; raising means they cannot be known now. One call counts every
campaign: a loss takes them all, and the day's sales are read through either way."""

NOTHING_SOLD = SoldCount()

RECOUNT_DEADLINE_S = 10.0
"""Backstop for one ``Recount``: a ledger that hangs must not hold the posts waiting on it
(and the store's ``close``) for ever. Generous, since a busy day's count takes a while."""


class StoreUnavailable(Exception):
    """The shared store cannot be reached; the server answers 503 store_unavailable."""


class CountsUnknown(StoreUnavailable):
    """The store lost cap counts and the ledger cannot recount them now: nothing is counted
    until it can."""


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
    ``token`` tells a shared store's reservations apart: the ping the lead would be sold
    under, which the ledger's sales name too."""

    campaign_id: str
    cents: int
    hour: str
    day: str
    token: str = ""


@dataclass(frozen=True, slots=True)
class OpenedPost:
    """What ``open_post`` found: the ping (None if unknown), the first post's result if it
    finished, whether this caller now holds the post lock, and whether a post held it before
    without storing a result (its cascade may have finished and its result been lost: the
    caller asks the books before running it again)."""

    record: PingRecord | None
    result: PostRecord | None
    acquired: bool
    retried: bool = False


class Failures(NamedTuple):
    """Failed sign-ins under one key: how many, and the time of the latest."""

    failed: int
    latest: float


class Store(ABC):
    """Shared state. ``blocks[i]``, ``last_bids[i]`` and ``accept_ppm[i]`` follow ``campaign_ids[i]``."""

    #: Pause between refreshes; a store whose refresh costs a round trip pauses less so
    #: the view still stays within ``REFRESH_S``.
    refresh_s: float = REFRESH_S
    #: Whether every call finishes without waiting on anything outside the process (the
    #: memory store): such a store needs no deadline around a call to answer in time.
    in_process: bool = False

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.campaign_ids: list[str] = []
        self._numbers: dict[str, int] = {}
        self.capped: list[int] = []
        self.limits: list[Limits] = []
        self.blocks = bytearray()
        self.last_bids: list[int] = []
        #: Accept rates by campaign number (read only while the config ranks by ``expected``).
        self.accepts = AcceptRates()
        self.exchange = ExchangeSettings()
        self._tz: datetime.tzinfo = datetime.timezone.utc
        self._refresher: asyncio.Task[None] | None = None
        self.recount: Recount | None = None

    async def start(self, campaigns: Sequence[Campaign], exchange: ExchangeSettings,
                    recount: Recount | None = None) -> None:
        """Take the campaigns' numbering and fill the view, then keep it fresh. With ``recount``
        the store refills counts it lost from the ledger (the first refresh does so for what
        was lost before the start); without, lost counts start again from zero. A ledger
        that cannot count yet does not stop the start: reservations fail until it can."""
        self.recount = recount
        self.adopt(Numbering.of(campaigns, exchange))
        with contextlib.suppress(CountsUnknown):
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
        self.accepts.adopt(numbering.campaign_ids, numbering.numbers, numbering.exchange)
        self.exchange = numbering.exchange
        self._tz = numbering.tz

    @property
    def accept_ppm(self) -> list[int]:
        """Each campaign's accept rate in parts per million, by campaign number. A new list
        with each config, so a reader keeps one numbered like the campaigns it read with."""
        return self.accepts.ppm

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

    def bucket_starts(self, now: float) -> tuple[float, float]:
        """When the cap hour and day of ``now`` began (epoch seconds), what ``Recount`` takes.
        The first of a repeated hour (clocks going back) starts a bucket that holds both."""
        local = datetime.datetime.fromtimestamp(now, self._tz)
        return (local.replace(minute=0, second=0, microsecond=0, fold=0).timestamp(),
                local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0).timestamp())

    async def sold(self, now: float) -> dict[str, SoldCount]:
        """The ledger's sales per campaign in the cap hour and day of ``now``. If the
        ledger cannot answer, the store cannot know what it lost, and refuses to count:
        ``CountsUnknown``."""
        assert self.recount is not None, "only a store given a recount refills its counts"
        since_hour, since_day = self.bucket_starts(now)
        try:
            async with asyncio.timeout(RECOUNT_DEADLINE_S):
                return await self.recount(since_hour, since_day)
        except Exception as e:
            raise CountsUnknown(f"cap counts were lost and the ledger could not recount them: "
                                f"{str(e) or type(e).__name__}") from e

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
    async def reserve(self, campaign_id: str, cents: int, now: float, ping_id: str | None = None) -> Reservation | None:
        """Count one lead worth ``cents`` against the campaign's caps, or None at a cap.
        ``ping_id`` is the ping the lead would be sold under, by which a store refilled from
        the ledger tells the sales it counted itself; without one (a reservation no sale
        will follow) a random token stands in."""

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

    @abstractmethod
    async def count_offer(self, ping_id: str, campaign_id: str, accepted: bool, at: float) -> None:
        """A live offer of this ping's lead to the campaign ended at ``at``: the buyer took it
        or not. Counted for the accept rates once, however often the call is repeated, and
        only while the config ranks by ``expected``."""

    # The local view --------------------------------------------------------------------

    @abstractmethod
    async def refresh(self) -> None:
        """Bring ``blocks`` up to date (cap rollover, bench expiry, other workers' sales)."""

    # The dashboard ---------------------------------------------------------------------
    #
    # Sessions and failed sign-ins live here, not in one process, so that every worker
    # knows every session and counts every failure. The store keeps opaque bytes under
    # keys the dashboard has already hashed: it learns neither tokens nor addresses.

    @abstractmethod
    async def put_session(self, session_id: str, data: bytes, keep_s: float) -> None:
        """Keep a dashboard session for ``keep_s`` from now (writing it again extends it)."""

    @abstractmethod
    async def get_session(self, session_id: str) -> bytes | None:
        """The session's bytes, or None once it expired or was dropped."""

    @abstractmethod
    async def drop_session(self, session_id: str) -> None:
        """Sign-out: the session is gone for every worker at once."""

    @abstractmethod
    async def note_failures(self, keys: Sequence[str], keep_s: float) -> None:
        """One more failed sign-in under each key (a user, an address), each key's count
        kept ``keep_s`` from its latest failure; the time is the store's clock."""

    @abstractmethod
    async def failures(self, keys: Sequence[str]) -> list[Failures]:
        """Each key's failed sign-ins and when the latest was (``Failures(0, 0.0)`` when none)."""

    @abstractmethod
    async def clear_failures(self, keys: Sequence[str]) -> None:
        """A sign-in succeeded: its user's count starts again."""

