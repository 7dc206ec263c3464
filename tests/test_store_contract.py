"""The store contract, run on every store: memory, one Redis, and a three-master Redis Cluster.

Redis tests use real servers (tests/redis_support.py). A "second worker" is a second
RedisStore on the same Redis; the memory store is one worker, so there it is the same object.
Every store runs on the test's clock (tests/support/clock.py); ``open_store.elapse`` moves it,
and sleeps too where the Redis server's own time decides (key TTLs, benches, reservation
sweeps read Redis TIME). Counts refilled after a loss come from a real ledger (a SQLite
file, or a PostgreSQL server that is stopped to make the ledger unable to count).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import random
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from zoneinfo import ZoneInfo

import pytest

from pingpost import ledger
from pingpost.config import Campaign, Caps, ExchangeSettings
from pingpost.launch import free_port
from pingpost.ledger import Ledger
from pingpost.schema import CampaignOutcome, PingFields
from pingpost.store.base import Failures, Numbering, OpenedPost, Recount, Store, StoreUnavailable
from pingpost.store.memory import MemoryStore
from pingpost.store.redis import DEADLINE_S, RedisStore, redacted
from pingpost.targeting import BENCHED, CAPPED, OPEN
from pingpost.trace import PingRecord, PostRecord, RankedBid
from tests.ledger_support import LEAD, ping, sold
from tests.pg_support import PostgresServer
from tests.redis_support import RedisServer, cli, keys_without_ttl
from tests.support.clock import ManualClock
from tests.support.keys import TEST_KEY

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

    async def open_(campaigns: Sequence[Campaign] = (), exchange: ExchangeSettings | None = None,
                    recount: Recount | None = None) -> Store:
        if servers is None and started:
            return started[0]
        store: Store = MemoryStore(clock) if servers is None else RedisStore(servers.url, clock=clock)
        await store.start(campaigns, exchange or ExchangeSettings(), recount)
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
    """A lock given back (a refused post) leaves no trace; one that expired (its post never
    stored a result) makes the next taker a retry, which asks the books first."""
    store = await open_store()
    await store.save_ping(record("p1"), 60, [], [])
    assert await store.open_post("p1", 30) == OpenedPost(record("p1"), None, True, retried=False)
    await store.unlock_post("p1")
    assert await store.open_post("p1", 0.2) == OpenedPost(record("p1"), None, True, retried=False)
    assert not (await store.open_post("p1", 0.2)).acquired
    await open_store.elapse(0.3)  # type: ignore[attr-defined]
    assert await store.open_post("p1", 30) == OpenedPost(record("p1"), None, True, retried=True)
    await store.finish_post("p1", SOLD)
    assert (await store.open_post("p1", 30)).result == SOLD


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


# Counts lost and refilled from the ledger -------------------------------------------------

_sale_numbers = itertools.count()


@pytest.fixture
async def books(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A real SQLite ledger; its ``sold_counts`` is the source the stores refill from."""
    opened = await ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", key=TEST_KEY)
    yield opened
    await opened.close()


def sale_id() -> str:
    return f"sale-{next(_sale_numbers)}"


async def record_sale(books: Ledger, campaign_id: str, cents: int, at: float, *, test: bool = False,
                      ping_id: str | None = None) -> None:
    """A sale in the ledger, recorded as the auction records one (ping, then the sold post)."""
    record = ping(ping_id or sale_id(), campaign_id=campaign_id, cents=cents, test=test)
    await books.record_ping(record)
    await books.record_post(record, sold(record), LEAD, at=at)


async def sell(store: Store, books: Ledger, campaign_id: str, cents: int, now: float) -> bool:
    """What a sale does to the store and the ledger, in the auction's order: reserve under
    the ping, record the sale in the books, commit; False at a cap."""
    ping_id = sale_id()
    reservation = await store.reserve(campaign_id, cents, now, ping_id)
    if reservation is None:
        return False
    await record_sale(books, campaign_id, cents, now, ping_id=ping_id)
    await store.commit(reservation)
    return True


async def test_start_counts_the_ledgers_sales_of_the_hour_and_day(open_store: Open, books: Ledger,
                                                                  clock: ManualClock) -> None:
    """A store that starts without counts (a fresh Redis, a new process) takes the ledger's:
    live sales of this hour and day, not yesterday's, not test traffic."""
    clock.now = TEN
    for campaign_id, cents, at in [("hourly", 100, TEN - 60), ("hourly", 100, TEN - HOUR),
                                   ("daily", 100, TEN - HOUR), ("daily", 100, TEN - 2 * HOUR),
                                   ("daily", 100, TEN - DAY), ("budget", 700, TEN - 5), ("full", 100, TEN - 9 * HOUR)]:
        await record_sale(books, campaign_id, cents, at)
    await record_sale(books, "hourly", 100, TEN - 30, test=True)
    campaigns = [campaign("hourly", hourly=2, daily=5), campaign("daily", daily=3), campaign("budget", daily_budget=10.0),
                 campaign("full", daily=1), campaign("free")]
    store = await open_store(campaigns, ExchangeSettings(), books.sold_counts)
    assert store.blocks == bytearray([OPEN, OPEN, OPEN, CAPPED, OPEN]), "at its cap before any post"
    assert await store.reserve("hourly", 100, TEN) is not None
    assert await store.reserve("hourly", 100, TEN) is None, "one sale this hour, one now: the hourly cap"
    assert await store.reserve("daily", 100, TEN) is not None
    assert await store.reserve("daily", 100, TEN) is None, "two sales today, one now: the daily cap"
    assert await store.reserve("budget", 300, TEN) is not None
    assert await store.reserve("budget", 1, TEN) is None, "7 + 3 of the 10 spent"
    assert await store.reserve("full", 100, TEN) is None
    assert await store.reserve("free", 100, TEN) is not None


@pytest.mark.parametrize("zone,local", [
    ("UTC", (2030, 6, 1, 10, 15, 0)),
    ("America/New_York", (2030, 11, 3, 0, 30, 0)),  # midnight, a day of 25 hours
    ("America/New_York", (2030, 11, 3, 1, 40, 0)),  # the repeated hour, first time
    ("America/New_York", (2030, 11, 3, 1, 20, 1)),  # and second time (fold=1 below)
    ("America/New_York", (2030, 3, 10, 3, 5, 0)),  # the hour after the skipped one
    ("Asia/Kolkata", (2030, 6, 1, 0, 10, 0)),  # a half-hour offset
])
def test_bucket_starts_are_where_the_cap_buckets_begin(zone: str, local: tuple[int, ...]) -> None:
    """What the ledger is asked to count must be exactly the leads the counters would hold."""
    store = MemoryStore()
    store.adopt(Numbering.of([], ExchangeSettings(timezone=zone)))
    fold = 1 if local[3:5] == (1, 20) else 0
    now = datetime.datetime(*local, tzinfo=ZoneInfo(zone), fold=fold).timestamp()
    hour, day = store.buckets(now)
    hour_start, day_start = store.bucket_starts(now)
    assert hour_start <= now and store.buckets(hour_start)[0] == hour != store.buckets(hour_start - 1)[0]
    assert day_start <= now and store.buckets(day_start)[1] == day != store.buckets(day_start - 1)[1]


async def test_a_ledger_that_cannot_count_lets_nothing_be_counted(open_store: Open, stoppable_postgres: PostgresServer,
                                                                  tmp_path: Path, clock: ManualClock) -> None:
    """The shared ledger (PostgreSQL) is down while the store has no counts: the store still
    starts, but no reservation is counted until the ledger can say what was sold; then the
    cap holds exactly."""
    url = stoppable_postgres.create_database("t_" + tmp_path.name.replace("-", "_").lower()[-40:])
    books = await ledger.open(url, journal=tmp_path / "journal.db", key=TEST_KEY)
    try:
        now = clock()
        for _ in range(2):
            await record_sale(books, "c1", 100, now)
        await asyncio.to_thread(stoppable_postgres.stop)
        store = await open_store([campaign("c1", hourly=4)], ExchangeSettings(), books.sold_counts)
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="the ledger could not recount"):
                await store.reserve("c1", 100, now)
        await asyncio.to_thread(stoppable_postgres.start)
        deadline = time.monotonic() + 15
        while True:
            try:
                first = await store.reserve("c1", 100, now)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the ledger did not answer again"
                await asyncio.sleep(0.05)
        more = [await store.reserve("c1", 100, now) for _ in range(3)]
        assert first is not None and [r is not None for r in more] == [True, False, False]
    finally:
        await books.close()


async def test_a_cap_added_later_counts_what_was_reserved(open_store: Open, books: Ledger, clock: ManualClock) -> None:
    """Counts kept while the campaign had no cap include open reservations: one the ledger
    cannot know, and one whose sale the books hold before its commit reaches the store.
    Taking the ledger's count must neither lose the first nor count the second twice."""
    store = await open_store([campaign("c1")], ExchangeSettings(), books.sold_counts)
    now = clock()
    pings = [sale_id() for _ in range(3)]
    held = [await store.reserve("c1", 100, now, ping_id) for ping_id in pings]
    assert held[0] is not None and all(held)
    await record_sale(books, "c1", 100, now, ping_id=pings[0])
    await store.commit(held[0])
    await record_sale(books, "c1", 100, now, ping_id=pings[1])  # sold too, its commit not in the store yet
    store.adopt(Numbering.of([campaign("c1", hourly=5)], ExchangeSettings()))
    await store.refresh()
    assert held[1] is not None
    await store.commit(held[1])
    assert [await store.reserve("c1", 100, now) is not None for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)  # one process keeps its counts
async def test_caps_hold_when_redis_forgets_every_count(open_store: Open, books: Ledger) -> None:
    """Without a refill, a campaign capped at 150 would sell 150 more after each FLUSHALL.
    Three workers race to refill and to reserve: the cap is reached exactly, never passed."""
    campaigns = [campaign("c1", hourly=150, daily=150), campaign("c2", daily_budget=100.0)]
    workers = [await open_store(campaigns, ExchangeSettings(), books.sold_counts) for _ in range(3)]
    now = time.time()
    assert all(await asyncio.gather(*(sell(workers[n % 3], books, "c1", 100, now) for n in range(100))))
    assert all(await asyncio.gather(*(sell(workers[n % 3], books, "c2", 900, now) for n in range(10))))
    open_store.servers.flush()  # type: ignore[attr-defined]
    leads = await asyncio.gather(*(w.reserve("c1", 100, now) for _ in range(40) for w in workers))
    spend = await asyncio.gather(*(w.reserve("c2", 500, now) for _ in range(3) for w in workers))
    assert sum(r is not None for r in leads) == 50
    assert sum(r is not None for r in spend) == 2, "90 of 100 spent before: 10 left, two leads of 5"
    for reservation in [r for r in leads + spend if r is not None]:
        await workers[0].commit(reservation)
        await record_sale(books, reservation.campaign_id, reservation.cents, now)
    open_store.servers.flush()  # type: ignore[attr-defined]
    assert [await w.reserve(c, 1, now) for w in workers for c in ("c1", "c2")] == [None] * 6


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)
async def test_offers_in_flight_when_redis_forgets_still_count(open_store: Open, books: Ledger) -> None:
    """Reservations open when Redis lost its data: the refilling worker opens its own again
    (they count, and settle as usual), and another worker's commit of one Redis lost counts
    its sale, once, however often it is resent."""
    refiller, other = [await open_store([campaign("c1", hourly=6)], ExchangeSettings(), books.sold_counts)
                       for _ in range(2)]
    now = time.time()
    assert all([await sell(refiller, books, "c1", 100, now) for _ in range(2)])
    in_flight = [await refiller.reserve("c1", 100, now) for _ in range(2)]
    elsewhere = await other.reserve("c1", 100, now)
    assert all(in_flight) and elsewhere is not None
    open_store.servers.flush()  # type: ignore[attr-defined]
    more = await refiller.reserve("c1", 100, now)  # refills: 2 sold + its 2 open, then this one
    assert more is not None
    await other.commit(elsewhere)
    await other.commit(elsewhere)  # a resent pipeline
    assert await refiller.reserve("c1", 100, now) is None, "2 sold + 2 open + 1 + the lost commit = 6"
    assert in_flight[0] is not None and in_flight[1] is not None
    await refiller.release(in_flight[0])  # a buyer said no: its count is given back
    await refiller.commit(in_flight[1])
    last = await refiller.reserve("c1", 100, now)
    assert last is not None and await refiller.reserve("c1", 100, now) is None


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)
async def test_a_worker_that_did_not_refill_opens_its_lost_reservations_again(open_store: Open,
                                                                             books: Ledger) -> None:
    """Another worker refilled the counts first: this worker's refresh sees that the counts
    came from a new refill and opens its own reservations Redis lost again."""
    refiller, other = [await open_store([campaign("c1", hourly=5)], ExchangeSettings(), books.sold_counts)
                       for _ in range(2)]
    now = time.time()
    assert all([await sell(refiller, books, "c1", 100, now) for _ in range(2)])
    mine = [await other.reserve("c1", 100, now) for _ in range(2)]
    await other.refresh()
    open_store.servers.flush()  # type: ignore[attr-defined]
    assert await refiller.reserve("c1", 100, now) is not None  # refills from the ledger: 2 + this one
    await other.refresh()  # sees the new refill: its 2 open reservations count again
    assert await refiller.reserve("c1", 100, now) is None
    assert mine[0] is not None and mine[1] is not None
    await other.release(mine[0])
    await other.commit(mine[1])
    assert await refiller.reserve("c1", 100, now) is not None
    assert await refiller.reserve("c1", 100, now) is None


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)
@pytest.mark.parametrize("commit_reaches_redis", ["after its own worker refilled", "after another worker refilled",
                                                  "between the loss and the refill"])
async def test_a_sale_in_the_books_when_redis_forgets_counts_once(open_store: Open, books: Ledger,
                                                                  commit_reaches_redis: str) -> None:
    """A sale is in the books, and its commit has not reached Redis, when Redis loses its
    data. The ledger's count that refills the counters holds the sale; its reservation,
    opened again or committed late, must not count it a second time (a campaign would then
    stop a lead short of its cap), in whatever order the commit and the refill come."""
    owner, other = [await open_store([campaign("c1", hourly=4)], ExchangeSettings(), books.sold_counts)
                    for _ in range(2)]
    now = time.time()
    assert await sell(owner, books, "c1", 100, now)
    ping_id = sale_id()
    reservation = await owner.reserve("c1", 100, now, ping_id)
    assert reservation is not None
    await record_sale(books, "c1", 100, now, ping_id=ping_id)  # the books first, as the auction writes them
    open_store.servers.flush()  # type: ignore[attr-defined]
    if commit_reaches_redis == "after its own worker refilled":
        refilled = await owner.reserve("c1", 100, now)  # the owner's refill: its reservation is still open
        await owner.commit(reservation)
    elif commit_reaches_redis == "after another worker refilled":
        refilled = await other.reserve("c1", 100, now)
        await owner.refresh()  # sees the other's refill and opens its own lost reservations again
        await owner.commit(reservation)
    else:
        await owner.commit(reservation)
        refilled = await other.reserve("c1", 100, now)
    await owner.commit(reservation)  # a resent pipeline
    assert refilled is not None
    assert [await other.reserve("c1", 100, now) is not None for _ in range(2)] == [True, False], \
        "2 sold + the one reserved at the refill: one lead left of 4"


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)
async def test_refilled_counts_wait_for_every_worker_to_reopen_its_offers(open_store: Open, books: Ledger) -> None:
    """An offer in flight on another worker at the loss is unknown to the refill until that
    worker's refresh opens it again. New reservations wait for the counts to settle (a few
    refresh periods), so the offer in flight keeps its place under the cap."""
    refiller, other = [await open_store([campaign("c1", hourly=2)], ExchangeSettings(), books.sold_counts)
                       for _ in range(2)]
    now = time.time()
    in_flight = await other.reserve("c1", 100, now, sale_id())
    assert in_flight is not None
    await asyncio.gather(other.refresh(), refiller.refresh())  # both have seen the counts
    open_store.servers.flush()  # type: ignore[attr-defined]
    first = await refiller.reserve("c1", 100, now)  # refills, then waits while the other's refresh reopens its offer
    assert first is not None
    assert await refiller.reserve("c1", 100, now) is None, "the offer in flight and this one: the cap of 2"
    await other.commit(in_flight)
    await refiller.refresh()
    assert refiller.blocks == bytearray([CAPPED])


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)
async def test_the_view_refills_lost_counts_without_a_post(open_store: Open, books: Ledger) -> None:
    """After a FLUSHALL, a worker's refresh sees the counts gone and refills them itself, so
    a capped campaign does not show as open (and get pinged) until someone posts."""
    campaigns = [campaign("c1", hourly=3), campaign("c2", hourly=3)]
    seller, watcher = [await open_store(campaigns, ExchangeSettings(), books.sold_counts) for _ in range(2)]
    now = time.time()
    assert all([await sell(seller, books, "c1", 100, now) for _ in range(3)])
    await watcher.refresh()
    assert watcher.blocks == bytearray([CAPPED, OPEN])
    open_store.servers.flush()  # type: ignore[attr-defined]
    port = open_store.servers.ports[0]  # type: ignore[attr-defined]
    await eventually(lambda: cli(port, "-c", "EXISTS", "pp:{camp:c1}:primed").strip() == "1", 5.0)
    await watcher.refresh()
    await seller.refresh()
    assert watcher.blocks == seller.blocks == bytearray([CAPPED, OPEN])


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)
async def test_reserves_cancelled_while_counts_are_refilled(open_store: Open, books: Ledger) -> None:
    """Callers that give up while the counts are refilled leave no reservation behind, and the
    counts come back exact."""
    store = await open_store([campaign("c1", hourly=6)], ExchangeSettings(), books.sold_counts)
    now = time.time()
    assert all([await sell(store, books, "c1", 100, now) for _ in range(2)])
    open_store.servers.flush()  # type: ignore[attr-defined]

    async def reserve_and_release() -> None:
        reservation = await store.reserve("c1", 100, now)
        if reservation is not None:
            await store.release(reservation)

    random.seed(7)
    for _ in range(30):
        await cancel_soon(reserve_and_release())

    async def four_left() -> bool:
        got = [await store.reserve("c1", 100, now) for _ in range(5)]
        for reservation in got:
            if reservation is not None:
                await store.release(reservation)
        return sum(r is not None for r in got) == 4

    await eventually(four_left, 2.0)


async def test_caps_hold_through_a_redis_restart_without_data(books: Ledger) -> None:
    """The real thing: redis-server killed and started again empty on the same port."""
    server = RedisServer().start()
    campaigns = [campaign("c1", hourly=5)]
    a, b = RedisStore(server.url), RedisStore(server.url)
    try:
        await a.start(campaigns, ExchangeSettings(), books.sold_counts)
        await b.start(campaigns, ExchangeSettings(), books.sold_counts)
        now = time.time()
        assert all([await sell(a, books, "c1", 100, now) for _ in range(3)])
        server.stop()
        with pytest.raises(StoreUnavailable):
            await b.reserve("c1", 100, now)
        server.start()
        await eventually(lambda: recovered(a), 3.0)
        leads = await asyncio.gather(*(s.reserve("c1", 100, now) for _ in range(10) for s in (a, b)))
        assert sum(r is not None for r in leads) == 2
        await eventually(lambda: a.blocks[0] == b.blocks[0] == CAPPED, VIEW_DELAY_S)
    finally:
        await a.close()
        await b.close()
        server.remove()


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


# Dashboard sessions and failed sign-ins ----------------------------------------------------


async def test_a_session_is_seen_by_every_worker_until_dropped(open_store: Open) -> None:
    a, b = await open_store(), await open_store()
    await a.put_session("s1", b"\x00one", 60)
    await a.put_session("s2", b"two", 60)
    assert await b.get_session("s1") == b"\x00one"
    await b.drop_session("s1")
    assert await a.get_session("s1") is None
    assert await a.get_session("s2") == b"two"
    assert await a.get_session("never") is None
    await a.drop_session("never")


async def test_a_session_expires_unless_written_again(open_store: Open) -> None:
    store = await open_store()
    await store.put_session("short", b"x", 0.3)
    await store.put_session("kept", b"y", 0.3)
    await open_store.elapse(0.2)  # type: ignore[attr-defined]
    await store.put_session("kept", b"y2", 0.3)
    await open_store.elapse(0.2)  # type: ignore[attr-defined]
    assert await store.get_session("short") is None
    assert await store.get_session("kept") == b"y2"


async def test_failed_sign_ins_count_per_key_for_every_worker(open_store: Open, clock: ManualClock) -> None:
    a, b = await open_store(), await open_store()
    assert await a.failures(["user:ana", "addr:1"]) == [Failures(0, 0.0), Failures(0, 0.0)]
    await a.note_failures(["user:ana", "addr:1"], 60)
    clock.advance(5)
    await b.note_failures(["user:ana", "addr:2"], 60)
    assert await a.failures(["user:ana", "addr:1", "addr:2", "user:bo"]) == [
        Failures(2, clock()), Failures(1, clock() - 5), Failures(1, clock()), Failures(0, 0.0)]
    await b.clear_failures(["user:ana"])
    assert await a.failures(["user:ana", "addr:1"]) == [Failures(0, 0.0), Failures(1, clock() - 5)]
    await a.clear_failures([])
    assert await a.failures([]) == []


async def test_failed_sign_ins_are_forgotten_after_their_window(open_store: Open) -> None:
    store = await open_store()
    await store.note_failures(["addr:1"], 0.3)
    await open_store.elapse(0.2)  # type: ignore[attr-defined]
    await store.note_failures(["addr:1", "addr:2"], 0.3)
    await open_store.elapse(0.2)  # type: ignore[attr-defined]
    assert [f.failed for f in await store.failures(["addr:1", "addr:2"])] == [2, 1], "kept from the latest failure"
    await open_store.elapse(0.4)  # type: ignore[attr-defined]
    assert await store.failures(["addr:1", "addr:2"]) == [Failures(0, 0.0), Failures(0, 0.0)]


async def test_last_bids_shared(open_store: Open) -> None:
    campaigns = [campaign("c1"), campaign("c2"), campaign("c3")]
    a, b = await open_store(campaigns), await open_store(campaigns)
    await a.save_ping(record("p1"), 60, [], [("c1", 725), ("c3", 10)])
    assert a.last_bids == [725, 0, 10]
    await b.refresh()
    assert b.last_bids == [725, 0, 10]


# Accept rates ------------------------------------------------------------------------------

#: A prior of 10 offers at 50%: a campaign without offers is at 500,000 ppm.
RATED = ExchangeSettings(ranking="expected", accept_window_s=60, accept_prior=0.5, accept_prior_offers=10)


def smoothed(offered: int, accepted: int) -> int:
    """The rate ``RATED`` gives, in ppm: (accepted + 0.5 x 10) / (offered + 10)."""
    return (accepted * 1_000_000 + 500_000 * 10) // (offered + 10)


async def test_accept_rates_count_live_offers_and_every_worker_sees_them(open_store: Open,
                                                                         clock: ManualClock) -> None:
    campaigns = [campaign("c1"), campaign("c2"), campaign("c3")]
    a, b = await open_store(campaigns, RATED), await open_store(campaigns, RATED)
    assert a.accept_ppm == [500_000] * 3, "no offers yet: the prior"
    for n, accepted in enumerate([True, False, False]):
        await a.count_offer(f"p{n}", "c1", accepted, clock())
    await a.count_offer("p0", "c3", True, clock())
    await a.refresh()
    expected = [smoothed(3, 1), 500_000, smoothed(1, 1)]
    assert expected == [461_538, 500_000, 545_454]
    assert a.accept_ppm == expected
    await eventually(lambda: b.accept_ppm == expected, VIEW_DELAY_S)


async def test_an_offer_counted_again_counts_once(open_store: Open, clock: ManualClock) -> None:
    """A resent write (a pipeline sent twice, a sale's writes retried) changes nothing."""
    store = await open_store([campaign("c1")], RATED)
    for _ in range(3):
        await store.count_offer("p1", "c1", False, clock())
    await store.count_offer("p2", "c1", True, clock())
    await store.refresh()
    assert store.accept_ppm == [smoothed(2, 1)]


async def test_offers_leave_the_window_a_slice_at_a_time(open_store: Open, clock: ManualClock) -> None:
    """A 60 s window is 12 slices of 5 s: an offer counts while its slice is one of the last
    12, the current one included. Slices are the store's clock's, so no waiting here."""
    clock.now = (int(clock.now) // 5 + 1) * 5 + 0.5  # half a second into a slice
    store = await open_store([campaign("c1"), campaign("c2")], RATED)
    start = clock.now

    async def at(seconds: float) -> list[int]:
        clock.now = start + seconds
        await store.refresh()
        return store.accept_ppm

    await store.count_offer("p1", "c1", False, clock())
    await store.count_offer("p2", "c1", False, clock())
    assert await at(30) == [smoothed(2, 0), 500_000]
    await store.count_offer("p3", "c1", True, clock())
    await store.count_offer("p3", "c2", True, clock())
    assert await at(59) == [smoothed(3, 1), smoothed(1, 1)], "the first slice is the window's oldest"
    assert await at(60) == [smoothed(1, 1), smoothed(1, 1)], "and then it has left"
    assert await at(89) == [smoothed(1, 1), smoothed(1, 1)]
    assert await at(90) == [500_000, 500_000], "nothing left but the prior"


async def test_a_reload_keeps_the_rates_of_the_campaigns_it_keeps(open_store: Open, clock: ManualClock) -> None:
    store = await open_store([campaign("c1"), campaign("c2")], RATED)
    await store.count_offer("p1", "c2", True, clock())
    await store.refresh()
    before = store.accept_ppm
    store.adopt(Numbering.of([campaign("c0"), campaign("c2")], RATED))
    assert store.accept_ppm == [500_000, smoothed(1, 1)]
    assert before == [500_000, smoothed(1, 1)], "a reader of the old list keeps the old numbering"
    store.adopt(Numbering.of([campaign("c2")], ExchangeSettings(ranking="expected", accept_window_s=120)))
    assert store.accept_ppm == [1_000_000], "a new window counts afresh (here at the default prior, 100%)"


@pytest.mark.parametrize("open_store", ["redis", "cluster"], indirect=True)  # the memory store forgets nothing
@pytest.mark.parametrize("after", [1, 5], ids=["fewer-offers-after", "more-offers-after"])
async def test_accept_counts_redis_forgot_are_read_afresh(open_store: Open, clock: ManualClock, after: int) -> None:
    """A worker reads a slice's log on from where it stopped; a log that Redis lost and began
    again (shorter, or as long but another) is read whole again: the view holds what Redis
    holds, never a mix of the two logs."""
    a, b = await open_store([campaign("c1")], RATED), await open_store([campaign("c1")], RATED)
    for n in range(3):
        await a.count_offer(f"p{n}", "c1", False, clock())
    await b.refresh()
    assert b.accept_ppm == [smoothed(3, 0)]
    open_store.servers.flush()  # type: ignore[attr-defined]
    for n in range(after):
        await a.count_offer(f"q{n}", "c1", True, clock())
    await b.refresh()
    assert b.accept_ppm == [smoothed(after, after)]
    await a.count_offer("r", "c1", False, clock())
    await b.refresh()
    assert b.accept_ppm == [smoothed(after + 1, after)], "and then on from there"


async def test_ranking_by_bid_counts_nothing(open_store: Open, clock: ManualClock) -> None:
    exchange = ExchangeSettings(accept_prior=0.5)
    store = await open_store([campaign("c1")], exchange)
    await store.count_offer("p1", "c1", False, clock())
    await store.refresh()
    assert store.accept_ppm == [500_000]
    if open_store.servers is not None:  # type: ignore[attr-defined]
        assert [key for port in open_store.servers.ports  # type: ignore[attr-defined]
                for key in cli(port, "--scan").split() if "accept" in key] == []


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
async def test_every_key_but_last_bids_expires(open_store: Open, books: Ledger) -> None:
    """The marker too: the first refresh refilled the counts from the (empty) ledger."""
    campaigns = [campaign("c1", hourly=5, daily_budget=50.0)]
    store = await open_store(campaigns, ExchangeSettings(bench_after_timeouts=2, ranking="expected"),
                             books.sold_counts)
    assert cli(open_store.servers.ports[0], "-c", "EXISTS", "pp:{camp:c1}:primed").strip() == "1"  # type: ignore[attr-defined]
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
    await store.put_session("s1", b"x", 60)
    await store.note_failures(["user:ana", "addr:1"], 60)
    await store.count_offer("p1", "c1", True, now)
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


@pytest.fixture(scope="module")
def stoppable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own, since its tests stop it."""
    server = PostgresServer().start()
    yield server
    server.remove()


async def recovered(store: Store) -> bool:
    try:
        return await store.get_ping("p1") is None
    except StoreUnavailable:
        return False
