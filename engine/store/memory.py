"""The embedded store: one worker's state in plain dicts, no I/O.

Every method completes without awaiting anything (but the one recount at start, see
``_count_sold``), so a ping or post never yields to the event loop inside the store and
check-then-update sequences are atomic by construction.
Records are kept packed (msgpack bytes, as in Redis): hundreds of thousands of pending
pings then cost a few hundred bytes each and nothing to the garbage collector.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict, deque
from typing import Sequence

from ..targeting import BENCHED
from ..trace import PingRecord, PostRecord, pack, unpack
from .base import Clock, Failures, OpenedPost, Reservation, Store


#: Sessions and failure counts kept before a refresh drops the expired ones: a flood of
#: failed sign-ins from many addresses cannot grow the process without bound.
_SWEEP_ABOVE = 10_000


class MemoryStore(Store):
    in_process = True

    def __init__(self, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self._records: dict[str, bytes] = {}
        self._posts: dict[str, bytes] = {}
        self._expiry: list[tuple[float, str]] = []
        self._locks: dict[str, float] = {}
        self._counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._timeouts: defaultdict[str, deque[float]] = defaultdict(deque)
        self._benched_until: dict[str, float] = {}
        self._dupes: dict[tuple[str, str], float] = {}
        self._counted_sold = False
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._failures: dict[str, tuple[float, Failures]] = {}

    async def save_ping(self, record: PingRecord, keep_s: float, timed_out: Sequence[str],
                        bids: Sequence[tuple[str, int]]) -> None:
        now = self.clock()
        self._records[record.ping_id] = pack(record)
        heapq.heappush(self._expiry, (now + keep_s, record.ping_id))
        for campaign_id, cents in bids:
            self.last_bids[self.index_of(campaign_id)] = cents
        ex = self.exchange
        for campaign_id in timed_out:
            if ex.bench_after_timeouts <= 0:
                break
            seen = self._timeouts[campaign_id]
            seen.append(now)
            while seen and seen[0] <= now - ex.bench_window_s:
                seen.popleft()
            if len(seen) >= ex.bench_after_timeouts:
                seen.clear()
                self._benched_until[campaign_id] = now + ex.bench_duration_s
                self.blocks[self.index_of(campaign_id)] = BENCHED

    async def get_ping(self, ping_id: str) -> PingRecord | None:
        return unpack(self._records.get(ping_id), self._posts.get(ping_id))

    async def open_post(self, ping_id: str, lock_s: float) -> OpenedPost:
        record = await self.get_ping(ping_id)
        if record is None or record.post is not None:
            return OpenedPost(record, record.post if record else None, False)
        now = self.clock()
        held = self._locks.get(ping_id)
        if held is not None and held > now:
            return OpenedPost(record, None, False)
        self._locks[ping_id] = now + lock_s
        return OpenedPost(record, None, True, retried=held is not None)

    async def finish_post(self, ping_id: str, result: PostRecord) -> None:
        if ping_id in self._records:
            self._posts[ping_id] = pack(result)
        self._locks.pop(ping_id, None)

    async def unlock_post(self, ping_id: str) -> None:
        self._locks.pop(ping_id, None)

    def _keys(self, campaign_id: str, hour: str, day: str) -> tuple[tuple[str, str], ...]:
        return (campaign_id, "h" + hour), (campaign_id, "d" + day), (campaign_id, "b" + day)

    def _counted(self, i: int, hour: str, day: str) -> tuple[int, int, int]:
        h, d, b = (self._counts.get(k, 0) for k in self._keys(self.campaign_ids[i], hour, day))
        return h, d, b

    async def reserve(self, campaign_id: str, cents: int, now: float, ping_id: str | None = None) -> Reservation | None:
        await self._count_sold(now)
        i = self.index_of(campaign_id)
        hour, day = self.buckets(now)
        if self.limits[i].exceeded(*self._counted(i, hour, day), cents):
            return None
        hk, dk, bk = self._keys(campaign_id, hour, day)
        self._counts[hk] += 1
        self._counts[dk] += 1
        self._counts[bk] += cents
        self._update_block(i, hour, day, self.clock())
        return Reservation(campaign_id, cents, hour, day)

    async def commit(self, reservation: Reservation) -> None:
        """Nothing to do: the reservation was counted when it was made."""

    async def release(self, reservation: Reservation) -> None:
        hk, dk, bk = self._keys(reservation.campaign_id, reservation.hour, reservation.day)
        self._counts[hk] -= 1
        self._counts[dk] -= 1
        self._counts[bk] -= reservation.cents
        hour, day = self.buckets(self.clock())
        self._update_block(self.index_of(reservation.campaign_id), hour, day, self.clock())

    async def duplicate_buyers(self, buyer_ids: Sequence[str], keys: Sequence[str]) -> set[str]:
        now = self.clock()
        return {b for b in buyer_ids if any(self._dupes.get((b, k), 0.0) > now for k in keys)}

    async def remember(self, buyer_id: str, keys: Sequence[str], days: int) -> None:
        until = self.clock() + days * 86400
        for key in keys:
            self._dupes[(buyer_id, key)] = until

    async def count_offer(self, ping_id: str, campaign_id: str, accepted: bool, at: float) -> None:
        if self.accepts.enabled:
            self.accepts.count(f"{ping_id}|{campaign_id}", campaign_id, accepted, at)

    async def _count_sold(self, now: float) -> None:
        """A process starts with no counts, yet may have sold this hour before it restarted:
        the ledger's sales of the hour and day are counted once, by the refresh ``start``
        makes, or, if the ledger could not answer then, before the next reservation (which
        fails while it cannot). Later the process counts every sale itself."""
        if self.recount is None or self._counted_sold:
            return
        hour, day = self.buckets(now)
        for campaign_id, sold in (await self.sold(now)).items():
            for key, n in zip(self._keys(campaign_id, hour, day), (sold.hourly, sold.daily, sold.cents_today)):
                self._counts[key] = max(self._counts[key], n)
        self._counted_sold = True

    def _update_block(self, i: int, hour: str, day: str, now: float) -> None:
        benched = self._benched_until.get(self.campaign_ids[i], 0.0) > now
        self.blocks[i] = self.limits[i].block(benched, *self._counted(i, hour, day))

    async def refresh(self) -> None:
        now = self.clock()
        try:
            await self._count_sold(now)
        finally:
            self._upkeep(now)

    def _upkeep(self, now: float) -> None:
        """Only a cap or a bench can block a campaign, so only those are looked at: a
        refresh over 10,000 campaigns must not hold the event loop for milliseconds."""
        hour, day = self.buckets(now)
        for campaign_id, until in list(self._benched_until.items()):
            if until <= now:
                del self._benched_until[campaign_id]
                i = self._numbers.get(campaign_id)
                if i is not None:
                    self._update_block(i, hour, day, now)
        for i in self.capped:
            self._update_block(i, hour, day, now)
        while self._expiry and self._expiry[0][0] <= now:
            _, ping_id = heapq.heappop(self._expiry)
            self._records.pop(ping_id, None)
            self._posts.pop(ping_id, None)
            self._locks.pop(ping_id, None)
        if self.accepts.enabled:
            self.accepts.expire(now)
        if len(self._dupes) > 100_000:
            self._dupes = {k: t for k, t in self._dupes.items() if t > now}
        if len(self._sessions) + len(self._failures) > _SWEEP_ABOVE:
            self._sessions = {k: kept for k, kept in self._sessions.items() if kept[0] > now}
            self._failures = {k: kept for k, kept in self._failures.items() if kept[0] > now}

    async def put_session(self, session_id: str, data: bytes, keep_s: float) -> None:
        self._sessions[session_id] = (self.clock() + keep_s, data)

    async def get_session(self, session_id: str) -> bytes | None:
        until, data = self._sessions.get(session_id, (0.0, b""))
        return data if until > self.clock() else None

    async def drop_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def note_failures(self, keys: Sequence[str], keep_s: float) -> None:
        now = self.clock()
        for key, (count, _) in zip(keys, await self.failures(keys)):
            self._failures[key] = (now + keep_s, Failures(count + 1, now))

    async def failures(self, keys: Sequence[str]) -> list[Failures]:
        now = self.clock()
        none = (0.0, Failures(0, 0.0))
        return [kept[1] if (kept := self._failures.get(key, none))[0] > now else none[1] for key in keys]

    async def clear_failures(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
