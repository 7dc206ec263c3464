"""Contract section 2 (POST /v1/post), 3 (the buyer's post) and 7 over real HTTP."""

from __future__ import annotations

import asyncio
import datetime
import pytest

from tests.helpers_contract import assert_error, assert_error_shape, eventually, lead, ping, ping_ok, sold_ping
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, OTHER_KEY, PING, base_config


async def test_sold_answer_and_buyer_post_body(buyers, exchange):
    buyers.script("c1", ping=bid(3.25, "bid-77"), post=accept("their-lead-9"))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex, ping(source_id="s1", attributes={"age": 30}))
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200
    assert set(sold) == {"ping_id", "status", "price", "lead_id", "attempts"}
    assert sold["ping_id"] == answer["ping_id"] and sold["status"] == "sold" and sold["price"] == 3.25
    assert isinstance(sold["lead_id"], str) and sold["lead_id"] and sold["attempts"] == 1
    [received] = buyers.posts["c1"]
    body = received.body
    assert set(body) == {"ping_id", "bid_id", "campaign_id", "price", "test", "lead"}
    assert body["ping_id"] == answer["ping_id"] and body["bid_id"] == "bid-77" and body["campaign_id"] == "c1"
    assert body["price"] == 3.25 and body["test"] is False
    assert received.headers["Content-Type"].startswith("application/json")
    # The normalized lead merged with the ping's fields.
    assert body["lead"] == {"vertical": "auto", "zip": "90210", "state": "CA", "quality_score": 80, "source_id": "s1",
                            "attributes": {"age": 30}, "first_name": "Ada", "last_name": "Lovelace",
                            "email": "ada@example.com", "phone": "4155550134"}


async def test_campaign_headers_are_sent_with_the_post(buyers, exchange):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1", "headers": {"Authorization": "Token abc"}}))
    await sold_ping(ex)
    assert buyers.posts["c1"][0].headers["Authorization"] == "Token abc"


async def test_unsold_answer_has_no_price_or_lead_id(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=reject("no_thanks"))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer, result = await sold_ping(ex)
    assert result == {"ping_id": answer["ping_id"], "status": "unsold", "attempts": 1}


async def test_repost_returns_the_same_body(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer, first = await sold_ping(ex)
    for other_lead in (LEAD, lead(first_name="Someone", email="x@y.com")):
        status, again = await ex.post(answer["ping_id"], other_lead)
        assert status == 200 and again == first
    assert len(buyers.posts["c1"]) == 1, "a re-post never reaches a buyer again"


async def test_repost_of_unsold_returns_the_same_body(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=reject())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer, first = await sold_ping(ex)
    status, again = await ex.post(answer["ping_id"], LEAD)
    assert status == 200 and again == first and len(buyers.posts["c1"]) == 1


async def test_409_while_the_first_post_runs(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept(delay=0.6))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex)
    first = asyncio.create_task(ex.post(answer["ping_id"], LEAD))

    async def offered() -> bool:
        return bool(buyers.posts.get("c1"))

    await eventually(offered)
    status, body = await ex.post(answer["ping_id"], LEAD)
    assert_error(status, body, "post_in_progress")
    assert not first.done()
    status, sold = await first
    assert status == 200 and sold["status"] == "sold"
    assert await ex.post(answer["ping_id"], LEAD) == (200, sold)
    assert len(buyers.posts["c1"]) == 1


async def test_another_sellers_ping_is_404(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex)
    status, body = await ex.post(answer["ping_id"], LEAD, key=OTHER_KEY)
    assert_error(status, body, "not_found")
    assert "c1" not in buyers.posts
    # The owner can still post it afterwards.
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold"
    # ... and the other seller cannot read the result either.
    status, body = await ex.post(answer["ping_id"], LEAD, key=OTHER_KEY)
    assert_error(status, body, "not_found")


@pytest.mark.parametrize("ping_id", ["0" * 24, "unknown", "x" * 64])
async def test_unknown_ping_is_404(buyers, exchange, ping_id):
    ex = await exchange(base_config(buyers))
    status, body = await ex.post(ping_id, LEAD)
    assert_error(status, body, "not_found")


async def test_expired_ping_is_410(buyers, exchange, clock):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}, ping_ttl_s=1), clock=clock)
    answer = await ping_ok(ex)
    expires = datetime.datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
    wait = (expires - datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc)).total_seconds() + 0.1
    clock.advance(max(wait, 0))
    status, body = await ex.post(answer["ping_id"], LEAD)
    assert_error(status, body, "ping_expired")
    assert "c1" not in buyers.posts


async def test_posted_ping_stays_idempotent_after_expiry(buyers, exchange, clock):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}, ping_ttl_s=1), clock=clock)
    answer, first = await sold_ping(ex)
    clock.advance(1.1)
    assert await ex.post(answer["ping_id"], LEAD) == (200, first)


async def test_posting_a_no_bid_ping_is_refused_and_no_buyer_is_offered(buyers, exchange):
    buyers.script("c1", ping=Reply(status=204), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex)
    assert answer["status"] == "no_bid"
    for _ in range(2):
        status, body = await ex.post(answer["ping_id"], LEAD)
        assert 400 <= status < 500 and status not in (401, 403, 413, 415), status
        assert_error_shape(body)
    assert "c1" not in buyers.posts


@pytest.mark.parametrize("changes", [{"zip": "90210-4444"}, {"state": "ca"}, {"state": "CA"},
                                     {"vertical": "auto", "quality_score": 80}])
async def test_lead_repeating_the_ping_is_fine(buyers, exchange, changes):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    _, sold = await sold_ping(ex, lead(**changes))
    assert sold["status"] == "sold"
    assert buyers.posts["c1"][0].body["lead"]["zip"] == "90210"
    assert buyers.posts["c1"][0].body["lead"]["state"] == "CA"


async def test_lead_state_when_the_ping_had_none_is_fine(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    _, sold = await sold_ping(ex, lead(state="tx"), ping(state=None))
    assert sold["status"] == "sold"
    assert buyers.posts["c1"][0].body["lead"]["state"] == "TX"


async def test_lead_is_normalized_for_the_buyer(buyers, exchange):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    _, sold = await sold_ping(ex, lead(first_name="  Ada ", last_name="\tLovelace\n", email="  Ada.L@Example.COM ",
                                       phone="+1 (415) 555-0134", ip_address="2001:DB8::1", dob="1990-02-28",
                                       consent_cert_url="https://cert.example.com/abc?x=1", address=" 1 Main St ",
                                       city="Springfield"))
    assert sold["status"] == "sold"
    got = buyers.posts["c1"][0].body["lead"]
    assert got["first_name"] == "Ada" and got["last_name"] == "Lovelace"
    assert got["email"] == "ada.l@example.com" and got["phone"] == "4155550134"
    assert got["ip_address"] == "2001:db8::1" and got["dob"] == "1990-02-28"
    assert got["consent_cert_url"] == "https://cert.example.com/abc?x=1"
    assert got["address"] == "1 Main St" and got["city"] == "Springfield"


MISMATCHES = [
    ({"zip": "90211"}, "lead.zip"),
    ({"zip": "90211-0000"}, "lead.zip"),
    ({"state": "NY"}, "lead.state"),
    ({"state": "ny"}, "lead.state"),
]
BAD_LEADS = [
    ({"first_name": "   "}, "lead.first_name"),
    ({"first_name": ""}, "lead.first_name"),
    ({"last_name": "x" * 65}, "lead.last_name"),
    ({"email": "not-an-address"}, "lead.email"),
    ({"email": "a@b"}, "lead.email"),
    ({"phone": "555-0134"}, "lead.phone"),
    ({"phone": "(415) 555-013x"}, "lead.phone"),
    ({"phone": "+44 20 7946 0958"}, "lead.phone"),
    ({"ip_address": "999.1.1.1"}, "lead.ip_address"),
    ({"ip_address": "localhost"}, "lead.ip_address"),
    ({"dob": "1990-02-30"}, "lead.dob"),
    ({"dob": "02/28/1990"}, "lead.dob"),
    ({"consent_cert_url": "http://cert.example.com/abc"}, "lead.consent_cert_url"),
    ({"consent_cert_url": "cert.example.com"}, "lead.consent_cert_url"),
    ({"address": "x" * 129}, "lead.address"),
    ({"state": "ZZ"}, "lead.state"),
    ({"zip": "9021"}, "lead.zip"),
    ({"zip": None}, "lead.zip"),
    ({"email": None}, "lead.email"),
    ({"phone": None}, "lead.phone"),
    ({"first_name": None}, "lead.first_name"),
    ({"last_name": None}, "lead.last_name"),
    ({"favourite_colour": "blue"}, "lead.favourite_colour"),
]


@pytest.mark.parametrize("code,changes,path", [("ping_mismatch", *m) for m in MISMATCHES]
                         + [("validation_error", *b) for b in BAD_LEADS])
async def test_bad_or_mismatched_lead_is_422(buyers, exchange, code, changes, path):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex)
    status, body = await ex.post(answer["ping_id"], lead(**changes))
    assert_error(status, body, code, path)
    assert "c1" not in buyers.posts
    # The refusal does not consume the ping: the right lead still sells.
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold"


@pytest.mark.parametrize("ping_attrs,lead_attrs,merged", [
    ({"a": 1, "b": "ping"}, {"b": "lead", "c": [1, 2]}, {"a": 1, "b": "lead", "c": [1, 2]}),
    (None, {"c": True}, {"c": True}),
    ({"a": 1}, None, {"a": 1}),
])
async def test_lead_attributes_are_merged_over_the_pings(buyers, exchange, ping_attrs, lead_attrs, merged):
    buyers.script("c1", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    await sold_ping(ex, lead(attributes=lead_attrs), ping(attributes=ping_attrs))
    assert buyers.posts["c1"][0].body["lead"]["attributes"] == merged


async def test_attempts_counts_only_buyers_offered(buyers, exchange):
    buyers.script("c1", ping=bid(5), post=reject())
    buyers.script("c2", ping=bid(4), post=accept())
    buyers.script("c3", ping=bid(3), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}, {"id": "c2"}, {"id": "c3"}))
    _, sold = await sold_ping(ex)
    assert sold["attempts"] == 2 and sold["price"] == 4
    assert "c3" not in buyers.posts


async def test_post_needs_ping_id_and_lead(buyers, exchange):
    ex = await exchange(base_config(buyers))
    status, body = await ex.call("POST", "/v1/post", {"lead": LEAD})
    assert_error(status, body, "validation_error", "ping_id")
    status, body = await ex.call("POST", "/v1/post", {"ping_id": "abc"})
    assert_error(status, body, "validation_error", "lead")


async def test_the_buyer_post_never_reached_for_a_ping_of_another_vertical(buyers, exchange):
    # A lead posted for a ping only reaches the campaigns that bid on that ping.
    buyers.script("c1", ping=bid(3), post=accept())
    buyers.script("home", ping=bid(9), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}, {"id": "home", "vertical": "home"}))
    _, sold = await sold_ping(ex, ping=PING)
    assert sold["price"] == 3 and "home" not in buyers.posts

