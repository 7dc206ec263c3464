"""The exchange app over ``RedisStore``, in process: one worker, and two workers sharing a Redis.

Each worker is a full exchange app (``exchange(config, store=RedisStore(url))``) over a real
redis-server (tests/redis_support.py); "A" and "B" are two such apps on one Redis, as two
worker processes or two hosts would be. The wire-level contract is covered elsewhere on the
memory store; these tests show that it holds when the state lives in Redis and is shared.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest

from pingpost.store.redis import RedisStore
from pingpost.targeting import BENCHED
from tests.helpers_contract import assert_error, make_config, offers, outcomes, ping_ok, sold_ping
from tests.redis_support import cli
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, SELLER_TEST_KEY, base_config

VIEW_DELAY_S = 0.25 + 0.15
"""How soon another worker must see a bench: the documented 250 ms, plus slack for the test."""


@pytest.fixture
def redis_url(redis_server) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture(params=["redis", "cluster"])
def any_url(request: pytest.FixtureRequest) -> str:
    """One Redis server, then a three-master Redis Cluster."""
    servers = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    servers.flush()
    return servers.url


async def workers(exchange: Any, config: dict[str, Any], url: str, n: int = 2) -> list[Any]:
    """``n`` exchange apps, each with its own RedisStore on the same Redis."""
    return [await exchange(config, store=RedisStore(url)) for _ in range(n)]


# One worker ---------------------------------------------------------------------------------


async def test_ping_post_sold_repost_and_trace(buyers, exchange, any_url):
    buyers.script("c1", ping=bid(2.5, "bid-7"), post=accept("buyer-lead-9"))
    (ex,) = await workers(exchange, base_config(buyers, {"id": "c1"}), any_url, 1)
    answer, sold = await sold_ping(ex)
    assert answer["price"] == 2.5
    assert sold == {"ping_id": answer["ping_id"], "status": "sold", "price": 2.5, "lead_id": sold["lead_id"],
                    "attempts": 1}
    assert await ex.post(answer["ping_id"], LEAD) == (200, sold), "a re-post returns the first result"
    assert len(buyers.posts["c1"]) == 1 and buyers.posts["c1"][0].body["bid_id"] == "bid-7"
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200 and trace["status"] == "bid" and trace["price"] == 2.5
    assert trace["post"]["status"] == "sold" and trace["post"]["lead_id"] == sold["lead_id"]
    assert await offers(ex, answer["ping_id"]) == [("c1", "accepted")]


async def test_cap_race_in_one_worker(buyers, exchange, any_url):
    buyers.script("c1", ping=bid(2), post=accept(delay=0.05))
    (ex,) = await workers(exchange, base_config(buyers, {"id": "c1", "caps": {"daily": 5}}), any_url, 1)
    pings = await asyncio.gather(*(ping_ok(ex) for _ in range(20)))
    assert all(p["status"] == "bid" for p in pings)
    results = await asyncio.gather(*(ex.post(p["ping_id"], LEAD) for p in pings))
    assert all(status == 200 for status, _ in results), results
    assert Counter(r["status"] for _, r in results) == {"sold": 5, "unsold": 15}
    assert len(buyers.posts["c1"]) == 5, "no buyer is offered a lead past its cap"


async def test_bench_after_timeouts(buyers, exchange, redis_url):
    buyers.script("slow", ping=bid(5, delay=0.5))
    buyers.script("fast", ping=bid(1))
    config = base_config(buyers, {"id": "slow", "timeout_ms": 100}, {"id": "fast", "buyer": "b2"},
                         bench_after_timeouts=2, bench_window_s=60, bench_duration_s=30)
    (ex,) = await workers(exchange, config, redis_url, 1)
    for _ in range(2):
        assert (await outcomes(ex, (await ping_ok(ex))["ping_id"]))["slow"] == "timeout"
    answer = await ping_ok(ex)
    assert answer["price"] == 1
    assert (await outcomes(ex, answer["ping_id"]))["slow"] == "benched"
    assert len(buyers.pings["slow"]) == 2, "a benched campaign is not pinged"


async def test_test_mode_leaves_caps_and_duplicates_untouched(buyers, exchange, redis_url, redis_server):
    buyers.script("c1", ping=bid(3), post=accept())
    config = make_config(buyers, {"id": "c1", "caps": {"daily": 1}}, buyer_settings={"b1": {"dedupe_days": 30}})
    (ex,) = await workers(exchange, config, redis_url, 1)
    for _ in range(2):
        _, sold = await sold_ping(ex, key=SELLER_TEST_KEY)
        assert sold["status"] == "sold"
    assert all(p.body["test"] is True for p in buyers.posts["c1"])
    assert not cli(redis_server.port, "--scan", "--pattern", "pp:{dup:*").split()
    _, sold = await sold_ping(ex)
    assert sold["status"] == "sold" and sold["price"] == 3, "test sales took neither the cap nor the lead's keys"
    answer = await ping_ok(ex)
    assert answer["status"] == "no_bid" and (await outcomes(ex, answer["ping_id"]))["c1"] == "capped"


# Two workers on one Redis ----------------------------------------------------------------------


async def test_ping_on_one_worker_posted_on_another(buyers, exchange, any_url):
    buyers.script("c1", ping=bid(2.5), post=accept())
    a, b = await workers(exchange, base_config(buyers, {"id": "c1"}), any_url)
    answer = await ping_ok(a)
    status, sold = await b.post(answer["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 2.5
    assert await a.post(answer["ping_id"], LEAD) == (200, sold), "a re-post on the other worker: same body"
    status, trace = await a.trace(answer["ping_id"])
    assert status == 200 and trace["post"]["lead_id"] == sold["lead_id"]
    status, body = await b.post(answer["ping_id"], LEAD, key="other-live-key")
    assert_error(status, body, "not_found")
    assert len(buyers.posts["c1"]) == 1


async def test_post_in_progress_on_either_worker(buyers, exchange, redis_url):
    buyers.script("c1", ping=bid(2), post=accept(delay=0.5))
    a, b = await workers(exchange, base_config(buyers, {"id": "c1"}), redis_url)
    ping_id = (await ping_ok(a))["ping_id"]
    first = asyncio.ensure_future(a.post(ping_id, LEAD))
    while not buyers.posts.get("c1"):  # the buyer has the lead: the post is running
        await asyncio.sleep(0.005)
    for worker in (a, b):
        status, body = await worker.post(ping_id, LEAD)
        assert_error(status, body, "post_in_progress")
    status, sold = await first
    assert status == 200 and sold["status"] == "sold"
    assert await b.post(ping_id, LEAD) == (200, sold)
    assert len(buyers.posts["c1"]) == 1


async def test_cap_holds_under_concurrent_posts_from_two_workers(buyers, exchange, any_url):
    buyers.script("c1", ping=bid(2), post=accept(delay=0.05))
    a, b = await workers(exchange, base_config(buyers, {"id": "c1", "caps": {"daily": 5}}), any_url)
    pings = await asyncio.gather(*(ping_ok(w) for w in (a, b) * 10))
    assert all(p["status"] == "bid" for p in pings)
    # Each ping is posted on the other worker than the one that answered it.
    results = await asyncio.gather(*(w.post(p["ping_id"], LEAD) for w, p in zip((b, a) * 10, pings)))
    assert all(status == 200 for status, _ in results), results
    assert Counter(r["status"] for _, r in results) == {"sold": 5, "unsold": 15}
    assert len(buyers.posts["c1"]) == 5
    for worker in (a, b):  # both views now hold the campaign capped: it is not pinged
        answer = await ping_ok(worker)
        assert answer["status"] == "no_bid" and (await outcomes(worker, answer["ping_id"]))["c1"] == "capped"


async def test_duplicates_are_shared(buyers, exchange, redis_url):
    buyers.script("c1", ping=bid(3), post=accept())
    buyers.script("c2", ping=bid(1), post=accept())
    config = make_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}, buyer_settings={"b1": {"dedupe_days": 30}})
    a, b = await workers(exchange, config, redis_url)
    _, sold = await sold_ping(a)
    assert sold["price"] == 3
    answer, again = await sold_ping(b, lead={**LEAD, "email": "someone.else@example.com"})
    assert again["status"] == "sold" and again["price"] == 1, "same phone, accepted by b1 on the other worker"
    assert await offers(b, answer["ping_id"]) == [("c1", "duplicate"), ("c2", "accepted")]
    assert len(buyers.posts["c1"]) == 1


async def test_bench_on_one_worker_is_seen_by_the_other(buyers, exchange, redis_url):
    buyers.script("slow", ping=bid(5, delay=0.5))
    buyers.script("fast", ping=bid(1))
    config = base_config(buyers, {"id": "slow", "timeout_ms": 100}, {"id": "fast", "buyer": "b2"},
                         bench_after_timeouts=2, bench_window_s=60, bench_duration_s=30)
    a, b = await workers(exchange, config, redis_url)
    await ping_ok(a)
    await ping_ok(a)
    benched = time.monotonic()
    slow = b.store.index_of("slow")
    while b.store.blocks[slow] != BENCHED:
        assert time.monotonic() - benched < VIEW_DELAY_S, "B did not see A's bench in time"
        await asyncio.sleep(0.01)
    answer = await ping_ok(b)
    assert answer["price"] == 1
    assert (await outcomes(b, answer["ping_id"]))["slow"] == "benched"
    assert len(buyers.pings["slow"]) == 2, "B no longer pings the campaign A benched"


# A Redis that stops answering ------------------------------------------------------------


async def test_a_silent_redis_costs_a_503_never_the_deadline(buyers, exchange):
    """A partitioned Redis (connected, silent: SIGSTOP) must not hold pings or posts past
    their deadlines; they answer 503 store_unavailable, and service resumes after."""
    from tests.redis_support import RedisServer

    server = RedisServer().start()
    try:
        buyers.script("c1", ping=bid(2.0), post=accept())
        config = base_config(buyers, {"id": "c1"}, auction_timeout_ms=300, post_timeout_ms=400)
        (ex,) = await workers(exchange, config, server.url, 1)
        ready, _ = await sold_ping(ex)
        pending = await ping_ok(ex)
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            for call in (ex.ping({"vertical": "auto", "zip": "90210", "state": "CA"}),
                         ex.post(pending["ping_id"], LEAD)):
                started = time.perf_counter()
                status, body = await call
                elapsed = time.perf_counter() - started
                assert status == 503 and body["error"]["code"] == "store_unavailable", (status, body)
                assert elapsed < 0.4 + 0.3, f"answered after {elapsed:.2f} s"
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert (await ex.post(ready["ping_id"], LEAD))[0] == 200
    finally:
        server.remove()


async def test_a_sale_the_store_cannot_record_is_kept_and_recorded_later(buyers, exchange):
    """Redis goes silent while the buyer accepts: the seller still hears "sold", a re-post
    is answered from the worker's journal (the lead is not offered again), and once Redis
    is back the sale, its cap count and its result are written."""
    from tests.redis_support import RedisServer

    server = RedisServer().start()
    try:
        assert server.process is not None

        def accept_then_partition(_: dict[str, Any]) -> Any:
            server.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            return accept()

        buyers.script("c1", ping=bid(2.0), post=accept_then_partition)
        config = base_config(buyers, {"id": "c1", "caps": {"daily": 1}}, post_timeout_ms=400)
        (ex,) = await workers(exchange, config, server.url, 1)
        answer = await ping_ok(ex)
        try:
            status, sold = await ex.post(answer["ping_id"], LEAD)
            assert status == 200 and sold["status"] == "sold", sold
            assert await ex.post(answer["ping_id"], LEAD) == (200, sold)
        finally:
            server.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 5
        while True:
            status, trace = await ex.trace(answer["ping_id"])
            if "post" in trace or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert trace["post"]["status"] == "sold" and trace["post"]["lead_id"] == sold["lead_id"]
        assert len(buyers.posts["c1"]) == 1, "the lead was offered once"
        assert await ex.store.reserve("c1", 100, time.time()) is None, "the sale counts against the cap"
    finally:
        server.remove()
