"""The shared store: every worker and host pointing at one Redis (or Redis Cluster).

Three choices carry the design (docs/store.md has the key layout and the cost of each call):

* Every call queues its commands and one flusher task sends all that were queued in the
  same event-loop turn as a single pipeline. Concurrent pings therefore share a round trip,
  and a caller that is cancelled only abandons a future: no Redis command is ever cut in
  half, so no reply is left behind on a pooled connection. What a cancelled call did
  anyway (a reservation, a post lock) is taken back.
* Everything that must be atomic is one Lua script over keys of one hash tag, so it runs
  unchanged on Redis Cluster. Scripts go out as EVALSHA inside the pipeline; after a
  restart the server has forgotten them and the flusher resends those commands as EVAL.
* Short timeouts and no retries: a lost Redis shows as ``StoreUnavailable`` within about
  half a second, a reservation then fails closed, and the refresh loop keeps trying so
  the store resumes by itself.
* A Redis that comes back without its data has forgotten the cap counts. Each campaign's
  counters carry a marker that goes with them; without it, ``reserve`` counts nothing until
  the counters are refilled from the ledger (``Recount``), and the refresh refills what it
  finds gone, so capped campaigns show as capped again without waiting for a post.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Coroutine, Sequence
from urllib.parse import urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (ClusterError, ConnectionError as RedisConnectionError, NoScriptError,
                              OutOfMemoryError, ReadOnlyError, RedisClusterException,
                              TimeoutError as RedisTimeoutError, TryAgainError)

from ..config import Campaign, ExchangeSettings
from ..targeting import BENCHED, CAPPED, OPEN
from ..trace import PingRecord, PostRecord, pack, unpack
from .accepts import AcceptRates
from ..ledger.base import SoldCount
from .base import NOTHING_SOLD, Clock, Failures, OpenedPost, Recount, Reservation, Store, StoreUnavailable

SOCKET_TIMEOUT_S = 0.5
"""Connect and reply timeout of every Redis socket: how long a lost Redis may stall a call."""

DEADLINE_S = 1.0
"""Backstop for one pipeline, whatever the client library does with a failing node."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ClusterError, RedisClusterException, TryAgainError,
    ReadOnlyError, OutOfMemoryError, OSError, TimeoutError)
"""Errors that mean "Redis cannot serve us now" (down, failing over, full) rather than
"this command is wrong"."""

Command = tuple[Any, ...]
Undo = Callable[[list[Any]], Sequence[Command]]


@dataclass(frozen=True, slots=True)
class _Script:
    body: bytes
    sha: str

    @classmethod
    def load(cls, name: str, *preludes: str) -> "_Script":
        folder = Path(__file__).with_name("lua")
        body = "".join((folder / f"{part}.lua").read_text() for part in (*preludes, name)).encode()
        return cls(body, hashlib.sha1(body).hexdigest())

    def call(self, keys: Sequence[str], *args: Any) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


_CAPS = ("_clock", "_caps")
OPEN_POST = _Script.load("open_post")
FINISH_POST = _Script.load("finish_post")
BENCH = _Script.load("bench", "_clock")
BENCH_VIEW = _Script.load("bench_view", "_clock")
VIEW = _Script.load("view", *_CAPS)
RESERVE = _Script.load("reserve", *_CAPS)
SETTLE = _Script.load("settle", *_CAPS)
REFILL = _Script.load("refill", *_CAPS)
ACCEPT = _Script.load("accept")
ACCEPT_VIEW = _Script.load("accept_view")
_BY_SHA = {s.sha: s for s in (OPEN_POST, FINISH_POST, BENCH, BENCH_VIEW, VIEW, RESERVE, SETTLE, REFILL, ACCEPT,
                              ACCEPT_VIEW)}

RESERVED, COUNTS_LOST, SETTLING = 1, -1, -2
"""What the reserve script answers first, besides 0 (at a cap)."""

SETTLE_REFRESHES = 3
"""How many refresh periods reservations of refilled counts wait, so that every worker's
refresh sees the refill and opens its lost reservations again before new ones are counted.
Only a worker that saw the counts before refills with a wait: one that never did cannot tell
a loss from a new deployment, whose first refill has nothing in flight to wait for."""

LAST_BIDS = "pp:bids"
BENCHED_UNTIL = "pp:{bench}:until"
"""Every bench in one hash (campaign -> until, ms), so a refresh reads them all in one call.
Benches are written only when a buyer times out, so one hash tag (one slot on a Cluster)
carries them easily."""


def _ping_keys(ping_id: str) -> tuple[str, str, str, str]:
    """Record, post result, post lock and "a post took the lock before" of one ping."""
    tag = f"pp:{{ping:{ping_id}}}:"
    return tag + "rec", tag + "post", tag + "lock", tag + "tried"


def _cap_keys(campaign_id: str, hour: str, day: str) -> tuple[str, ...]:
    """The keys the cap scripts take, in the order lua/_caps.lua names them."""
    tag = f"pp:{{camp:{campaign_id}}}:"
    return (tag + "h:" + hour, tag + "d:" + day, tag + "b:" + day, tag + "r", tag + "swept", tag + "primed",
            tag + "committed:" + day)


def _sales_args(sold: SoldCount) -> list[Any]:
    """A campaign's sales as the refill script takes them: how many, then ping, 1 if of
    the cap hour, cents, for each."""
    args: list[Any] = [len(sold.sales)]
    for sale in sold.sales:
        args.extend((sale.ping_id, int(sale.this_hour), sale.cents))
    return args


def _timeouts_key(campaign_id: str) -> str:
    """Recent timeouts of one campaign; under {bench} so one script call counts a ping's."""
    return f"pp:{{bench}}:t:{campaign_id}"


def _dup_key(buyer_id: str, key: str) -> str:
    return f"pp:{{dup:{buyer_id}}}:{key}"


def _session_key(session_id: str) -> str:
    return f"pp:session:{session_id}"


def _failures_key(key: str) -> str:
    """A hash of ``n`` (failed sign-ins) and ``at`` (the latest, the store's clock)."""
    return f"pp:signin:{key}"


def _accept_keys(slice_ms: int, number: int) -> tuple[str, str, str]:
    """One slice's accept counts, the offers it counted and its log (lua/accept.lua). Every
    campaign's counts are in one hash, so that a worker reads a slice whole in one call, and
    every slice shares the tag {accept}. The slice length is in the name: a window changed by
    a reload counts afresh."""
    tag = f"pp:{{accept}}:{slice_ms}:{number}:"
    return tag + "n", tag + "seen", tag + "log"


def _read_slice(accepts: AcceptRates, number: int, reply: list[Any], now: float) -> None:
    """An ``accept_view`` answer into the worker's view."""
    whole, length, first, items = reply
    position = (length, first)
    if whole:
        counts: dict[str, list[int]] = {}
        for name, value in zip(items[::2], items[1::2]):
            counts.setdefault(name[2:].decode(), [0, 0])[name[:2] == b"a:"] = int(value)
        accepts.put(number, counts, position, now)
    else:  # the log's first entry, "#<mark>", names it and is no offer
        accepts.extend(number, [(entry[1:].decode(), entry[:1] == b"1") for entry in items if entry[:1] != b"#"],
                       position, now)


def _why(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def redacted(url: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class _PackedInC:
    """redis-py's asyncio connections pack commands in Python, about 50 us for one script
    call, which made most of a refresh's cost; hiredis packs them in C (redis-py's sync
    client does the same)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def connect(url: str) -> Redis | RedisCluster:
    """A client for ``redis://``/``rediss://`` (one server) or ``redis+cluster://host:port``
    (any node of a cluster; the client learns the others). One immediate retry on a fresh
    connection, because after a Redis restart every pooled connection is dead and the first
    use of each would otherwise fail; more retries would only delay ``StoreUnavailable``.
    A resent pipeline may run twice, so every write is idempotent (see docs/store.md)."""
    scheme, sep, rest = url.partition("://")
    options: dict[str, Any] = dict(socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                                   retry=Retry(NoBackoff(), 1))
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(CLUSTER_SCHEMES[scheme] + sep + rest, **options)
    client = Redis.from_url(url, **options)
    pool = client.connection_pool
    pool.connection_class = type(f"CPacked{pool.connection_class.__name__}", (_PackedInC, pool.connection_class), {})
    return client


@dataclass(slots=True)
class _Call:
    commands: Sequence[Command]
    future: asyncio.Future[list[Any]]




class RedisStore(Store):
    """``Store`` on Redis; ``grace_s`` is how long past the post deadline a reservation is
    kept for a worker that may still settle it before the sweep gives it back."""

    refresh_s = 0.2

    def __init__(self, url: str, *, grace_s: float = 30.0, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self.url = url
        self.grace_s = grace_s
        self._client: Redis | RedisCluster | None = None
        self._queue: list[_Call] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refills: dict[str, asyncio.Task[None]] = {}
        #: This worker's reservations not yet settled, by token: a refill opens them again.
        self._open: dict[str, Reservation] = {}
        #: The refill each capped campaign's counts came from, as this worker last saw it.
        self._refilled_by: dict[str, bytes] = {}

    # Life --------------------------------------------------------------------------------

    async def start(self, campaigns: Sequence[Campaign], exchange: ExchangeSettings,
                    recount: Recount | None = None) -> None:
        self._client = connect(self.url)
        try:
            async with asyncio.timeout(DEADLINE_S):
                await self._client.ping()
        except _DOWN as e:
            await self._client.aclose()
            raise StoreUnavailable(f"cannot reach Redis at {redacted(self.url)}: {_why(e)}") from e
        await super().start(campaigns, exchange, recount)

    async def close(self) -> None:
        await super().close()
        while self._queue or self._tasks:
            await asyncio.gather(asyncio.sleep(0), *self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # The batcher -------------------------------------------------------------------------

    async def _run(self, *commands: Command, undo: Undo | None = None) -> list[Any]:
        """Send ``commands`` with whatever else is queued this loop turn; one reply each.
        ``undo`` maps the replies of a call whose caller was cancelled to the commands that
        take its effect back."""
        if not commands:
            return []
        loop = asyncio.get_running_loop()
        call = _Call(commands, loop.create_future())
        self._queue.append(call)
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        try:
            return await asyncio.shield(call.future)
        except asyncio.CancelledError:
            call.future.add_done_callback(partial(self._abandoned, undo))
            raise

    def _abandoned(self, undo: Undo | None, future: asyncio.Future[list[Any]]) -> None:
        """The caller gave up on these replies; take back what its commands did anyway."""
        if future.exception() is None and undo is not None:
            self._detach(self._run(*undo(future.result())))

    def _flush(self) -> None:
        calls, self._queue = self._queue, []
        self._detach(self._send(calls))

    def _detach(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` to its end whatever happens to the caller; ``close`` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            async with asyncio.timeout(DEADLINE_S):
                replies = await self._pipeline([c for call in calls for c in call.commands])
        except Exception as e:
            for call in calls:
                call.future.set_exception(self._unavailable(e) if isinstance(e, _DOWN) else e)
            return
        start = 0
        for call in calls:
            mine, start = replies[start:start + len(call.commands)], start + len(call.commands)
            self._answer(call, mine)

    def _answer(self, call: _Call, replies: list[Any]) -> None:
        error = next((r for r in replies if isinstance(r, Exception)), None)
        if isinstance(error, _DOWN):
            call.future.set_exception(self._unavailable(error))
        elif error is not None:
            call.future.set_exception(error)
        else:
            call.future.set_result(replies)

    def _unavailable(self, cause: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"Redis at {redacted(self.url)} did not answer: {_why(cause)}")

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        """One round trip (per node), plus one more only for scripts the server forgot."""
        assert self._client is not None, "start() the store first"
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        forgotten = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if forgotten:
            pipe = self._client.pipeline(transaction=False)
            for i in forgotten:
                _, sha, *rest = commands[i]
                pipe.execute_command("EVAL", _BY_SHA[sha].body, *rest)
            for i, reply in zip(forgotten, await pipe.execute(raise_on_error=False)):
                replies[i] = reply
        return replies

    # The ping path -----------------------------------------------------------------------

    async def save_ping(self, record: PingRecord, keep_s: float, timed_out: Sequence[str],
                        bids: Sequence[tuple[str, int]]) -> None:
        commands: list[Command] = [("SET", _ping_keys(record.ping_id)[0], pack(record), "PX", _ms(keep_s))]
        ex = self.exchange
        counted = list(timed_out) if ex.bench_after_timeouts > 0 else []
        if counted:
            commands.append(BENCH.call((BENCHED_UNTIL, *map(_timeouts_key, counted)), record.ping_id,
                                       ex.bench_window_s * 1000, ex.bench_after_timeouts,
                                       ex.bench_duration_s * 1000, *counted))
        if bids:
            commands.append(("HSET", LAST_BIDS, *(v for bid in bids for v in bid)))
            for campaign_id, cents in bids:
                self.last_bids[self.index_of(campaign_id)] = cents
        replies = await self._run(*commands)
        for campaign_id, benched in zip(counted, replies[1] if counted else ()):
            if benched:
                self.blocks[self.index_of(campaign_id)] = BENCHED

    async def get_ping(self, ping_id: str) -> PingRecord | None:
        rec, post = (await self._run(("MGET", *_ping_keys(ping_id)[:2])))[0]
        return unpack(rec, post)

    # The post path -----------------------------------------------------------------------

    async def open_post(self, ping_id: str, lock_s: float) -> OpenedPost:
        keys = _ping_keys(ping_id)
        (found,) = await self._run(OPEN_POST.call(keys, _ms(lock_s), secrets.token_hex(8)),
                                       undo=lambda r: [("DEL", keys[2])] if r[0] and r[0][2] else [])
        if not found:
            return OpenedPost(None, None, False)
        rec, post, acquired, retried = found
        record = unpack(rec, post)
        return OpenedPost(record, record.post if record else None, bool(acquired), bool(retried))

    async def finish_post(self, ping_id: str, result: PostRecord) -> None:
        await self._run(FINISH_POST.call(_ping_keys(ping_id)[:3], pack(result)))

    async def unlock_post(self, ping_id: str) -> None:
        await self._run(("DEL", *_ping_keys(ping_id)[2:]))

    async def reserve(self, campaign_id: str, cents: int, now: float, ping_id: str | None = None) -> Reservation | None:
        """A campaign whose counts Redis lost is refilled first; its refill covers every
        capped campaign, since a loss rarely spares the others."""
        hour, day = self.buckets(now)
        token = f"{ping_id or secrets.token_hex(12)}|{hour}|{day}|{cents}"
        reservation = Reservation(campaign_id, cents, hour, day, token)
        answer, *state = await self._reserve(reservation)
        refilled = False
        while answer in (COUNTS_LOST, SETTLING):
            if answer == SETTLING:
                await asyncio.sleep(state[0] / 1000)
            elif refilled:
                raise StoreUnavailable(f"Redis at {redacted(self.url)} lost the cap counts again as they were refilled")
            else:
                await self._refilled([self.campaign_ids[n] for n in self.capped], now)
                refilled = True
                if campaign_id not in self._numbers:
                    return None  # a new config without it was learned meanwhile
            answer, *state = await self._reserve(reservation)
        i = self._numbers.get(campaign_id)
        if i is not None and self._current(hour, day):
            self._show(i, state)
        return reservation if answer == RESERVED else None

    async def _reserve(self, reservation: Reservation) -> list[int]:
        r = reservation
        limits = self.limits[self.index_of(r.campaign_id)]
        hold_ms = self.exchange.post_timeout_ms + _ms(self.grace_s)
        guarded = int(self.recount is not None and limits.any_cap)
        (answer,) = await self._run(
            RESERVE.call(_cap_keys(r.campaign_id, r.hour, r.day), r.hour, r.day, r.cents,
                         limits.hourly, limits.daily, limits.budget_cents, r.token, hold_ms, guarded),
            undo=lambda replies: [self._settle(r, -1)] if replies[0][0] == RESERVED else [])
        if answer[0] == RESERVED:
            self._open[r.token] = r
        return list(answer)

    async def commit(self, reservation: Reservation) -> None:
        await self._settled(reservation, 1)

    async def release(self, reservation: Reservation) -> None:
        await self._settled(reservation, -1)

    @staticmethod
    def _settle(reservation: Reservation, sign: int) -> Command:
        r = reservation
        return SETTLE.call(_cap_keys(r.campaign_id, r.hour, r.day), r.token, r.cents, sign)

    async def _settled(self, reservation: Reservation, sign: int) -> None:
        self._open.pop(reservation.token, None)
        (state,) = await self._run(self._settle(reservation, sign))
        if self._current(reservation.hour, reservation.day):
            self._show(self.index_of(reservation.campaign_id), state)

    def _current(self, hour: str, day: str) -> bool:
        return (hour, day) == self.buckets(self.clock())

    def _show(self, i: int, state: Sequence[int]) -> None:
        """Put one campaign's counts, as the cap scripts return them, into the view. The cap
        scripts cannot see benches (another hash tag), so a bench stays in the view until
        the next refresh reads the benches again."""
        h, d, b = state
        self.blocks[i] = self.limits[i].block(self.blocks[i] == BENCHED, h, d, b)

    async def duplicate_buyers(self, buyer_ids: Sequence[str], keys: Sequence[str]) -> set[str]:
        buyers = list(buyer_ids) if keys else []
        found = await self._run(*(("EXISTS", *(_dup_key(b, k) for k in keys)) for b in buyers))
        return {b for b, n in zip(buyers, found) if n}

    async def remember(self, buyer_id: str, keys: Sequence[str], days: int) -> None:
        if days > 0:
            await self._run(*(("SET", _dup_key(buyer_id, k), 1, "EX", days * 86400) for k in keys))

    async def count_offer(self, ping_id: str, campaign_id: str, accepted: bool, at: float) -> None:
        if self.accepts.enabled:
            rule = self.accepts.rule
            await self._run(ACCEPT.call(_accept_keys(rule.slice_ms, rule.slice_of(at)), campaign_id, int(accepted),
                                        rule.keep_ms, f"{ping_id}|{campaign_id}"))

    # The local view ----------------------------------------------------------------------

    async def refresh(self) -> None:
        """One call for every bench, one per campaign with a cap, one for the last bids: a
        campaign without caps can only be benched. Counts found gone are refilled after the
        view is written; until then such a campaign keeps its cap state in the view. While
        the config ranks by ``expected``, one call per slice of accept counts that may still
        change (``AcceptRates.wanted``: two or three once this worker holds the window,
        each answering the offers counted since its last read)."""
        now = self.clock()
        hour, day = self.buckets(now)
        ids, capped = self.campaign_ids, self.capped
        commands = [BENCH_VIEW.call((BENCHED_UNTIL,)), *(VIEW.call(_cap_keys(ids[i], hour, day), hour, day)
                                                           for i in capped)]
        if ids:
            commands.append(("HMGET", LAST_BIDS, *ids))
        accepts = self.accepts
        slices = accepts.wanted(now) if accepts.enabled else []
        commands.extend(ACCEPT_VIEW.call(_accept_keys(accepts.rule.slice_ms, n)[::2], *(read or (-1, b"")))
                        for n, read in slices)
        benched, *replies = await self._run(*commands)
        if ids is not self.campaign_ids:
            return  # a new config was learned meanwhile; its numbering differs
        for (n, _), reply in zip(slices, replies[len(replies) - len(slices):]):
            _read_slice(accepts, n, reply, now)
        if accepts.enabled:
            accepts.expire(now)
        view = bytearray([OPEN]) * len(ids)
        lost = []
        for i, (h, d, b, refill) in zip(capped, replies):
            if refill is not None or self.recount is None:
                view[i] = self.limits[i].block(False, h, d, b)
                seen = self._refilled_by.get(ids[i])
                self._refilled_by[ids[i]] = refill
                if seen is not None and seen != refill and self.recount is not None:
                    lost.append(ids[i])  # lost and refilled by another worker: reopen this one's own
            else:
                lost.append(ids[i])
                view[i] = CAPPED if self.blocks[i] == CAPPED else OPEN
        for campaign_id in benched:
            number = self._numbers.get(campaign_id.decode())
            if number is not None:
                view[number] = BENCHED
        self.blocks[:] = view
        for i, cents in enumerate(replies[len(capped)] if ids else ()):
            if cents is not None:
                self.last_bids[i] = int(cents)
        if lost:
            await self._refilled(lost, now)

    # Lost counts -------------------------------------------------------------------------

    async def _refilled(self, campaign_ids: Sequence[str], now: float) -> None:
        """Return once these campaigns' counts are refilled: callers that find the same
        counts gone (a burst of posts, the refresh) share one recount, which no caller's
        cancellation stops."""
        new = [c for c in campaign_ids if c not in self._refills]
        if new:
            task = asyncio.get_running_loop().create_task(self._refill(new, now))
            self._tasks.add(task)
            task.add_done_callback(partial(self._refill_done, new))
            self._refills.update(dict.fromkeys(new, task))
        await asyncio.gather(*map(asyncio.shield, {self._refills[c] for c in campaign_ids}))

    def _refill_done(self, campaign_ids: list[str], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        for campaign_id in campaign_ids:
            if self._refills.get(campaign_id) is task:
                del self._refills[campaign_id]
        if not task.cancelled():
            task.exception()  # its waiters raised it; a refill nobody waits for any more is retried

    async def _refill(self, campaign_ids: list[str], now: float) -> None:
        """Counters of the hour and day of ``now`` from the ledger's count; the script keeps
        the first refill of each campaign, whoever's it is, and shows its state."""
        hour, day = self.buckets(now)
        sold = await self.sold(now)
        hold_ms = self.exchange.post_timeout_ms + _ms(self.grace_s)
        open_now: dict[str, list[str]] = {}
        for token, r in list(self._open.items()):
            if r.day == day:
                open_now.setdefault(r.campaign_id, []).append(r.token)
            else:
                del self._open[token]  # a day's counts are past: nothing left to reopen
        name = secrets.token_hex(6)
        settle_ms = _ms(SETTLE_REFRESHES * self.refresh_s)
        states = await self._run(*(REFILL.call(_cap_keys(c, hour, day), hold_ms,
                                               settle_ms if c in self._refilled_by else 0, hour, day, name,
                                               *_sales_args(sold.get(c, NOTHING_SOLD)), *open_now.get(c, ()))
                                   for c in campaign_ids))
        if self._current(hour, day):
            for campaign_id, state in zip(campaign_ids, states):
                i = self._numbers.get(campaign_id)
                if i is not None:
                    self._show(i, state)

    # The dashboard -----------------------------------------------------------------------

    async def put_session(self, session_id: str, data: bytes, keep_s: float) -> None:
        await self._run(("SET", _session_key(session_id), data, "PX", _ms(keep_s)))

    async def get_session(self, session_id: str) -> bytes | None:
        (data,) = await self._run(("GET", _session_key(session_id)))
        return data if data is None else bytes(data)

    async def drop_session(self, session_id: str) -> None:
        await self._run(("DEL", _session_key(session_id)))

    async def note_failures(self, keys: Sequence[str], keep_s: float) -> None:
        now = repr(self.clock())
        await self._run(*(command for key in map(_failures_key, keys) for command in (
            ("HINCRBY", key, "n", 1), ("HSET", key, "at", now), ("PEXPIRE", key, _ms(keep_s)))))

    async def failures(self, keys: Sequence[str]) -> list[Failures]:
        replies = await self._run(*(("HMGET", _failures_key(key), "n", "at") for key in keys))
        return [Failures(int(n), float(at)) if n is not None and at is not None else Failures(0, 0.0)
                for n, at in replies]

    async def clear_failures(self, keys: Sequence[str]) -> None:
        await self._run(*(("DEL", _failures_key(key)) for key in keys))  # one key each: a Cluster's slots differ
