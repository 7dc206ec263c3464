"""Contract 1.2, 3 (post answers) and 4.9: the post-reject cascade over real buyer servers."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from tests.helpers_contract import make_config, offers, ping_ok, sold_ping
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, base_config


def recording(order: list[str], campaign_id: str, reply: Reply) -> Callable[[dict[str, Any]], Reply]:
    """A post script that notes when the exchange reached this campaign."""
    def script(body: dict[str, Any]) -> Reply:
        order.append(campaign_id)
        return reply
    return script


async def test_cascade_goes_down_the_bids_until_one_accepts(buyers, exchange):
    order: list[str] = []
    answers = {
        "c1": reject("too_old"),
        "c2": Reply(status=500, json={"oops": 1}),
        "c3": accept(delay=1.0),  # longer than its post_timeout_ms
        "c4": Reply(status=200, body=b"definitely not json"),
        "c5": Reply(status=200, json={"accepted": "yes"}),
        "c6": Reply(reset=True),
        "c7": accept("won-here"),
        "c8": accept(),
    }
    for n, (campaign, answer) in enumerate(answers.items()):
        buyers.script(campaign, ping=bid(9 - n), post=recording(order, campaign, answer))
    ex = await exchange(make_config(buyers, *({"id": c, "post_timeout_ms": 200} for c in answers),
                                    acme={"revenue_share": 0.7}))
    answer = await ping_ok(ex)
    assert answer["price"] == 6.3  # 9.00 x 0.7: what the top bidder would pay
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200
    assert order == ["c1", "c2", "c3", "c4", "c5", "c6", "c7"], "best bid first, stop at the first accept"
    assert sold["status"] == "sold" and sold["attempts"] == 7
    assert sold["price"] == 2.1, "the seller gets the accepting buyer's bid (3.00) x share, not the top bid"
    trace = dict(await offers(ex, answer["ping_id"]))
    assert trace["c1"] == "rejected:too_old"
    assert trace["c2"] == "rejected:error:http_500"
    assert trace["c3"] == "rejected:timeout"
    assert trace["c4"] == "rejected:error:bad_json"
    assert trace["c5"] == "rejected:error:bad_answer"
    assert trace["c6"].startswith("rejected:error:")
    assert trace["c7"] == "accepted"
    assert "c8" not in trace and "c8" not in buyers.posts
    prices = [buyers.posts[c][0].body["price"] for c in list(answers)[:7]]
    assert prices == [9, 8, 7, 6, 5, 4, 3], "each buyer is offered at its own bid"


async def test_every_reject_means_unsold(buyers, exchange):
    for n, c in enumerate(("c1", "c2", "c3")):
        buyers.script(c, ping=bid(3 - n), post=reject())
    ex = await exchange(base_config(buyers, {"id": "c1"}, {"id": "c2"}, {"id": "c3"}))
    answer, result = await sold_ping(ex)
    assert result == {"ping_id": answer["ping_id"], "status": "unsold", "attempts": 3}
    assert [c for c, _ in await offers(ex, answer["ping_id"])] == ["c1", "c2", "c3"]


@pytest.mark.parametrize("reason,recorded", [("Too old!", "rejected:Too_old"), (None, "rejected:unspecified"),
                                             ("dupe", "rejected:dupe"), ("timeout", "rejected:buyer_timeout")])
async def test_reject_reason_is_in_the_trace(buyers, exchange, reason, recorded):
    payload: dict[str, Any] = {"accepted": False}
    if reason is not None:
        payload["reason"] = reason
    buyers.script("c1", ping=bid(1), post=Reply(json=payload))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer, result = await sold_ping(ex)
    assert result["status"] == "unsold"
    assert await offers(ex, answer["ping_id"]) == [("c1", recorded)]


async def test_accept_without_lead_id_is_a_sale(buyers, exchange):
    buyers.script("c1", ping=bid(1), post=Reply(json={"accepted": True}))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    _, sold = await sold_ping(ex)
    assert sold["status"] == "sold" and sold["lead_id"]


async def test_cascade_ends_within_post_timeout_ms(buyers, exchange):
    for n, c in enumerate(("c1", "c2", "c3")):
        buyers.script(c, ping=bid(3 - n), post=accept(delay=1.5))
    ex = await exchange(base_config(buyers, *({"id": c, "post_timeout_ms": 5000} for c in ("c1", "c2", "c3")),
                                    post_timeout_ms=300))
    answer = await ping_ok(ex)
    started = time.monotonic()
    status, result = await ex.post(answer["ping_id"], LEAD)
    elapsed = time.monotonic() - started
    # One slow buyer alone would take 1.5 s, three 4.5 s; the whole cascade has 0.3 s.
    assert elapsed < 1.2, elapsed
    assert status == 200 and result["status"] == "unsold" and result["attempts"] == 1
    trace = await offers(ex, answer["ping_id"])
    assert trace[0] == ("c1", "rejected:timeout")
    assert all(outcome == "skipped:post_deadline" for _, outcome in trace[1:])


async def test_cascade_deadline_leaves_time_for_a_fast_next_buyer(buyers, exchange):
    buyers.script("slow", ping=bid(5), post=accept(delay=1.5))
    buyers.script("fast", ping=bid(4), post=accept())
    ex = await exchange(base_config(buyers, {"id": "slow", "post_timeout_ms": 200}, {"id": "fast"},
                                    post_timeout_ms=2000))
    answer, sold = await sold_ping(ex)
    assert sold["status"] == "sold" and sold["price"] == 4 and sold["attempts"] == 2
    assert await offers(ex, answer["ping_id"]) == [("slow", "rejected:timeout"), ("fast", "accepted")]


async def test_fixed_price_campaign_takes_part_in_the_cascade(buyers, exchange):
    buyers.script("pinged", ping=bid(5), post=reject())
    buyers.script("fixed", post=accept())
    ex = await exchange(base_config(buyers, {"id": "pinged"}, {"id": "fixed", "ping_url": None, "fixed_price": 2}))
    answer, sold = await sold_ping(ex)
    assert sold["price"] == 2 and sold["attempts"] == 2
    assert buyers.posts["fixed"][0].body["price"] == 2 and buyers.posts["fixed"][0].body.get("bid_id") is None
