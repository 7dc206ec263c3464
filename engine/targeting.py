"""Eligibility and ranking: the reference implementation in plain Python.

This is the definition of who may bid on a ping and in which order bids win. The
compiled twin in ``ext/`` must give identical answers (differential tests hold it to
that); ``Index`` here stays as the readable reference and the fallback when the
extension is not built. The terms both share (block codes, filter order, reason texts,
the detail limit) live in ``targeting_terms`` and are re-exported here.

Index layout: campaigns are numbered once per config (``Index.campaigns[i]``); the store
keeps a ``bytearray`` of per-campaign blocks (``OPEN``/``CAPPED``/``BENCHED``) indexed the
same way, so the hot path reads a byte instead of asking the store.
"""

from __future__ import annotations

import datetime
import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import money
from .config import DAYS, Campaign, Config, Rule, minutes, zone
from .schema import PingFields
from .targeting_terms import (
    BENCHED,
    BLOCK_REASON,
    CAPPED,
    DETAIL_LIMIT,
    FILTER_ORDER,
    FILTERED,
    MINUTES_PER_WEEK,
    OPEN,
    OVER_MAX,
    RULE,
)

# The shared terms are re-exported: the store and the tests read the block codes and reasons here.
__all__ = ["BENCHED", "BLOCK_REASON", "CAPPED", "DETAIL_LIMIT", "FILTER_ORDER", "MINUTES_PER_WEEK", "OPEN",
           "OVER_MAX", "Bid", "CompiledIndex", "CoreInput", "Index", "Selection", "build_index",
           "minute_of_week", "rank", "reference_rank", "rule_passes", "schedule_bitmap", "tiebreak_keys"]


@dataclass(slots=True)
class Selection:
    """Eligible campaign numbers, best first, and why every other campaign of the vertical
    is not: one ``(number, reason)`` each in ``reasons`` when there are at most
    ``DETAIL_LIMIT`` of them (``counts`` empty), else only ``counts``, reason -> campaigns,
    in the order the reasons first occur (``reasons`` empty)."""

    eligible: list[int] = field(default_factory=list)
    reasons: list[tuple[int, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Bid:
    campaign: int
    cents: int
    priority: int


def schedule_bitmap(days: Sequence[str], start: str, end: str) -> bytearray:
    """One byte per minute of the week (Monday 00:00 = 0) that is inside the window.

    A window whose end is before its start runs overnight: it opens on each listed day
    and closes the next morning.
    """
    bitmap = bytearray(MINUTES_PER_WEEK)
    lo, hi = minutes(start), minutes(end)
    length = hi - lo if hi > lo else MINUTES_PER_WEEK // 7 - lo + hi
    for day in days:
        base = DAYS.index(day) * 1440 + lo
        head = min(length, MINUTES_PER_WEEK - base)
        bitmap[base:base + head] = b"\x01" * head
        bitmap[:length - head] = b"\x01" * (length - head)
    return bitmap


def minute_of_week(epoch_s: float, tz: datetime.tzinfo) -> int:
    local = datetime.datetime.fromtimestamp(epoch_s, tz)
    return local.weekday() * 1440 + local.hour * 60 + local.minute


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (true is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def rule_passes(rule: Rule, attributes: dict[str, Any] | None) -> bool:
    """A missing attribute fails every op but ``exists: false``; a list attribute passes
    eq/in when any element matches and ne/not_in when none does."""
    present = attributes is not None and rule.field in attributes
    if rule.op == "exists":
        return present is (rule.value is not False)
    if not present:
        return False
    value = attributes[rule.field]  # type: ignore[index]
    items = value if isinstance(value, list) else (value,)
    target = rule.value
    if rule.op == "eq":
        return any(_same(x, target) for x in items)
    if rule.op == "ne":
        return not any(_same(x, target) for x in items)
    if rule.op == "in":
        return any(_same(x, t) for x in items for t in target)  # type: ignore[union-attr]
    if rule.op == "not_in":
        return not any(_same(x, t) for x in items for t in target)  # type: ignore[union-attr]
    if not _number(value) or not _number(target if rule.op != "between" else 0):
        return False
    if rule.op == "gt":
        return bool(value > target)
    if rule.op == "gte":
        return bool(value >= target)
    if rule.op == "lt":
        return bool(value < target)
    if rule.op == "lte":
        return bool(value <= target)
    low, high = target  # type: ignore[misc, str-unpack]
    return bool(low <= value <= high)


class Index:
    """Campaigns grouped by vertical with their filters in directly testable form."""

    compiled = False

    def __init__(self, config: Config) -> None:
        self.config = config
        self.max_buyers = config.exchange.max_buyers_per_ping
        self.campaigns: list[Campaign] = list(config.campaigns)
        self.fixed_cents = [money.to_cents(c.fixed_price) if c.ping_url is None else -1 for c in self.campaigns]
        self.by_vertical: dict[str, list[int]] = {}
        for i, c in enumerate(self.campaigns):
            if c.active:
                self.by_vertical.setdefault(c.vertical, []).append(i)
        #: campaign number -> (time zone, bitmap); equal windows share one bitmap object.
        self._schedules: dict[int, tuple[datetime.tzinfo, bytearray]] = {}
        bitmaps: dict[tuple[tuple[str, ...], str, str], bytearray] = {}
        for i, c in enumerate(self.campaigns):
            s = c.filters.schedule
            if s is not None:
                window = (tuple(s.days), s.start, s.end)
                if window not in bitmaps:
                    bitmaps[window] = schedule_bitmap(*window)
                self._schedules[i] = (zone(s.timezone), bitmaps[window])
        self._upper_states = [
            (None if c.filters.states is None else {x.upper() for x in c.filters.states},
             None if c.filters.exclude_states is None else {x.upper() for x in c.filters.exclude_states})
            for c in self.campaigns
        ]

    def failed_filter(self, i: int, ping: PingFields, seller_id: str, now: float) -> str | None:
        """Name of the first filter campaign ``i`` fails for this ping, or None."""
        f = self.campaigns[i].filters
        states, exclude_states = self._upper_states[i]
        state = ping.state.upper() if isinstance(ping.state, str) else None
        zip5 = ping.zip[:5]
        source = ping.source_id if isinstance(ping.source_id, str) else None
        quality = ping.quality_score if isinstance(ping.quality_score, int) else None
        attributes = ping.attributes if isinstance(ping.attributes, dict) else None
        if states is not None and state not in states:
            return "states"
        if exclude_states is not None and state in exclude_states:
            return "exclude_states"
        if f.zips is not None and zip5 not in f.zips:
            return "zips"
        if f.exclude_zips is not None and zip5 in f.exclude_zips:
            return "exclude_zips"
        if f.zip_prefixes is not None and not any(zip5.startswith(p) for p in f.zip_prefixes):
            return "zip_prefixes"
        if f.sellers is not None and seller_id not in f.sellers:
            return "sellers"
        if f.exclude_sellers is not None and seller_id in f.exclude_sellers:
            return "exclude_sellers"
        if f.sources is not None and source not in f.sources:
            return "sources"
        if f.exclude_sources is not None and source in f.exclude_sources:
            return "exclude_sources"
        if f.min_quality is not None and (quality is None or quality < f.min_quality):
            return "min_quality"
        if i in self._schedules:
            tz, bitmap = self._schedules[i]
            if not bitmap[minute_of_week(now, tz)]:
                return "schedule"
        for rule in f.rules or ():
            if not rule_passes(rule, attributes):
                return RULE + rule.field
        return None

    def best_first(self, numbers: list[int], last_bids: Sequence[int], limit: int) -> list[int]:
        """The best ``limit`` campaign numbers, best first: highest priority, then highest
        last known bid, then number; who gets pinged when more pass than
        ``max_buyers_per_ping`` allows. Only these are ordered, not the ones cut."""
        campaigns = self.campaigns
        return heapq.nsmallest(limit, numbers, key=lambda i: (-campaigns[i].priority, -last_bids[i], i))

    def select(self, ping: PingFields, seller_id: str, now: float, blocks: bytes | bytearray,
               last_bids: Sequence[int]) -> Selection:
        """Who is pinged: the vertical's open campaigns that pass their filters, at most
        ``max_buyers_per_ping`` of them, best first (``best_first``). Exact reasons list
        the blocked and filtered campaigns in campaign order, then the cut ones best first."""
        failed: list[tuple[int, str]] = []
        passing: list[int] = []
        for i in self.by_vertical.get(ping.vertical, ()):
            block = blocks[i]
            if block:
                failed.append((i, BLOCK_REASON[block]))
                continue
            reason = self.failed_filter(i, ping, seller_id, now)
            if reason is None:
                passing.append(i)
            else:
                failed.append((i, FILTERED + reason))
        over_max = max(len(passing) - self.max_buyers, 0)
        if len(failed) + over_max <= DETAIL_LIMIT:
            ranked = self.best_first(passing, last_bids, len(passing))
            failed.extend((i, OVER_MAX) for i in ranked[self.max_buyers:])
            return Selection(ranked[:self.max_buyers], failed)
        counts = dict(Counter(reason for _, reason in failed))
        if over_max:
            counts[OVER_MAX] = over_max
        return Selection(self.best_first(passing, last_bids, self.max_buyers), counts=counts)


def tiebreak_keys(seed: int, n: int) -> list[int]:
    """``n`` pseudo-random 64-bit keys from ``seed`` (splitmix64), one per bid in input order."""
    keys = []
    state = seed & 0xFFFFFFFFFFFFFFFF
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        keys.append(z ^ (z >> 31))
    return keys


def reference_rank(bids: Sequence[Bid], min_bid_cents: int, seed: int,
                   accept_ppm: Sequence[int] | None = None) -> tuple[list[Bid], list[Bid]]:
    """Order bids for the cascade: higher worth, then higher priority, then a seeded random
    order. A bid's worth is its cents, or, given ``accept_ppm`` (each campaign's accept rate
    in parts per million, by campaign number), cents x rate: what the bid is expected to
    bring, in integers so that both twins agree exactly. Returns (ranked, dropped below
    ``min_bid_cents``). Zero bids never rank; the rate never drops a bid, only orders it."""
    keys = tiebreak_keys(seed, len(bids))
    kept: list[tuple[int, int, int, Bid]] = []
    dropped: list[Bid] = []
    for bid, key in zip(bids, keys):
        if bid.cents <= 0 or bid.cents < min_bid_cents:
            dropped.append(bid)
        else:
            worth = bid.cents if accept_ppm is None else bid.cents * accept_ppm[bid.campaign]
            kept.append((-worth, -bid.priority, key, bid))
    kept.sort(key=lambda t: t[:3])
    return [t[3] for t in kept], dropped


@dataclass(frozen=True, slots=True)
class CoreInput:
    """What the compiled twin's ``Core`` is built from: the reference index's parts, and the
    reference functions it hands back what it cannot answer exactly in C (huge integers,
    values of unexpected types). A plain value, so the twin imports nothing of this module."""

    campaigns: list[Campaign]
    by_vertical: dict[str, list[int]]
    #: campaign number -> (time zone, ``schedule_bitmap``); equal windows share one bitmap.
    schedules: dict[int, tuple[datetime.tzinfo, bytearray]]
    max_buyers: int
    detail_limit: int
    selection: type[Selection]
    rule_passes: Callable[[Rule, dict[str, Any] | None], bool]
    minute_of_week: Callable[[float, datetime.tzinfo], int]
    best_first: Callable[[list[int], Sequence[int], int], list[int]]


class CompiledIndex(Index):
    """The reference index plus its compiled twin (``ext/_targeting.pyx``), which answers
    ``select``; the reference parts stay for ``failed_filter`` and the twin's rare exact
    fallbacks (huge integers, values of unexpected types)."""

    compiled = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._core = _compiled.Core(CoreInput(
            campaigns=self.campaigns, by_vertical=self.by_vertical, schedules=self._schedules,
            max_buyers=self.max_buyers, detail_limit=DETAIL_LIMIT, selection=Selection,
            rule_passes=rule_passes, minute_of_week=minute_of_week, best_first=self.best_first))

    def select(self, ping: PingFields, seller_id: str, now: float, blocks: bytes | bytearray,
               last_bids: Sequence[int]) -> Selection:
        return self._core.select(ping, seller_id, now, blocks, last_bids)


try:
    from . import _targeting as _compiled
except ImportError:  # the extension is not built: the reference serves
    _compiled = None  # type: ignore[assignment]  # build_index and the tests ask which
    rank = reference_rank
else:
    rank = _compiled.Ranker(reference_rank).rank


def build_index(config: Config) -> Index:
    """The index the engine uses: the compiled one once ``ext/`` is built, else the reference."""
    return Index(config) if _compiled is None else CompiledIndex(config)
