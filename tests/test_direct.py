"""Contract section 2 (POST /v1/leads, the direct post) and 7 over real HTTP."""

from __future__ import annotations

import pytest

from tests.helpers_contract import assert_error, lead, ping
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.exchange import LEAD, OTHER_KEY, PING, SELLER_TEST_KEY, base_config


def direct_body(lead_fields: dict | None = None, **ping_changes) -> dict:
    return {**ping(**ping_changes), "lead": lead_fields if lead_fields is not None else LEAD}


async def test_direct_post_sold(buyers, exchange):
    buyers.script("c1", ping=bid(2.5, "b-1"), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, sold = await ex.direct(direct_body())
    assert status == 200, sold
    assert set(sold) == {"ping_id", "status", "price", "lead_id", "attempts"}
    assert sold["status"] == "sold" and sold["price"] == 2.5 and sold["attempts"] == 1
    assert buyers.pings["c1"][0].body["ping_id"] == sold["ping_id"]
    post = buyers.posts["c1"][0].body
    assert post["ping_id"] == sold["ping_id"] and post["bid_id"] == "b-1" and post["price"] == 2.5
    assert post["lead"]["email"] == "ada@example.com" and post["lead"]["phone"] == "4155550134"
    # The ping half never carries personal data to buyers.
    assert not {"first_name", "last_name", "email", "phone"} & set(buyers.pings["c1"][0].body)


async def test_direct_post_unsold(buyers, exchange):
    buyers.script("c1", ping=bid(2.5), post=reject())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, result = await ex.direct(direct_body())
    assert status == 200 and set(result) == {"ping_id", "status", "attempts"}
    assert result["status"] == "unsold" and result["attempts"] == 1


async def test_direct_post_without_bids_is_unsold_with_no_attempts(buyers, exchange):
    buyers.script("c1", ping=Reply(status=204), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, result = await ex.direct(direct_body())
    assert status == 200 and result["status"] == "unsold" and result["attempts"] == 0
    assert "c1" not in buyers.posts
    assert await ex.post(result["ping_id"], LEAD) == (200, result)


async def test_pii_rule_does_not_apply_to_the_lead(buyers, exchange):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    body = direct_body(lead(address="1 Main St", ip_address="10.0.0.1", dob="1980-01-01",
                            attributes={"dob_year": 1980, "email": "alt@example.com"}))
    status, sold = await ex.direct(body)
    assert status == 200 and sold["status"] == "sold"
    assert buyers.posts["c1"][0].body["lead"]["attributes"]["email"] == "alt@example.com"


@pytest.mark.parametrize("key", ["first_name", "last_name", "email", "phone", "address", "ip_address", "dob"])
async def test_pii_rule_applies_to_the_top_level(buyers, exchange, key):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, body = await ex.direct({**direct_body(), key: "1980-01-01"})
    assert_error(status, body, "pii_in_ping", key)
    status, body = await ex.direct(direct_body(attributes={key: "x", "fine": 1}))
    assert_error(status, body, "pii_in_ping", f"attributes.{key}")
    assert "c1" not in buyers.pings


@pytest.mark.parametrize("changes,path", [({"zip": "10001"}, "lead.zip"), ({"state": "NY"}, "lead.state")])
async def test_lead_differing_from_the_top_level_is_ping_mismatch(buyers, exchange, changes, path):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, body = await ex.direct(direct_body(lead(**changes)))
    assert_error(status, body, "ping_mismatch", path)
    assert "c1" not in buyers.pings and "c1" not in buyers.posts


async def test_lead_may_omit_zip_and_state(buyers, exchange):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, sold = await ex.direct(direct_body(lead(zip=None), zip="30301-1234", state="ga"))
    assert status == 200 and sold["status"] == "sold"
    got = buyers.posts["c1"][0].body["lead"]
    assert got["zip"] == "30301" and got["state"] == "GA"


async def test_lead_repeating_zip_plus_four_and_state_case_is_fine(buyers, exchange):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, sold = await ex.direct(direct_body(lead(zip="90210-0001", state="ca")))
    assert status == 200 and sold["status"] == "sold"


@pytest.mark.parametrize("answer", [accept(), reject()], ids=["sold", "unsold"])
async def test_direct_ping_id_can_be_reposted(buyers, exchange, answer):
    buyers.script("c1", ping=bid(1), post=answer)
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, first = await ex.direct(direct_body())
    assert status == 200
    assert await ex.post(first["ping_id"], LEAD) == (200, first)
    assert len(buyers.posts["c1"]) == 1
    status, body = await ex.post(first["ping_id"], LEAD, key=OTHER_KEY)
    assert_error(status, body, "not_found")


async def test_direct_post_needs_a_lead(buyers, exchange):
    ex = await exchange(base_config(buyers))
    status, body = await ex.direct(dict(PING))
    assert_error(status, body, "validation_error", "lead")


async def test_direct_post_in_test_mode(buyers, exchange):
    buyers.script("c1", ping=bid(1), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, sold = await ex.direct(direct_body(), key=SELLER_TEST_KEY)
    assert status == 200 and sold["status"] == "sold"
    assert buyers.pings["c1"][0].body["test"] is True and buyers.posts["c1"][0].body["test"] is True
