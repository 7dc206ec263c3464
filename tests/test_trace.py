"""GET /v1/pings/{ping_id}: the per-lead trace (the project's addition, see docs/contract-notes.md)."""

from __future__ import annotations

import pytest

from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, OTHER_KEY, SELLER_TEST_KEY, base_config
from tests.helpers_contract import assert_error, make_config, parse_rfc3339_utc, ping_ok, sold_ping

TRACE_KEYS = {"ping_id", "status", "test", "created_at", "expires_at", "auction_ms", "ranking", "campaigns"}


async def test_trace_shape_before_and_after_the_post(buyers, exchange):
    buyers.script("c1", ping=bid(4), post=reject("too_far"))
    buyers.script("c2", ping=bid(3), post=accept())
    ex = await exchange(make_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}, acme={"revenue_share": 0.5}))
    answer = await ping_ok(ex)
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200 and set(trace) == TRACE_KEYS | {"price"}
    assert trace["ping_id"] == answer["ping_id"] and trace["status"] == "bid" and trace["price"] == 2
    assert trace["test"] is False and trace["expires_at"] == answer["expires_at"]
    assert parse_rfc3339_utc(trace["created_at"]) < parse_rfc3339_utc(trace["expires_at"])
    assert trace["auction_ms"] == answer["auction_ms"]
    assert trace["ranking"] == "bid", "the default: by the bid alone"
    by_id = {c["campaign_id"]: c for c in trace["campaigns"]}
    assert by_id["c1"]["buyer_id"] == "b1" and by_id["c1"]["outcome"] == "bid" and by_id["c1"]["bid"] == 4
    assert by_id["c2"]["buyer_id"] == "b2" and by_id["c2"]["bid"] == 3 and by_id["c2"]["ms"] >= 0

    status, sold = await ex.post(answer["ping_id"], LEAD)
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200 and set(trace) == TRACE_KEYS | {"price", "post"}
    post = trace["post"]
    assert set(post) == {"status", "attempts", "offers", "price", "lead_id"}
    assert post["status"] == "sold" and post["price"] == sold["price"] == 1.5
    assert post["lead_id"] == sold["lead_id"] and post["attempts"] == sold["attempts"] == 2
    assert [(o["campaign_id"], o["outcome"], o["bid"]) for o in post["offers"]] == [
        ("c1", "rejected:too_far", 4), ("c2", "accepted", 3)]


async def test_trace_of_an_unsold_post_has_no_price(buyers, exchange):
    buyers.script("c1", ping=bid(4), post=reject())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer, _ = await sold_ping(ex)
    post = (await ex.trace(answer["ping_id"]))[1]["post"]
    assert set(post) == {"status", "attempts", "offers"} and post["status"] == "unsold"


async def test_no_bid_trace(buyers, exchange):
    buyers.script("c1", ping=Reply(status=204))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex)
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200 and set(trace) == TRACE_KEYS and trace["status"] == "no_bid"
    assert [(c["campaign_id"], c["outcome"]) for c in trace["campaigns"]] == [("c1", "no_bid")]
    assert "bid" not in trace["campaigns"][0]


async def test_trace_is_only_for_the_sellers_own_keys(buyers, exchange):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex)
    assert (await ex.trace(answer["ping_id"], key=SELLER_TEST_KEY))[0] == 200, "the seller's test key is its own"
    status, body = await ex.trace(answer["ping_id"], key=OTHER_KEY)
    assert_error(status, body, "not_found")
    status, body = await ex.trace("0" * 24)
    assert_error(status, body, "not_found")


async def test_trace_of_a_direct_post(buyers, exchange):
    buyers.script("c1", ping=bid(2), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, sold = await ex.direct({"vertical": "auto", "zip": "90210", "lead": LEAD})
    status, trace = await ex.trace(sold["ping_id"])
    assert status == 200 and trace["post"]["status"] == "sold" and trace["post"]["lead_id"] == sold["lead_id"]


BUYER_ANSWERS: list[tuple[str, Reply, str]] = [
    ("bids", bid(3), "bid"),
    ("passes", Reply(status=204), "no_bid"),
    ("zero", bid(0), "no_bid"),
    ("slow", bid(9, delay=3.0), "timeout"),
    ("broken", Reply(status=500), "error:http_500"),
    ("redirect", Reply(status=302, headers={"Location": "http://127.0.0.1:9/"}), "error:http_302"),
    ("garbled", Reply(status=200, body=b"{not json"), "error:bad_json"),
    ("negative", bid(-1), "error:bad_bid"),
    ("stringly", Reply(json={"bid": "3.00"}), "error:bad_bid"),
    ("huge", Reply(status=200, body=b'{"bid": 1, "pad": "' + b"x" * 70_000 + b'"}'), "error:too_large"),
    ("cheap", bid(0.5), "below_min_bid"),
]


async def test_every_ping_outcome(buyers, exchange):
    for campaign, answer, _ in BUYER_ANSWERS:
        buyers.script(campaign, ping=answer)
    # A second of campaign timeout: a stall of the one loop that runs exchange, buyers and test
    # (a loaded machine) must not turn every answer into a timeout.
    campaigns = [{"id": c, "timeout_ms": 1000} for c, _, _ in BUYER_ANSWERS]
    campaigns += [{"id": "elsewhere", "filters": {"states": ["NY"]}},
                  {"id": "quality", "filters": {"min_quality": 90}},
                  {"id": "rules", "filters": {"rules": [{"field": "age", "op": "gte", "value": 18}]}},
                  {"id": "reset"}]
    buyers.script("reset", ping=Reply(reset=True))
    ex = await exchange(make_config(buyers, *campaigns, acme={"min_bid": 1.0}, auction_timeout_ms=2000))
    answer = await ping_ok(ex)
    status, trace = await ex.trace(answer["ping_id"])
    got = {c["campaign_id"]: c["outcome"] for c in trace["campaigns"]}
    expected = {c: outcome for c, _, outcome in BUYER_ANSWERS}
    expected |= {"elsewhere": "filtered:states", "quality": "filtered:min_quality", "rules": "filtered:rule:age"}
    assert {k: v for k, v in got.items() if k != "reset"} == expected
    assert got["reset"].startswith("error:")
    by_id = {c["campaign_id"]: c for c in trace["campaigns"]}
    assert by_id["cheap"]["bid"] == 0.5 and by_id["bids"]["bid"] == 3
    assert answer["price"] == 3


async def test_capped_and_benched_outcomes(buyers, exchange):
    buyers.script("capped", ping=bid(5), post=accept())
    buyers.script("flaky", ping=bid(1, delay=0.5))
    ex = await exchange(base_config(buyers, {"id": "capped", "caps": {"daily": 1}}, {"id": "flaky", "timeout_ms": 100},
                                    bench_after_timeouts=1, bench_duration_s=30))
    await sold_ping(ex)
    answer = await ping_ok(ex)
    got = {c["campaign_id"]: c["outcome"] for c in (await ex.trace(answer["ping_id"]))[1]["campaigns"]}
    assert got == {"capped": "capped", "flaky": "benched"}


@pytest.mark.parametrize("post_answer,outcome", [
    (reject("Price too high"), "rejected:Price_too_high"),
    (Reply(status=503), "rejected:error:http_503"),
    (accept(delay=1.0), "rejected:timeout"),
    (Reply(json={"accepted": True, "lead_id": "L-1"}), "accepted"),
])
async def test_post_offer_outcomes(buyers, exchange, post_answer, outcome):
    buyers.script("c1", ping=bid(2), post=post_answer)
    ex = await exchange(base_config(buyers, {"id": "c1", "post_timeout_ms": 150}))
    answer, _ = await sold_ping(ex)
    offers = (await ex.trace(answer["ping_id"]))[1]["post"]["offers"]
    assert [(o["campaign_id"], o["outcome"]) for o in offers] == [("c1", outcome)]


async def test_a_large_vertical_is_counted_by_reason_not_listed(buyers, exchange):
    """Past 64 campaigns not pinged, the trace counts them by reason (records stay small)."""
    buyers.script("hit", ping=bid(2))
    many = [{"id": f"ny{i}", "filters": {"states": ["NY"]}} for i in range(60)]
    many += [{"id": f"big{i}", "filters": {"min_quality": 99}} for i in range(10)]
    ex = await exchange(base_config(buyers, {"id": "hit"}, *many))
    answer = await ping_ok(ex)
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200
    assert [(c["campaign_id"], c["outcome"]) for c in trace["campaigns"]] == [("hit", "bid")]
    assert trace["not_pinged"] == {"filtered:states": 60, "filtered:min_quality": 10}

    few = await exchange(base_config(buyers, {"id": "hit"}, *many[:64]))
    status, trace = await few.trace((await ping_ok(few))["ping_id"])
    assert "not_pinged" not in trace and len(trace["campaigns"]) == 65
