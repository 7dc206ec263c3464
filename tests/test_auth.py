"""Contract section 2 (auth, 401/403/503) and 7 (X-Forwarded-For) over real HTTP.

The test client always connects from 127.0.0.1, so address rules are exercised by
choosing ``allowed_ips`` and ``trusted_proxies`` around that address.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers_contract import assert_error, eventually, make_config, ping_ok, raw
from tests.support.buyers import bid
from tests.support.exchange import LEAD, PING, SELLER_KEY

ROUTES = [("POST", "/v1/ping", PING), ("POST", "/v1/post", {"ping_id": "x", "lead": LEAD}),
          ("POST", "/v1/leads", {**PING, "lead": LEAD}), ("GET", "/v1/pings/abc", None)]


async def test_bearer_and_x_api_key_both_work(buyers, exchange):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(make_config(buyers, {"id": "c1"}))
    status, answer = await ex.ping(PING)
    assert status == 200 and answer["status"] == "bid"
    status, answer = await ex.call("POST", "/v1/ping", PING, key=None, headers={"X-API-Key": SELLER_KEY})
    assert status == 200 and answer["status"] == "bid"
    status, answer = await ex.call("POST", "/v1/ping", PING, key=None,
                                   headers={"Authorization": f"bearer {SELLER_KEY}"})
    assert status == 200
    assert all(p.body["seller_id"] == "acme" for p in buyers.pings["c1"])


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer nope-not-a-key"}, {"X-API-Key": "nope-not-a-key"}, {"Authorization": "Bearer "},
    {"Authorization": f"Basic {SELLER_KEY}"}, {"Authorization": SELLER_KEY}, {"X-API-Key": ""},
    {"Authorization": f"Bearer {SELLER_KEY}x"},
], ids=["none", "unknown_bearer", "unknown_x_api_key", "empty_bearer", "basic", "no_scheme", "empty_x_api_key",
        "near_miss"])
@pytest.mark.parametrize("method,path,body", ROUTES, ids=[r[1] for r in ROUTES])
async def test_missing_or_unknown_key_is_401(buyers, exchange, headers, method, path, body):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(make_config(buyers, {"id": "c1"}))
    status, answer = await ex.call(method, path, body, key=None, headers=headers)
    assert_error(status, answer, "unauthorized")
    assert "c1" not in buyers.pings


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[r[1] for r in ROUTES])
async def test_address_outside_allowed_ips_is_403(buyers, exchange, method, path, body):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(make_config(buyers, {"id": "c1"}, acme={"allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}))
    status, answer = await ex.call(method, path, body)
    assert_error(status, answer, "forbidden")
    assert "c1" not in buyers.pings


@pytest.mark.parametrize("allowed", [["127.0.0.1/32"], ["10.0.0.0/8", "127.0.0.0/8"], ["127.0.0.1"]])
async def test_address_inside_allowed_ips_is_served(buyers, exchange, allowed):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(make_config(buyers, {"id": "c1"}, acme={"allowed_ips": allowed}))
    assert (await ping_ok(ex))["status"] == "bid"


async def test_allowed_ips_belong_to_one_seller(buyers, exchange):
    ex = await exchange(make_config(buyers, acme={"allowed_ips": ["10.0.0.0/8"]}))
    status, _ = await ex.ping(PING, key="other-live-key")
    assert status == 200


async def test_unknown_key_from_a_forbidden_address_is_401(buyers, exchange):
    ex = await exchange(make_config(buyers, acme={"allowed_ips": ["10.0.0.0/8"]}))
    status, answer = await ex.ping(PING, key="nope-not-a-key")
    assert_error(status, answer, "unauthorized")


# Behind a proxy: 127.0.0.1 (the test client) plays the proxy. -------------------------------

CLIENT = "203.0.113.7"


@pytest.mark.parametrize("forwarded,expected", [
    ([CLIENT], 200),
    (["198.51.100.1, " + CLIENT], 200),  # left-most entries are whatever the client wrote: ignored
    ([CLIENT + ", 198.51.100.1"], 403),  # the right-most non-proxy address is the client
    ([CLIENT + ", 127.0.0.1"], 200),  # a trusted proxy in the chain is skipped
    ([CLIENT + ",127.0.0.1 , 127.0.0.1"], 200),
    ([CLIENT, "127.0.0.1"], 200),  # several headers read as one list
    (["198.51.100.1", CLIENT + ", 127.0.0.1"], 200),
    ([], 403),  # no header: the proxy's own address
    (["not-an-address"], 403),
    ([CLIENT + ", garbage"], 403),
])
async def test_x_forwarded_for_from_a_trusted_proxy(buyers, exchange, forwarded, expected):
    ex = await exchange(make_config(buyers, acme={"allowed_ips": [CLIENT + "/32"]}, trusted_proxies=["127.0.0.1/32"]))
    headers = [("Authorization", f"Bearer {SELLER_KEY}"), ("Content-Type", "application/json")]
    headers += [("X-Forwarded-For", value) for value in forwarded]
    async with ex.session.post(ex.url + "/v1/ping", json=PING, headers=headers) as response:
        answer = await response.json()
        assert response.status == expected, answer
    if expected != 200:
        assert_error(response.status, answer, "forbidden")


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(buyers, exchange):
    ex = await exchange(make_config(buyers, acme={"allowed_ips": [CLIENT + "/32"]},
                                    other={"allowed_ips": ["127.0.0.1/32"]},
                                    trusted_proxies=["10.0.0.0/8"]))
    status, answer = await ex.call("POST", "/v1/ping", PING, headers={"X-Forwarded-For": CLIENT})
    assert_error(status, answer, "forbidden")
    status, answer = await ex.call("POST", "/v1/ping", PING, key="other-live-key",
                                   headers={"X-Forwarded-For": "10.9.9.9"})
    assert status == 200, "the peer's own address counts when it is not a trusted proxy"


async def test_x_forwarded_for_without_trusted_proxies_is_ignored(buyers, exchange):
    ex = await exchange(make_config(buyers, acme={"allowed_ips": [CLIENT + "/32"]}))
    status, answer = await ex.call("POST", "/v1/ping", PING, headers={"X-Forwarded-For": CLIENT})
    assert_error(status, answer, "forbidden")


# In-flight bound ---------------------------------------------------------------------------


async def test_over_max_inflight_is_503_at_once(buyers, exchange):
    buyers.script("c1", ping=bid(1, delay=0.8))
    ex = await exchange(make_config(buyers, {"id": "c1", "timeout_ms": 3000}, max_inflight=1,
                                    auction_timeout_ms=3000))
    first = asyncio.create_task(ex.ping(PING))

    async def pinged() -> bool:
        return bool(buyers.pings.get("c1"))

    await eventually(pinged)
    for call in (ex.ping(PING), ex.direct({**PING, "lead": LEAD}), ex.post("x" * 24, LEAD)):
        status, answer = await call
        assert_error(status, answer, "overloaded")
    status, content_type, _ = await raw(ex, "POST", "/v1/ping", data=b"{}",
                                        headers={"Content-Type": "application/json"})
    assert status == 503 and content_type == "application/json"
    assert not first.done(), "the 503 was answered at once, not queued behind the auction"
    assert len(buyers.pings["c1"]) == 1
    status, answer = await first
    assert status == 200 and answer["status"] == "bid"
    status, answer = await ex.ping(PING)
    assert status == 200, "the slot is free again once the auction ends"

