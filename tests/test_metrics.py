"""GET /metrics is Prometheus text whose numbers follow what the exchange did, served only to
``metrics_allowed_ips`` (by default loopback and the private ranges, which include the test
client's 127.0.0.1); GET /healthz."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers_contract import assert_error
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, PING, SELLER_KEY, base_config


async def scrape(ex: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from a real scrape."""
    assert ex.session is not None
    async with ex.session.get(ex.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_metrics_follow_auctions_and_posts(buyers, exchange):
    buyers.script("bidder", ping=bid(3.0), post=reject("full"))
    buyers.script("backup", ping=bid(2.0), post=accept())
    buyers.script("quiet", ping=Reply(status=204))
    buyers.script("slow", ping=bid(9.0, delay=0.5))
    buyers.script("broken", ping=Reply(status=500))
    ex = await exchange(base_config(
        buyers, {"id": "bidder"}, {"id": "backup", "buyer": "b2"}, {"id": "quiet"},
        {"id": "slow", "timeout_ms": 100}, {"id": "broken", "buyer": "b3"},
        bench_after_timeouts=0))

    before = await scrape(ex)
    assert value(before, "pingpost_auction_seconds_count") == 0

    rounds = 3
    for _ in range(rounds):
        status, answered = await ex.ping(PING)
        assert status == 200 and answered["price"] == 3.0
        status, sold = await ex.post(answered["ping_id"], LEAD)
        assert status == 200 and sold["status"] == "sold" and sold["price"] == 2.0
    status, _ = await ex.ping({**PING, "vertical": "nothing_here"})
    assert status == 200

    after = await scrape(ex)
    assert value(after, "pingpost_auction_seconds_count") == rounds + 1
    assert value(after, "pingpost_auction_seconds_bucket", le="+Inf") == rounds + 1
    assert 0 < value(after, "pingpost_auction_seconds_sum") < (rounds + 1) * 1.0
    assert value(after, "pingpost_pings_total", status="bid") == rounds
    assert value(after, "pingpost_pings_total", status="no_bid") == 1
    for campaign, outcome in (("bidder", "bid"), ("backup", "bid"), ("quiet", "no_bid"), ("slow", "timeout"),
                              ("broken", "error")):
        assert value(after, "pingpost_campaign_pings_total", campaign=campaign, outcome=outcome) == rounds, campaign
    assert value(after, "pingpost_posts_total", campaign="bidder", outcome="rejected") == rounds
    assert value(after, "pingpost_posts_total", campaign="backup", outcome="accepted") == rounds
    assert value(after, "pingpost_leads_total", status="sold") == rounds
    assert value(after, "pingpost_post_seconds_count") == rounds
    assert value(after, "pingpost_inflight") == 0


async def test_inflight_gauge_counts_requests_being_handled(buyers, exchange):
    buyers.script("c1", ping=bid(1.0, delay=0.3))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    pings = [asyncio.ensure_future(ex.ping(PING)) for _ in range(3)]
    await asyncio.sleep(0.15)
    during = await scrape(ex)
    assert value(during, "pingpost_inflight") == 3
    assert all(status == 200 for status, _ in await asyncio.gather(*pings))
    assert value(await scrape(ex), "pingpost_inflight") == 0


async def test_refused_requests_are_counted_by_code(buyers, exchange):
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    assert (await ex.ping(PING, key="wrong-key-123"))[0] == 401
    assert (await ex.call("POST", "/v1/ping", data=b"{"))[0] == 400
    samples = await scrape(ex)
    assert value(samples, "pingpost_refused_requests_total", code="unauthorized") == 1
    assert value(samples, "pingpost_refused_requests_total", code="malformed_json") == 1


async def test_metrics_and_healthz_need_no_key(buyers, exchange):
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, body = await ex.call("GET", "/healthz", key=None)
    assert status == 200 and body == {"status": "ok"}
    status, text = await ex.call("GET", "/metrics", key=SELLER_KEY)
    assert status == 200 and "# TYPE pingpost_auction_seconds histogram" in text


async def test_metrics_are_refused_to_an_address_outside_metrics_allowed_ips(buyers, exchange):
    """They name every campaign with its bids and sales; the test client is 127.0.0.1."""
    buyers.script("c1", ping=bid(1.0))
    ex = await exchange(base_config(buyers, {"id": "c1"}, metrics_allowed_ips=["10.0.0.0/8", "fc00::/7"]))
    assert (await ex.ping(PING))[0] == 200
    status, body = await ex.call("GET", "/metrics", key=None)
    assert_error(status, body, "forbidden")
    assert "c1" not in str(body)
    assert (await ex.call("GET", "/metrics", key=SELLER_KEY))[0] == 403  # a seller's key opens nothing here
    assert (await ex.call("GET", "/healthz", key=None))[0] == 200


async def test_no_metrics_reader_at_all(buyers, exchange):
    ex = await exchange(base_config(buyers, {"id": "c1"}, metrics_allowed_ips=[]))
    assert_error(*(await ex.call("GET", "/metrics", key=None)), "forbidden")


@pytest.mark.parametrize("forwarded,allowed,status", [
    (None, ["10.0.0.0/8"], 403),  # the proxy itself is not a reader here
    ("10.1.2.3", ["10.0.0.0/8"], 200),
    ("203.0.113.7", ["10.0.0.0/8"], 403),
    ("203.0.113.7", None, 403),  # behind a proxy on a private address, the default lets only private clients in
    ("10.1.2.3, 127.0.0.1", ["10.0.0.0/8"], 200),  # trusted hops are skipped, right to left
    ("not-an-address", None, 403),
])
async def test_behind_trusted_proxies_the_forwarded_client_is_the_reader(buyers, exchange, forwarded, allowed, status):
    """The same client-address rule as a seller's allowed_ips: X-Forwarded-For only from trusted_proxies."""
    settings: dict[str, Any] = {"trusted_proxies": ["127.0.0.1/32"]}
    if allowed is not None:
        settings["metrics_allowed_ips"] = allowed
    ex = await exchange(base_config(buyers, {"id": "c1"}, **settings))
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    answered, body = await ex.call("GET", "/metrics", key=None, headers=headers)
    assert answered == status, body
    if status == 403:
        assert_error(answered, body, "forbidden")


async def test_x_forwarded_for_from_an_untrusted_peer_is_not_believed(buyers, exchange):
    ex = await exchange(base_config(buyers, {"id": "c1"}, metrics_allowed_ips=["10.0.0.0/8"]))
    status, _ = await ex.call("GET", "/metrics", key=None, headers={"X-Forwarded-For": "10.1.2.3"})
    assert status == 403
