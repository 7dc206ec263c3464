"""The store contract, run on every store: memory, one Redis, and a three-master Redis Cluster.

Redis tests use real servers (tests/redis_support.py). A "second worker" is a second
RedisStore on the same Redis; the memory store is one worker, so there it is the same object.
Every store runs on the test's clock (tests/support/clock.py); ``open_store.elapse`` moves it,
and sleeps too where the Redis server's own time decides (key TTLs, benches, reservation
sweeps read Redis TIME).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Awaitable, Callable, Sequence

import pytest

from pingpost.config import Campaign, Caps, ExchangeSettings
from pingpost.launch import free_port
from pingpost.schema import CampaignOutcome, PingFields
from pingpost.store.base import OpenedPost, Store, StoreUnavailable
from pingpost.store.memory import MemoryStore
from pingpost.store.redis import DEADLINE_S, RedisStore, redacted
from pingpost.targeting import BENCHED, CAPPED, OPEN
from pingpost.trace import PingRecord, PostRecord, RankedBid
from tests.redis_support import RedisServer, cli, keys_without_ttl
from tests.support.clock import ManualClock

KINDS = ("memory", "redis", "cluster")
VIEW_DELAY_S = 0.25 + 0.1
"""How soon another worker must see a change: the contract's 250 ms plus slack for the test."""

Open = Callable[..., Awaitable[Store]]


def campaign(campaign_id: str, buyer: str = "b1", **caps: float) -> Campaign:
    return Campaign(id=campaign_id, buyer=buyer, vertical="auto", post_url="http://127.0.0.1:9/post",
                    caps=Caps(**caps))  # type: ignore[arg-type]


def record(ping_id: str) -> PingRecord:
    return PingRecord(
        ping_id=ping_id, seller_id="acme", test=False, created_at=1.5, expires_at=121.5, auction_ms=12.25,
        ping=PingFields(vertical="auto", zip="90210", state="CA", attributes={"age": 40, "tags": ["a", True]}),
        bids=[RankedBid("c1", 725, "bid-1"), RankedBid("c2", 500)],
        outcomes=[CampaignOutcome(campaign_id="c1", buyer_id="b1", outcome="bid", bid=7.25, ms=3.5),
                  CampaignOutcome(campaign_id="c3", buyer_id="b3", outcome="timeout")],
        price_cents=725)


SOLD = PostRecord(status="sold", attempts=2, price_cents=725, lead_id="L-1",
                  offers=[CampaignOutcome(campaign_id="c1", buyer_id="b1", outcome="rejected"),
                          CampaignOutcome(campaign_id="c2", buyer_id="b2", outcome="accepted", bid=5.0)])


@pytest.fixture(params=KINDS)
async def open_store(request: pytest.FixtureRequest, clock: ManualClock):
    """``await open_store(campaigns, exchange)`` starts one more worker of this kind;
    ``await open_store.elapse(seconds)`` lets that much time pass for every worker."""
    started: list[Store] = []
    if request.param == "memory":
        servers = None
    else:
        servers = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
        servers.flush()

    async def open_(campaigns: Sequence[Campaign] = (), exchange: ExchangeSettings | None = None) -> Store:
        if servers is None and started:
            return started[0]
        store: Store = MemoryStore(clock) if servers is None else RedisStore(servers.url, clock=clock)
        await store.start(campaigns, exchange or ExchangeSettings())
        started.append(store)
        return store

    async def elapse(seconds: float) -> None:
        """The memory store keeps time by the clock alone; a Redis server by its own."""
        clock.advance(seconds)
        if servers is not None:
            await asyncio.sleep(seconds)

    open_.servers = servers  # type: ignore[attr-defined]
    open_.elapse = elapse  # type: ignore[attr-defined]
    yield open_
    for store in started:
        await store.close()


async def eventually(check: Callable[[], Awaitable[bool] | bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        outcome = check()
        if await outcome if isinstance(outcome, Awaitable) else outcome:
            return
        assert time.monotonic() < deadline, f"not within {within_s} s"
        await asyncio.sleep(0.01)


# Pings -------------------------------------------------------------------------------------


async def test_ping_record_round_trips(open_store: Open) -> None:
    store = await open_store([campaign("c1"), campaign("c2")])
    await store.save_ping(record("p1"), 60, [], [])
    assert await store.get_ping("p1") == record("p1")
    assert await store.get_ping("nope") is None


async def test_ping_and_its_result_expire(open_store: Open) -> None:
    store = await open_store()
    await store.save_ping(record("short"), 0.3, [], [])
    await store.save_ping(record("long"), 60, [], [])
    assert (await store.open_post("short", 5)).acquired
    await store.finish_post("short", SOLD)
    await open_store.elapse(0.4)  # type: ignore[attr-defined]
    await store.refresh()
    assert await store.get_ping("short") is None
    assert await store.open_post("short", 5) == OpenedPost(None, None, False)
    assert await store.get_ping("long") == record("long")


# Posts -------------------------------------------------------------------------------------


async def test_post_lock_then_result_makes_reposts_idempotent(open_store: Open) -> None:
    store = await open_store()
    await store.save_ping(record("p1"), 60, [], [])
    first = await store.open_post("p1", 30)
    assert first == OpenedPost(record("p1"), None, True)
    assert await store.open_post("p1", 30) == OpenedPost(record("p1"), None, False)
    await store.finish_post("p1", SOLD)
    again = await store.open_post("p1", 30)
    assert (again.result, again.acquired) == (SOLD, False)
    assert again.record is not None and again.record.post == SOLD
    stored = await store.get_ping("p1")
    assert stored is not None and stored.post == SOLD


async def test_post_lock_is_given_back_or_expires(open_store: Open) -> None:
    store = await open_store()
    await store.save_ping(record("p1"), 60, [], [])
    assert (await store.open_post("p1", 30)).acquired
    await store.unlock_post("p1")
    assert (await store.open_post("p1", 0.2)).acquired
    assert not (await store.open_post("p1", 0.2)).acquired
    await open_store.elapse(0.3)  # type: ignore[attr-defined]
    assert (await store.open_post("p1", 30)).acquired


async def test_concurrent_posts_one_acquires(open_store: Open) -> None:
    a, b = await open_store(), await open_store()
    await a.save_ping(record("p1"), 60, [], [])
    opened = await asyncio.gather(*(s.open_post("p1", 30) for _ in range(25) for s in (a, b)))
    assert sum(o.acquired for o in opened) == 1
    assert all(o.record == record("p1") for o in opened)


# Caps --------------------------------------------------------------------------------------

TEN = time.mktime((2030, 6, 1, 10, 15, 0, 0, 0, 0)) - time.timezone  # 2030-06-01 10:15 UTC
HOUR, DAY = 3600, 86400


async def test_hourly_and_daily_caps(open_store: Open) -> None:
    store = await open_store([campaign("c1", hourly=2, daily=3)])
    assert await store.reserve("c1", 100, TEN) is not None
    assert await store.reserve("c1", 100, TEN + 60) is not None
    assert await store.reserve("c1", 100, TEN + 120) is None, "hourly cap"
    assert await store.reserve("c1", 100, TEN + HOUR) is not None
    assert await store.reserve("c1", 100, TEN + HOUR + 60) is None, "daily cap"
    assert await store.reserve("c1", 100, TEN + DAY) is not None, "a new day"


async def test_daily_budget(open_store: Open) -> None:
    store = await open_store([campaign("c1", daily_budget=10.0)])
    big = await store.reserve("c1", 600, TEN)
    assert big is not None
    assert await store.reserve("c1", 500, TEN) is None
    assert await store.reserve("c1", 400, TEN) is not None
    assert await store.reserve("c1", 1, TEN) is None
    await store.release(big)
    assert await store.reserve("c1", 600, TEN) is not None


async def test_release_gives_back_commit_keeps_and_view_follows(open_store: Open) -> None:
    store = await open_store([campaign("c1", hourly=1), campaign("c2")])
    now = time.time()
    first = await store.reserve("c1", 100, now)
    assert first is not None and store.blocks[0] == CAPPED
    assert await store.reserve("c1", 100, now) is None
    await store.release(first)
    assert store.blocks[0] == OPEN
    second = await store.reserve("c1", 100, now)
    assert second is not None
    await store.commit(second)
    assert store.blocks[0] == CAPPED
    assert await store.reserve("c1", 100, now) is None
    assert store.blocks[1] == OPEN


async def test_concurrent_reserves_from_two_workers_never_pass_a_cap(open_store: Open) -> None:
    campaigns = [campaign("c1", hourly=7), campaign("c2", daily_budget=10.0)]
    a, b = await open_store(campaigns), await open_store(campaigns)
    now = time.time()
    leads = await asyncio.gather(*(s.reserve("c1", 100, now) for _ in range(50) for s in (a, b)))
    spend = await asyncio.gather(*(s.reserve("c2", 300, now) for _ in range(50) for s in (a, b)))
    assert sum(r is not None for r in leads) == 7
    assert sum(r is not None for r in spend) == 3
    await eventually(lambda: b.blocks[0] == a.blocks[0] == CAPPED, VIEW_DELAY_S)


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)  # one memory worker cannot outlive itself
async def test_reservation_of_a_lost_worker_is_swept(open_store: Open) -> None:
    """A worker that reserved and died must not hold the cap past the reservation's deadline;
    if it was only slow, its late commit still counts the sale."""
    campaigns = [campaign("c1", hourly=1)]
    exchange = ExchangeSettings(post_timeout_ms=1)
    lost, alive = await open_store(campaigns, exchange), await open_store(campaigns, exchange)
    lost.grace_s = 0.2  # type: ignore[attr-defined]
    now = time.time()
    late = await lost.reserve("c1", 100, now)
    assert late is not None and await alive.reserve("c1", 100, now) is None
    await eventually(lambda: alive.blocks[0] == OPEN, 0.3 + VIEW_DELAY_S)
    assert await alive.reserve("c1", 100, now) is not None
    await lost.commit(late)
    await lost.release(late)  # already settled: nothing to give back
    await lost.refresh()
    assert lost.blocks[0] == CAPPED


# Bench -------------------------------------------------------------------------------------

BENCHING = ExchangeSettings(bench_after_timeouts=3, bench_window_s=1, bench_duration_s=1)


async def test_bench_within_window_seen_by_other_workers_then_expires(open_store: Open) -> None:
    """On Redis the bench ends by the server's clock (the bench scripts read Redis TIME), so
    there ``elapse`` really waits out the second."""
    campaigns = [campaign("c1"), campaign("c2")]
    a, b = await open_store(campaigns, BENCHING), await open_store(campaigns, BENCHING)
    for n in range(2):
        await a.save_ping(record(f"slow-c2-{n}"), 60, ["c2"], [])
    for n in range(3):
        assert a.blocks[0] == OPEN
        await a.save_ping(record(f"slow-c1-{n}"), 60, ["c1"], [])
    assert a.blocks[0] == BENCHED, "the worker that saw the timeouts benches at once"
    await eventually(lambda: b.blocks[0] == BENCHED, VIEW_DELAY_S)
    await open_store.elapse(1.1)  # type: ignore[attr-defined]
    await eventually(lambda: a.blocks[0] == b.blocks[0] == OPEN, VIEW_DELAY_S)
    await a.save_ping(record("slow-c2-late"), 60, ["c2"], [])
    assert a.blocks[1] == OPEN, "the earlier timeouts left the window"


async def test_no_bench_when_disabled(open_store: Open) -> None:
    store = await open_store([campaign("c1")], ExchangeSettings(bench_after_timeouts=0))
    for n in range(5):
        await store.save_ping(record(f"p{n}"), 60, ["c1"], [])
    await store.refresh()
    assert store.blocks[0] == OPEN


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)  # the memory store has no keys
async def test_ended_benches_leave_the_shared_hash(open_store: Open) -> None:
    """Redis alone: the bench ends by Redis TIME and the hash's TTL runs on the server, so
    the test sleeps the second out."""
    store = await open_store([campaign("c1"), campaign("c2")], ExchangeSettings(bench_after_timeouts=1, bench_duration_s=1))
    await store.save_ping(record("p1"), 60, ["c1"], [])
    await asyncio.sleep(1.1)
    await store.save_ping(record("p2"), 60, ["c2"], [])
    port = open_store.servers.ports[0]  # type: ignore[attr-defined]
    assert cli(port, "-c", "HKEYS", "pp:{bench}:until").split() == ["c2"]
    assert 900 < int(cli(port, "-c", "PTTL", "pp:{bench}:until")) <= 1000, "gone when the last bench ends"


# Duplicates and last bids ------------------------------------------------------------------


async def test_duplicates_per_buyer(open_store: Open) -> None:
    a, b = await open_store(), await open_store()
    await a.remember("b1", ["phone:1", "email:1"], 30)
    await a.remember("b2", ["phone:2"], 0)
    assert await b.duplicate_buyers(["b1", "b2", "b3"], ["email:1", "phone:9"]) == {"b1"}
    assert await b.duplicate_buyers(["b1", "b2"], ["phone:2"]) == set()
    assert await b.duplicate_buyers(["b1"], []) == set()
    assert await b.duplicate_buyers([], ["phone:1"]) == set()


async def test_duplicates_forgotten_after_window(open_store: Open, clock: ManualClock) -> None:
    store = await open_store()
    await store.remember("b1", ["phone:1"], 2)
    assert await store.duplicate_buyers(["b1"], ["phone:1"]) == {"b1"}
    if open_store.servers is None:  # type: ignore[attr-defined]
        clock.advance(2 * DAY + 1)
        assert await store.duplicate_buyers(["b1"], ["phone:1"]) == set()
    else:
        ttl = int(cli(open_store.servers.ports[0], "-c", "TTL", "pp:{dup:b1}:phone:1"))  # type: ignore[attr-defined]
        assert 2 * DAY - 5 < ttl <= 2 * DAY


async def test_last_bids_shared(open_store: Open) -> None:
    campaigns = [campaign("c1"), campaign("c2"), campaign("c3")]
    a, b = await open_store(campaigns), await open_store(campaigns)
    await a.save_ping(record("p1"), 60, [], [("c1", 725), ("c3", 10)])
    assert a.last_bids == [725, 0, 10]
    await b.refresh()
    assert b.last_bids == [725, 0, 10]


# The local view ----------------------------------------------------------------------------


async def test_blocks_agree_with_memory_semantics(open_store: Open) -> None:
    campaigns = [campaign("open"), campaign("hourly", hourly=1), campaign("daily", daily=2),
                 campaign("under", daily_budget=5.0), campaign("spent", daily_budget=5.0), campaign("slow")]
    exchange = ExchangeSettings(bench_after_timeouts=1)
    reference = MemoryStore()
    await reference.start(campaigns, exchange)
    store, other = await open_store(campaigns, exchange), await open_store(campaigns, exchange)
    now = time.time()
    for s in (reference, store):
        for campaign_id, cents in [("hourly", 100), ("daily", 100), ("daily", 100), ("under", 499), ("spent", 500)]:
            assert await s.reserve(campaign_id, cents, now) is not None
        await s.save_ping(record("p1"), 60, ["slow"], [])
    await reference.refresh()
    await other.refresh()
    await reference.close()
    expected = bytearray([OPEN, CAPPED, CAPPED, OPEN, CAPPED, BENCHED])
    assert reference.blocks == store.blocks == other.blocks == expected


async def test_view_of_thousands_of_campaigns_mostly_without_caps(open_store: Open) -> None:
    """Campaigns without caps can only be benched, so a refresh reads counts only for the
    capped few; the view must still show every cap and every bench."""
    campaigns = [campaign(f"c{n}") for n in range(2000)] + [campaign(f"cap{n}", hourly=1) for n in range(20)]
    exchange = ExchangeSettings(bench_after_timeouts=1)
    a, b = await open_store(campaigns, exchange), await open_store(campaigns, exchange)
    now = time.time()
    for n in range(0, 20, 2):
        assert await a.reserve(f"cap{n}", 100, now) is not None
    await a.save_ping(record("slow"), 60, ["c7", "c1999", "cap0", "cap1"], [])
    await a.refresh()
    await b.refresh()
    expected = bytearray([OPEN]) * 2020
    for n in range(0, 20, 2):
        expected[2000 + n] = CAPPED
    for i in (7, 1999, 2000, 2001):
        expected[i] = BENCHED
    assert a.blocks == b.blocks == expected


# Cancellation ------------------------------------------------------------------------------


async def cancel_soon(call: Awaitable[object]) -> None:
    """Start ``call`` and cancel it at a random point, often while its reply is in flight."""
    task = asyncio.ensure_future(call)
    for _ in range(random.randrange(6)):
        await asyncio.sleep(0)
    if random.random() < 0.3:
        await asyncio.sleep(random.uniform(0, 0.001))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_cancelled_calls_leave_replies_in_step(open_store: Open) -> None:
    store = await open_store([campaign("c1", hourly=5)])
    ids = [f"p{n}" for n in range(20)]
    for ping_id in ids:
        await store.save_ping(record(ping_id), 60, [], [])
    random.seed(4)
    for n in range(300):
        await cancel_soon(store.get_ping(ids[n % len(ids)]))
    for _ in range(3):
        found = await asyncio.gather(*(store.get_ping(p) for p in ids))
        assert [r.ping_id if r else None for r in found] == ids


async def test_cancelled_reserves_and_locks_are_given_back(open_store: Open) -> None:
    store = await open_store([campaign("c1", hourly=5)])
    await store.save_ping(record("p1"), 60, [], [])
    now = time.time()

    async def reserve_and_release() -> None:
        reservation = await store.reserve("c1", 100, now)
        if reservation is not None:
            await store.release(reservation)

    async def open_and_unlock() -> None:
        if (await store.open_post("p1", 30)).acquired:
            await store.unlock_post("p1")

    for _ in range(150):
        await cancel_soon(reserve_and_release())
        await cancel_soon(open_and_unlock())

    async def all_given_back() -> bool:
        got = [await store.reserve("c1", 100, now) for _ in range(5)]
        for reservation in got:
            if reservation is not None:
                await store.release(reservation)
        opened = await store.open_post("p1", 30)
        if opened.acquired:
            await store.unlock_post("p1")
        return None not in got and opened.acquired

    await eventually(all_given_back, 1.0)


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)  # the memory store has no keys
async def test_every_key_but_last_bids_expires(open_store: Open) -> None:
    campaigns = [campaign("c1", hourly=5, daily_budget=50.0)]
    store = await open_store(campaigns, ExchangeSettings(bench_after_timeouts=2))
    now = time.time()
    for n in range(3):
        await store.save_ping(record(f"p{n}"), 60, ["c1"], [("c1", 100)])
    assert (await store.open_post("p0", 30)).acquired
    assert (await store.open_post("p1", 30)).acquired
    await store.finish_post("p1", SOLD)
    kept, given = await store.reserve("c1", 100, now), await store.reserve("c1", 100, now)
    assert kept is not None and given is not None
    await store.commit(kept)
    await store.release(given)
    await store.remember("b1", ["phone:1"], 1)
    assert keys_without_ttl(open_store.servers.ports) == ["pp:bids"]  # type: ignore[attr-defined]


# Faults ------------------------------------------------------------------------------------


async def test_unreachable_at_start() -> None:
    port = free_port()
    for url in (f"redis://:hunter2@127.0.0.1:{port}/0", f"redis+cluster://127.0.0.1:{port}"):
        store = RedisStore(url)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"cannot reach Redis at .*127.0.0.1:{port}") as caught:
            await store.start([campaign("c1")], ExchangeSettings())
        assert time.monotonic() - started < 1.5
        assert "hunter2" not in str(caught.value)
    assert redacted("rediss://user:pw@h:1/2") == "rediss://user:***@h:1/2"


async def test_redis_lost_then_back() -> None:
    server = RedisServer().start()
    campaigns = [campaign("c1", hourly=3), campaign("c2")]
    exchange = ExchangeSettings(bench_after_timeouts=1)
    a, b = RedisStore(server.url), RedisStore(server.url)
    try:
        await a.start(campaigns, exchange)
        await b.start(campaigns, exchange)
        await a.save_ping(record("p1"), 60, [], [])
        reservation = await a.reserve("c1", 100, time.time())
        assert reservation is not None
        server.stop()
        calls = [a.save_ping(record("p2"), 60, ["c2"], [("c1", 5)]), a.get_ping("p1"), a.open_post("p1", 30),
                 a.finish_post("p1", SOLD), a.unlock_post("p1"), a.reserve("c1", 100, time.time()),
                 a.commit(reservation), a.release(reservation), a.duplicate_buyers(["b1"], ["k"]),
                 a.remember("b1", ["k"], 1), a.refresh()]
        slowest = 0.0
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < DEADLINE_S, f"a call took {slowest:.3f} s to fail"

        server.start()  # same port, empty: the scripts are gone too
        await eventually(lambda: recovered(a), 3.0)
        assert await a.reserve("c1", 100, time.time()) is not None
        await a.save_ping(record("p3"), 60, ["c2"], [])
        await eventually(lambda: b.blocks[1] == BENCHED, VIEW_DELAY_S)
    finally:
        await a.close()
        await b.close()
        server.remove()


async def recovered(store: Store) -> bool:
    try:
        return await store.get_ping("p1") is None
    except StoreUnavailable:
        return False
