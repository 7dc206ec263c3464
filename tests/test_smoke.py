"""The shortest path through the exchange: ping, post, trace."""

from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, PING, base_config


async def test_ping_post_sell(buyers, exchange):
    buyers.script("c1", ping=bid(3.00, "x1"), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, answer = await ex.ping(PING)
    assert status == 200 and answer["status"] == "bid" and answer["price"] == 3.0
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200, sold
    assert sold["status"] == "sold" and sold["attempts"] == 1 and sold["price"] == 3.0
    lead = buyers.posts["c1"][0].body["lead"]
    assert lead["email"] == "ada@example.com" and lead["phone"] == "4155550134" and lead["state"] == "CA"
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200 and trace["post"]["offers"][0]["outcome"] == "accepted"
