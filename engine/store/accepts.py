"""Each campaign's accept rate over a recent window: what ``expected`` ranking weighs bids by.

A live offer's outcome (the buyer took the lead, or rejected it, failed or did not answer)
is counted in the slice of time it happened in: the window, ``accept_window_s``, is cut
into ``SLICES`` slices numbered from the epoch, and a rate counts the slice of now and the
``SLICES - 1`` before it. A slice that leaves the window takes its counts with it at once,
so a campaign's past is forgotten a slice at a time, never all at once.

The rate is smoothed by a prior (a Beta prior as pseudo-counts): ``accept_prior_offers``
offers accepted at ``accept_prior``, so a campaign without offers ranks at the prior, and
every offer moves it a little. Rates are integers, parts per million, so the ranking twins
multiply them with cents exactly.

``AcceptRates`` is one worker's view, kept by either store: the memory store counts into it,
the Redis store puts in what it reads from Redis (a slice whole the first time, then only
the offers its log gained). Both read it on the hot path as ``ppm``, by campaign number,
without a call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ExchangeSettings

#: A rate of 1, in the ranker's units.
PPM = 1_000_000
#: Slices per window: the window a rate covers is between (SLICES - 1) / SLICES and all of
#: ``accept_window_s`` long; more slices would age offers out more smoothly, at the cost of
#: more keys and more reads when a worker starts.
SLICES = 12

#: A campaign's counts in one slice, or over the window: [offered, accepted].
Counts = list[int]
#: How far a worker has read a slice's log in the shared store: the log's length then, and its
#: first entry, which names the log (one that Redis lost and began again starts differently).
Position = tuple[int, bytes]


@dataclass(frozen=True, slots=True)
class AcceptRule:
    """The window's slicing and the prior, in integers."""

    slice_ms: int
    prior_ppm: int
    prior_offers: int

    @classmethod
    def of(cls, exchange: ExchangeSettings) -> "AcceptRule":
        return cls(exchange.accept_window_s * 1000 // SLICES, round(exchange.accept_prior * PPM),
                   exchange.accept_prior_offers)

    def ppm(self, offered: int, accepted: int) -> int:
        """(accepted + prior x prior offers) / (offered + prior offers), in ppm, cut down."""
        return (accepted * PPM + self.prior_ppm * self.prior_offers) // (offered + self.prior_offers)

    def slice_of(self, now: float) -> int:
        return int(now * 1000) // self.slice_ms

    @property
    def keep_ms(self) -> int:
        """How long a slice's counts are needed: the window, and the slice that is leaving it."""
        return (SLICES + 1) * self.slice_ms


class AcceptRates:
    """Counts per slice, their sums over the window, and ``ppm[i]``, the rate of
    ``campaign_ids[i]`` of the store's numbering, kept current as counts change: only the
    campaigns a change touches are recomputed, so a worker with 10,000 campaigns pays for
    the ones that had offers."""

    def __init__(self) -> None:
        self.enabled = False
        self.rule = AcceptRule.of(ExchangeSettings())
        self.ppm: list[int] = []
        self._numbers: dict[str, int] = {}
        self._slices: dict[int, dict[str, Counts]] = {}
        self._totals: dict[str, Counts] = {}
        self._marks: dict[int, set[str]] = {}
        self._final: set[int] = set()
        self._read: dict[int, Position] = {}

    def adopt(self, campaign_ids: list[str], numbers: dict[str, int], exchange: ExchangeSettings) -> None:
        """Take a config: its numbering, whether it ranks by expected worth, its window and
        prior. ``ppm`` becomes a new list, so an auction that read the old one keeps a list
        numbered like its own campaigns. Counts stay unless the slicing changed."""
        rule = AcceptRule.of(exchange)
        if rule.slice_ms != self.rule.slice_ms:
            self._slices.clear()
            self._totals.clear()
            self._marks.clear()
            self._final.clear()
            self._read.clear()
        self.rule = rule
        self.enabled = exchange.ranking == "expected"
        self._numbers = numbers
        prior = rule.ppm(0, 0)
        totals = self._totals
        self.ppm = [rule.ppm(*totals[cid]) if cid in totals else prior for cid in campaign_ids]

    def count(self, mark: str, campaign_id: str, accepted: bool, now: float) -> None:
        """One offer's outcome, at ``now`` (the memory store's own count); an offer's
        ``mark`` counts once while its slice is kept, as in Redis."""
        number = self.rule.slice_of(now)
        marks = self._marks.setdefault(number, set())
        if mark in marks:
            return
        marks.add(mark)
        self._one(self._slices.setdefault(number, {}), campaign_id, accepted)

    def put(self, number: int, counts: dict[str, Counts], position: Position, now: float) -> None:
        """Slice ``number`` whole, as the shared store held it at ``now``, and where its log
        of offers ended then (the Redis store's first read of a slice, or a read after Redis
        lost it)."""
        old = self._slices.get(number, {})
        for campaign_id in old.keys() | counts.keys():
            before, after = old.get(campaign_id, (0, 0)), counts.get(campaign_id, (0, 0))
            if before != after:
                self._add(campaign_id, after[0] - before[0], after[1] - before[1])
        self._slices[number] = counts
        self._read[number] = position
        self._settle(number, now)

    def extend(self, number: int, offers: list[tuple[str, bool]], position: Position, now: float) -> None:
        """The offers slice ``number``'s log gained since this worker last read it, up to
        ``position``."""
        counts = self._slices.setdefault(number, {})
        for campaign_id, accepted in offers:
            self._one(counts, campaign_id, accepted)
        self._read[number] = position
        self._settle(number, now)

    def wanted(self, now: float) -> list[tuple[int, Position | None]]:
        """The slices of the window a shared store's refresh reads, each with where this
        worker's read of its log stopped (None: read the slice whole): all but those read once
        they were final, two slices old. The current and the previous slice may still be
        counted into (the previous by a worker whose clock is behind), so a slice is read
        for the last time a slice after it ended, and a clock may lag by up to a slice
        without its counts being missed. Once the window is held, a refresh reads two slices
        (three as a slice ends), and only their offers since its last read."""
        current = self.rule.slice_of(now)
        return [(n, self._read.get(n)) for n in range(current - SLICES + 1, current + 1) if n not in self._final]

    def _settle(self, number: int, now: float) -> None:
        if number < self.rule.slice_of(now) - 1:
            self._final.add(number)

    def expire(self, now: float) -> None:
        """Forget the slices that left the window."""
        first = self.rule.slice_of(now) - SLICES + 1
        for number in [n for n in self._marks if n < first]:
            del self._marks[number]
        self._final = {n for n in self._final if n >= first}
        self._read = {n: position for n, position in self._read.items() if n >= first}
        for number in [n for n in self._slices if n < first]:
            for campaign_id, (offered, accepted) in self._slices.pop(number).items():
                self._add(campaign_id, -offered, -accepted)

    def _one(self, counts: dict[str, Counts], campaign_id: str, accepted: bool) -> None:
        """One more offer in a slice's ``counts``, and in the window's."""
        mine = counts.setdefault(campaign_id, [0, 0])
        mine[0] += 1
        mine[1] += int(accepted)
        self._add(campaign_id, 1, int(accepted))

    def _add(self, campaign_id: str, offered: int, accepted: int) -> None:
        total = self._totals.setdefault(campaign_id, [0, 0])
        total[0] += offered
        total[1] += accepted
        if total == [0, 0]:
            del self._totals[campaign_id]
        i = self._numbers.get(campaign_id)
        if i is not None:
            self.ppm[i] = self.rule.ppm(*total)
