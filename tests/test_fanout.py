"""Fan-out and deadlines: campaigns are asked in parallel, nobody holds the seller, and
what is given up on is closed, not leaked; nor are idle connections kept past their time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import pytest

from pingpost import http1
from pingpost.buyers import MAX_ANSWER, tls_context
from tests.helpers_raw import answer, hang
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, PING, base_config


async def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


def outcomes(trace: dict[str, Any]) -> dict[str, str]:
    return {c["campaign_id"]: c["outcome"] for c in trace["campaigns"]}


async def test_five_slow_buyers_answer_in_one_buyer_latency(buyers, exchange):
    ids = [f"c{i}" for i in range(5)]
    for i, cid in enumerate(ids):
        buyers.script(cid, ping=bid(1.00 + i, delay=0.2))
    ex = await exchange(base_config(buyers, *({"id": cid, "timeout_ms": 900} for cid in ids)))
    (status, answered), elapsed = await timed(ex.ping(PING))
    assert status == 200 and answered["price"] == 5.0
    assert elapsed < 0.8, f"five 200 ms buyers took {elapsed:.3f}s: not asked in parallel"
    _, trace = await ex.trace(answered["ping_id"])
    assert set(outcomes(trace).values()) == {"bid"}


async def test_slow_buyer_cannot_hold_the_seller(buyers, exchange):
    buyers.script("slow", ping=bid(50.0, delay=1.0), post=accept())
    buyers.script("fast", ping=bid(2.0), post=accept())
    config = base_config(buyers, {"id": "slow", "timeout_ms": 5000}, {"id": "fast", "buyer": "b2"},
                         auction_timeout_ms=300)
    ex = await exchange(config)
    (status, answered), elapsed = await timed(ex.ping(PING))
    assert status == 200 and answered["price"] == 2.0
    assert elapsed < 0.3 + 0.25, f"the auction took {elapsed:.3f}s past its 300 ms deadline"
    assert buyers.pings["slow"][0].body["tmax_ms"] <= 300

    await asyncio.sleep(0.9)  # the slow buyer's answer would have arrived by now: it is dropped
    _, trace = await ex.trace(answered["ping_id"])
    assert outcomes(trace) == {"slow": "timeout", "fast": "bid"}
    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["price"] == 2.0 and sold["attempts"] == 1
    assert "slow" not in buyers.posts


async def test_the_seller_timeout_shortens_the_deadline(buyers, exchange):
    buyers.script("slow", ping=bid(5.0, delay=0.6))
    ex = await exchange(base_config(buyers, {"id": "slow", "timeout_ms": 2000}, auction_timeout_ms=2000))
    (status, answered), elapsed = await timed(ex.ping({**PING, "timeout_ms": 150}))
    assert status == 200 and answered["status"] == "no_bid"
    assert elapsed < 0.15 + 0.25
    assert 100 <= buyers.pings["slow"][0].body["tmax_ms"] <= 150


async def test_tmax_ms_is_the_time_really_left(buyers, exchange):
    """tmax_ms = min(campaign timeout_ms, what is left of the auction deadline)."""
    buyers.script("short", ping=bid(1.0))
    buyers.script("long", ping=bid(1.0))
    ex = await exchange(base_config(buyers, {"id": "short", "timeout_ms": 120},
                                    {"id": "long", "buyer": "b2", "timeout_ms": 5000}, auction_timeout_ms=400))
    status, _ = await ex.ping(PING)
    assert status == 200
    assert buyers.pings["short"][0].body["tmax_ms"] == 120
    assert 350 <= buyers.pings["long"][0].body["tmax_ms"] <= 400


async def test_a_campaign_is_cut_at_its_own_timeout(buyers, exchange):
    """The timeout a campaign is told (tmax_ms) is the one it is held to."""
    buyers.script("late", ping=bid(9.0, delay=0.25))
    buyers.script("on_time", ping=bid(1.0, delay=0.05))
    ex = await exchange(base_config(buyers, {"id": "late", "timeout_ms": 150},
                                    {"id": "on_time", "buyer": "b2", "timeout_ms": 150}, auction_timeout_ms=1000))
    (status, answered), elapsed = await timed(ex.ping(PING))
    assert status == 200 and answered["price"] == 1.0
    assert elapsed < 0.15 + 0.2, "the auction ends when every campaign has answered or timed out"
    _, trace = await ex.trace(answered["ping_id"])
    assert outcomes(trace) == {"late": "timeout", "on_time": "bid"}


async def test_given_up_calls_do_not_leak_connections(buyers, exchange, raw_buyer):
    silent = raw_buyer.script("silent", hang)
    prompt = raw_buyer.script("prompt", answer(200, {"bid": 1.0}))
    # Half a second before a silent call is given up: a request the test's loop has not read
    # when the exchange resets the connection is lost with it, so a stall of that loop on a
    # loaded machine must stay far from the timeout.
    ex = await exchange(base_config(
        buyers, {"id": "silent", "ping_url": silent, "timeout_ms": 500},
        {"id": "prompt", "buyer": "b2", "ping_url": prompt, "timeout_ms": 1000},
        auction_timeout_ms=1500, bench_after_timeouts=0))
    rounds = 10
    for _ in range(rounds):
        status, answered = await ex.ping(PING)
        assert status == 200 and answered["price"] == 1.0
    for _ in range(50):  # the aborts reach the buyer's side within a few loop turns
        if raw_buyer.open_connections <= 1:
            break
        await asyncio.sleep(0.02)
    # Every timed-out call closed its connection; the prompt buyer's one keep-alive
    # connection is reused for every auction and is the only one left open.
    assert raw_buyer.open_connections == 1
    assert len(raw_buyer.requests["/silent"]) == rounds
    assert raw_buyer.total_connections == rounds + 1
    idle = ex.engine.client._http.idle
    assert sum(len(pool) for pool in idle.values()) == 1


async def test_no_pool_limit_queues_pings(buyers, exchange, raw_buyer):
    """50 pings at once against one buyer: all 50 calls are out at the same time. The buyer
    answers none until it holds all 50, so a pool limit below 50 (calls queued behind each
    other) would leave the pings past the limit unanswered until their deadline."""
    pings = 50
    arrived = 0
    all_here = asyncio.Event()
    bid_one = answer(200, {"bid": 1.0})

    async def once_all_are_here(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        nonlocal arrived
        arrived += 1
        if arrived == pings:
            all_here.set()
        await all_here.wait()
        return await bid_one(reader, writer)

    url = raw_buyer.script("ping", once_all_are_here)
    ex = await exchange(base_config(buyers, {"id": "c1", "ping_url": url, "timeout_ms": 3000},
                                    auction_timeout_ms=3000))
    results = await asyncio.gather(*(ex.ping(PING) for _ in range(pings)))
    assert all(status == 200 and body["status"] == "bid" for status, body in results), results
    assert len(raw_buyer.requests["/ping"]) == pings


async def wait_for(condition: Callable[[], bool], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def client_for(url: str, idle_timeout: float) -> tuple[http1.Client, http1.Target]:
    return (http1.Client(tls_context(None), MAX_ANSWER, idle_timeout=idle_timeout),
            http1.Target.of(url, {"Content-Type": "application/json"}))


async def test_idle_connections_are_closed_after_the_idle_timeout(raw_buyer):
    """After a burst, the connections left idle are closed once the idle timeout has passed,
    and the emptied pool is dropped; within it a call reuses one."""
    client, target = client_for(raw_buyer.script("ping", answer(200, {"bid": 1.0})), idle_timeout=0.3)
    try:
        answers = await asyncio.gather(*(client.post(target, b"{}") for _ in range(5)))
        assert [status for status, _, _ in answers] == [200] * 5
        assert raw_buyer.open_connections == 5 and len(client.idle[target.origin]) == 5
        status, _, _ = await client.post(target, b"{}")
        assert status == 200 and raw_buyer.total_connections == 5, "an idle connection is reused"

        assert await wait_for(lambda: raw_buyer.open_connections == 0, 3), "the buyer still holds idle connections"
        assert client.idle == {}, "an empty pool is dropped"
        status, _, _ = await client.post(target, b"{}")
        assert status == 200 and raw_buyer.total_connections == 6
    finally:
        client.close()


@pytest.mark.parametrize("keep_alive, pooled", [("timeout=1", False), ("timeout=2, max=100", True)])
async def test_the_buyers_keep_alive_timeout_is_honoured(raw_buyer, keep_alive, pooled):
    """``Keep-Alive: timeout=N`` shortens the idle timeout to N - 1 s: at 1 s a connection is
    not pooled at all, at 2 s it is closed after about a second."""
    url = raw_buyer.script("ping", answer(200, {"bid": 1.0}, headers={"Keep-Alive": keep_alive}))
    client, target = client_for(url, idle_timeout=30)
    try:
        status, _, _ = await client.post(target, b"{}")
        assert status == 200
        assert (target.origin in client.idle) == pooled
        started = time.monotonic()
        assert await wait_for(lambda: raw_buyer.open_connections == 0, 3)
        if pooled:
            assert time.monotonic() - started >= 0.5, "closed long before the buyer's timeout"
        assert await wait_for(lambda: client.idle == {}, 2)
    finally:
        client.close()
