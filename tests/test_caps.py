"""Contract 4.5-4.8 and 7: caps (also under concurrent posts), bench, duplicates, test mode."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable

import pytest

from tests.helpers_contract import eventually, lead, make_config, offers, outcomes, ping_ok, sold_ping
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, SELLER_TEST_KEY, base_config


def nth(*replies: Reply) -> Callable[[dict[str, Any]], Reply]:
    """A script answering with ``replies`` in turn, then the last one for ever."""
    calls = {"n": 0}

    def script(body: dict[str, Any]) -> Reply:
        calls["n"] += 1
        return replies[min(calls["n"], len(replies)) - 1]
    return script


# Caps --------------------------------------------------------------------------------------


@pytest.mark.parametrize("caps,sales", [({"daily": 1}, 1), ({"hourly": 2}, 2), ({"daily": 3, "hourly": 2}, 2),
                                        ({"daily_budget": 6.0}, 2), ({"daily_budget": 3.0}, 1)])
async def test_capped_campaign_is_not_pinged(buyers, exchange, caps, sales):
    buyers.script("c1", ping=bid(3), post=accept())
    buyers.script("c2", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1", "caps": caps}, {"id": "c2", "buyer": "b2"}))
    for _ in range(sales):
        _, sold = await sold_ping(ex)
        assert sold["price"] == 3
    answer = await ping_ok(ex)
    assert answer["price"] == 1, "the capped campaign no longer bids"
    assert len(buyers.pings["c1"]) == sales, "a capped campaign is not pinged"
    assert (await outcomes(ex, answer["ping_id"]))["c1"] == "capped"
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200 and sold["price"] == 1 and len(buyers.posts["c1"]) == sales


async def test_capped_campaign_is_not_offered_posts(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept())
    buyers.script("c2", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1", "caps": {"daily": 1}}, {"id": "c2", "buyer": "b2"}))
    first, second = await ping_ok(ex), await ping_ok(ex)
    assert first["price"] == second["price"] == 3
    assert (await ex.post(first["ping_id"], LEAD))[1]["price"] == 3
    status, sold = await ex.post(second["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 1
    assert sold["attempts"] == 1, "a campaign skipped at its cap is not counted in attempts"
    assert len(buyers.posts["c1"]) == 1
    assert await offers(ex, second["ping_id"]) == [("c1", "capped"), ("c2", "accepted")]


async def test_budget_that_the_bid_would_pass_is_not_offered(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1", "caps": {"daily_budget": 5.0}}))
    await sold_ping(ex)
    # 3.00 of 5.00 is spent: the campaign may still bid, but one more 3.00 lead would pass the budget.
    answer, result = await sold_ping(ex)
    assert result == {"ping_id": answer["ping_id"], "status": "unsold", "attempts": 0}
    assert len(buyers.posts["c1"]) == 1
    assert await offers(ex, answer["ping_id"]) == [("c1", "capped")]


@pytest.mark.parametrize("caps,limit", [({"daily": 5}, 5), ({"hourly": 4}, 4), ({"daily_budget": 10.0}, 5)])
async def test_cap_is_never_exceeded_by_concurrent_posts(buyers, exchange, caps, limit):
    buyers.script("c1", ping=bid(2), post=accept(delay=0.1))
    ex = await exchange(base_config(buyers, {"id": "c1", "caps": caps}))
    pings = [await ping_ok(ex) for _ in range(30)]
    assert all(p["status"] == "bid" for p in pings)
    results = await asyncio.gather(*(ex.post(p["ping_id"], LEAD) for p in pings))
    assert all(status == 200 for status, _ in results)
    statuses = Counter(r["status"] for _, r in results)
    assert statuses == {"sold": limit, "unsold": 30 - limit}
    assert len(buyers.posts["c1"]) == limit, "no buyer is offered a lead past its cap"
    assert sum(r["attempts"] for _, r in results) == limit


async def test_rejected_posts_release_the_reservation(buyers, exchange):
    buyers.script("c1", ping=bid(2), post=nth(reject(), reject(), accept()))
    ex = await exchange(base_config(buyers, {"id": "c1", "caps": {"daily": 1, "daily_budget": 2.0}}))
    for expected in ("unsold", "unsold", "sold"):
        _, result = await sold_ping(ex)
        assert result["status"] == expected
    answer = await ping_ok(ex)
    assert answer["status"] == "no_bid" and (await outcomes(ex, answer["ping_id"]))["c1"] == "capped"


async def test_rejects_under_concurrency_release_their_share(buyers, exchange):
    replies = [reject(delay=0.1)] * 4 + [accept(delay=0.1)]
    buyers.script("c1", ping=bid(2), post=nth(*replies))
    ex = await exchange(base_config(buyers, {"id": "c1", "caps": {"daily": 2}}))
    pings = [await ping_ok(ex) for _ in range(12)]
    results = []
    for _ in range(3):  # waves of concurrent posts: rejects must free the cap for later ones
        wave, pings = pings[:4], pings[4:]
        results += await asyncio.gather(*(ex.post(p["ping_id"], LEAD) for p in wave))
    assert Counter(r["status"] for _, r in results)["sold"] == 2


# Bench -------------------------------------------------------------------------------------


async def test_campaign_that_keeps_timing_out_is_benched_then_tried_again(buyers, exchange):
    buyers.script("c1", ping=nth(bid(5, delay=0.6), bid(5, delay=0.6), bid(4)))
    buyers.script("c2", ping=bid(1))
    ex = await exchange(base_config(buyers, {"id": "c1", "timeout_ms": 100}, {"id": "c2", "buyer": "b2"},
                                    bench_after_timeouts=2, bench_window_s=60, bench_duration_s=1))
    for _ in range(2):
        answer = await ping_ok(ex)
        assert (await outcomes(ex, answer["ping_id"]))["c1"] == "timeout"
    answer = await ping_ok(ex)
    assert (await outcomes(ex, answer["ping_id"]))["c1"] == "benched"
    assert len(buyers.pings["c1"]) == 2, "a benched campaign is not pinged"
    assert answer["price"] == 1

    async def back() -> bool:
        return (await ping_ok(ex))["price"] == 4

    await eventually(back, deadline_s=5.0, step_s=0.1)
    assert len(buyers.pings["c1"]) == 3


async def test_errors_are_not_timeouts_for_the_bench(buyers, exchange):
    buyers.script("c1", ping=Reply(status=500))
    ex = await exchange(base_config(buyers, {"id": "c1"}, bench_after_timeouts=2, bench_duration_s=30))
    for _ in range(4):
        answer = await ping_ok(ex)
        assert (await outcomes(ex, answer["ping_id"]))["c1"] == "error:http_500"
    assert len(buyers.pings["c1"]) == 4


# Duplicates --------------------------------------------------------------------------------


def dedupe_config(buyers: Any, **exchange: Any) -> dict[str, Any]:
    return make_config(buyers, {"id": "c1", "buyer": "b1"}, {"id": "c3", "buyer": "b1"},
                       {"id": "c2", "buyer": "b2"}, buyer_settings={"b1": {"dedupe_days": 30}}, **exchange)


@pytest.mark.parametrize("again", [
    lead(email="someone.else@example.com"),  # same phone
    lead(phone="+1 415.555.0134", email="other@example.com"),  # same phone, written differently
    lead(phone="212-555-0199", email="  ADA@example.COM "),  # same email, written differently
])
async def test_buyer_is_not_offered_a_lead_it_accepted(buyers, exchange, again):
    buyers.script("c1", ping=bid(5), post=accept())
    buyers.script("c3", ping=bid(4), post=accept())
    buyers.script("c2", ping=bid(3), post=accept())
    ex = await exchange(dedupe_config(buyers))
    _, first = await sold_ping(ex)
    assert first["price"] == 5
    answer, sold = await sold_ping(ex, again)
    assert sold["status"] == "sold" and sold["price"] == 3
    assert sold["attempts"] == 1, "duplicates are not counted in attempts"
    assert await offers(ex, answer["ping_id"]) == [("c1", "duplicate"), ("c3", "duplicate"), ("c2", "accepted")]
    assert len(buyers.posts["c1"]) == 1 and "c3" not in buyers.posts


async def test_buyer_without_dedupe_and_fresh_leads_are_offered(buyers, exchange):
    buyers.script("c1", ping=bid(5), post=reject())
    buyers.script("c2", ping=bid(3), post=accept())
    ex = await exchange(dedupe_config(buyers))
    for _ in range(2):  # b2 has no dedupe window: it gets the same lead twice
        _, sold = await sold_ping(ex)
        assert sold["price"] == 3
    assert len(buyers.posts["c2"]) == 2
    assert len(buyers.posts["c1"]) == 2, "a lead b1 rejected is not remembered against it"
    buyers.script("c1", post=accept())
    _, sold = await sold_ping(ex)
    assert sold["price"] == 5
    _, sold = await sold_ping(ex, lead(phone="212-555-0199", email="new@example.com"))
    assert sold["price"] == 5, "a different lead still goes to b1"


# Test mode ---------------------------------------------------------------------------------


async def test_test_mode_leaves_caps_budgets_and_duplicates_untouched(buyers, exchange):
    buyers.script("c1", ping=bid(5), post=accept())
    config = make_config(buyers, {"id": "c1", "caps": {"daily": 1, "hourly": 1, "daily_budget": 5.0}},
                         buyer_settings={"b1": {"dedupe_days": 30}})
    ex = await exchange(config)
    for _ in range(3):
        _, sold = await sold_ping(ex, key=SELLER_TEST_KEY)
        assert sold["status"] == "sold" and sold["price"] == 5
    assert all(p.body["test"] is True for p in buyers.pings["c1"])
    assert all(p.body["test"] is True for p in buyers.posts["c1"])
    # The live lead, same phone and email, still sells: no cap, budget or duplicate was counted.
    _, sold = await sold_ping(ex)
    assert sold["status"] == "sold" and sold["price"] == 5
    assert buyers.posts["c1"][-1].body["test"] is False and buyers.pings["c1"][-1].body["test"] is False
    # ... and that live sale did count.
    answer = await ping_ok(ex)
    assert (await outcomes(ex, answer["ping_id"]))["c1"] == "capped"


async def test_test_mode_trace_says_test(buyers, exchange):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex, key=SELLER_TEST_KEY)
    status, trace = await ex.trace(answer["ping_id"], key=SELLER_TEST_KEY)
    assert status == 200 and trace["test"] is True
    live = await ping_ok(ex)
    assert (await ex.trace(live["ping_id"]))[1]["test"] is False
