"""Expected ranking end to end: real buyer servers, sellers' calls over HTTP, on one worker
(the memory store) and on two workers sharing one Redis (each ping on one, its post on the
other).

Two buyers bid on every ping: ``fickle`` 10.00 and accepts one post in ten, ``steady`` 9.50
and accepts every one. The seller's share is 0.7. Ranked by bid, fickle stays on top and is
offered every lead first; ranked by expected worth, one rejection drops it under steady,
and from then on the seller is quoted, and paid, steady's own bid times its share.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from pingpost.store.redis import RedisStore
from tests.helpers_contract import eventually, make_config, ping_ok
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, SELLER_KEY, SELLER_TEST_KEY

ROUNDS = 10
#: A weak prior, 4 offers at 50%, so that worth and bid differ even for a buyer that takes everything.
PRIOR = {"accept_prior": 0.5, "accept_prior_offers": 4}


def smoothed(offered: int, accepted: int) -> int:
    """The accept rate ``PRIOR`` gives, in parts per million."""
    return (accepted * 1_000_000 + 500_000 * 4) // (offered + 4)


def one_in(every: int) -> Callable[[dict[str, Any]], Reply]:
    """A post script that accepts every ``every``-th lead it is offered and rejects the rest."""
    offered = [0]

    def script(body: dict[str, Any]) -> Reply:
        offered[0] += 1
        return accept() if offered[0] % every == 0 else reject("not_today")
    return script


@pytest.fixture(params=["memory", "redis"])
async def start_workers(request: pytest.FixtureRequest, exchange: Any) -> Callable[..., Any]:
    """``await start_workers(config)``: one exchange on a memory store, or two on one Redis."""
    async def start(config: dict[str, Any]) -> list[Any]:
        if request.param == "memory":
            return [await exchange(config)]
        server = request.getfixturevalue("redis_server")
        server.flush()
        return [await exchange(config, store=RedisStore(server.url)) for _ in range(2)]
    return start


async def run_rounds(workers: list[Any], tally: dict[str, list[int]] | None, count: int = ROUNDS,
                     key: str = SELLER_KEY) -> list[dict[str, Any]]:
    """``count`` pings, each posted on the next worker; per round the ping's price, the
    trace's ranking and offers, and the sale. With a ``tally`` (offers, accepted per
    campaign) every worker's view of the accept rates is waited for before the next ping."""
    rounds = []
    for n in range(count):
        pinger, poster = workers[n % len(workers)], workers[(n + 1) % len(workers)]
        answer = await ping_ok(pinger, key=key)
        status, sold = await poster.post(answer["ping_id"], LEAD, key)
        assert status == 200 and sold["status"] == "sold", sold
        status, trace = await pinger.trace(answer["ping_id"], key)
        assert status == 200, trace
        offers = [(o["campaign_id"], o["outcome"]) for o in trace["post"]["offers"]]
        rounds.append({"price": answer["price"], "ranking": trace["ranking"], "offers": offers,
                       "sold": sold["price"]})
        if tally is not None:
            for campaign_id, outcome in offers:
                tally[campaign_id][0] += 1
                tally[campaign_id][1] += outcome == "accepted"
            await caught_up(workers, tally)
    return rounds


async def caught_up(workers: list[Any], tally: dict[str, list[int]]) -> None:
    """Every worker's accept rates are those of the offers so far (another worker's offers
    reach a Redis store's view by its refresh, within 250 ms; the deadline is generous)."""
    async def check() -> bool:
        return all(w.store.accept_ppm[w.store.index_of(c)] == smoothed(*counts)
                   for w in workers for c, counts in tally.items())
    await eventually(check)


def config(buyers: Any, ranking: str) -> dict[str, Any]:
    buyers.script("fickle", ping=bid(10), post=one_in(10))
    buyers.script("steady", ping=bid(9.5), post=accept())
    return make_config(buyers, {"id": "fickle", "buyer": "b1"}, {"id": "steady", "buyer": "b2"},
                       acme={"revenue_share": 0.7}, ranking=ranking, **PRIOR)


async def test_a_buyer_that_rejects_most_posts_loses_the_top_slot(buyers, start_workers):
    workers = await start_workers(config(buyers, "expected"))
    rounds = await run_rounds(workers, {"fickle": [0, 0], "steady": [0, 0]})
    assert {r["ranking"] for r in rounds} == {"expected"}
    # Both start at the prior: 10.00 x 50% beats 9.50 x 50%. Fickle rejects; it is then worth
    # 10.00 x 40% = 4.00 against steady's 9.50 x 60% = 5.70, and never offered a lead again.
    assert rounds[0] == {"price": 7.0, "ranking": "expected", "sold": 6.65,
                         "offers": [("fickle", "rejected:not_today"), ("steady", "accepted")]}
    for later in rounds[1:]:
        assert later == {"price": 6.65, "ranking": "expected", "sold": 6.65, "offers": [("steady", "accepted")]}, \
            "the seller is quoted steady's real bid x 0.7, not its worth"
    assert len(buyers.posts["fickle"]) == 1
    assert [p.body["price"] for p in buyers.posts["steady"]] == [9.5] * ROUNDS, "each buyer pays its own bid"
    for w in workers:
        assert w.store.accept_ppm[w.store.index_of("fickle")] == smoothed(1, 0) == 400_000
        assert w.store.accept_ppm[w.store.index_of("steady")] == smoothed(ROUNDS, ROUNDS)


async def test_ranked_by_bid_the_top_bidder_keeps_the_top_slot(buyers, start_workers):
    workers = await start_workers(config(buyers, "bid"))
    rounds = await run_rounds(workers, None)
    rejected = {"price": 7.0, "ranking": "bid", "sold": 6.65,
                "offers": [("fickle", "rejected:not_today"), ("steady", "accepted")]}
    assert rounds[:-1] == [rejected] * (ROUNDS - 1)
    assert rounds[-1] == {"price": 7.0, "ranking": "bid", "sold": 7.0, "offers": [("fickle", "accepted")]}
    assert len(buyers.posts["fickle"]) == ROUNDS
    for w in workers:
        await w.store.refresh()
        assert w.store.accept_ppm == [500_000, 500_000], "ranked by bid, nothing is counted"


async def test_test_mode_posts_leave_the_accept_rates_alone(buyers, start_workers):
    """A seller's test traffic says nothing of how a buyer treats live leads."""
    workers = await start_workers(config(buyers, "expected"))
    rounds = await run_rounds(workers, None, 3, SELLER_TEST_KEY)
    assert [r["offers"] for r in rounds] == [[("fickle", "rejected:not_today"), ("steady", "accepted")]] * 3
    assert {r["price"] for r in rounds} == {7.0}
    for w in workers:
        await w.store.refresh()  # what another worker counted would be in the view now
        assert w.store.accept_ppm == [500_000, 500_000]
