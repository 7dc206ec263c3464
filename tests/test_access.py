"""Roles and keys: operators', sellers' and buyers' keys, dashboard users, and the one access
layer every endpoint asks (``pingpost.access``), over the real exchange app and buyer servers.

Cross-tenant reports are in tests/test_reports.py; this file holds the config rules, the
password command, sign-in, and the seller API's endpoints, the trace and /metrics by role.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
from argon2 import PasswordHasher

from pingpost.access import Access, Principal, Role
from pingpost.config import ConfigError, from_dict
from tests.helpers_contract import assert_error
from tests.helpers_process import SCRATCH
from tests.support.buyers import accept, bid, reject
from tests.support.exchange import LEAD, OTHER_KEY, PING, SELLER_KEY, SELLER_TEST_KEY, base_config

OPS_KEY = "ops-key-0001"
B1_KEY = "b1-key-0001"
B2_KEY = "b2-key-0001"
#: Cheap parameters so that the tests verify fast; argon2id all the same.
_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ANA_PASSWORD = "correct horse battery staple"


def roles_config(buyers: Any, *campaigns: dict[str, Any], **exchange: Any) -> dict[str, Any]:
    """``base_config`` with an operator, keys for buyers b1 and b2, and a user per role."""
    config = base_config(buyers, *campaigns, **exchange)
    config["operators"] = [{"id": "ops", "api_keys": [OPS_KEY]}]
    config["buyers"][0]["api_keys"] = [B1_KEY]
    config["buyers"][1]["api_keys"] = [B2_KEY]
    hashed = _HASHER.hash(ANA_PASSWORD)
    config["users"] = [{"name": "ana", "password_hash": hashed, "role": "operator"},
                       {"name": "sam", "password_hash": hashed, "role": "seller:acme"},
                       {"name": "bea", "password_hash": hashed, "role": "buyer:b1"}]
    return config


def errors_of(config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        from_dict(config)
    return dict(refused.value.errors)


# Config ---------------------------------------------------------------------------------


def test_operators_buyer_keys_and_users_load(buyers):
    config = from_dict(roles_config(buyers))
    assert config.operators[0].api_keys == [OPS_KEY]
    assert config.buyers[0].api_keys == [B1_KEY] and config.buyers[2].api_keys == []
    assert [(u.name, u.role) for u in config.users] == [("ana", "operator"), ("sam", "seller:acme"),
                                                         ("bea", "buyer:b1")]


def test_users_are_checked_with_their_paths(buyers):
    config = roles_config(buyers)
    good = config["users"][0]["password_hash"]
    config["users"] += [
        {"name": "ana", "password_hash": good, "role": "operator"},
        {"name": "nosuch", "password_hash": good, "role": "seller:nobody"},
        {"name": "nobuyer", "password_hash": good, "role": "buyer:b9"},
        {"name": "odd", "password_hash": good, "role": "admin"},
        {"name": "argon2i", "password_hash": PasswordHasher(type=__import__("argon2").Type.I).hash("x"),
         "role": "operator"},
        {"name": "plain", "password_hash": "hunter22", "role": "operator"},
        {"name": "Upper", "password_hash": good, "role": "operator"},
    ]
    errors = errors_of(config)
    assert errors["users[3].name"].startswith("duplicate user name 'ana'")
    assert errors["users[4].role"] == "no seller with id 'nobody'"
    assert errors["users[5].role"] == "no buyer with id 'b9'"
    assert errors["users[6].role"].startswith("unknown role 'admin'")
    assert "argon2id" in errors["users[7].password_hash"] and "pingpost passwd" in errors["users[7].password_hash"]
    assert "argon2id" in errors["users[8].password_hash"]
    assert "users[9].name" in errors
    assert len(errors) == 7, errors


def test_keys_are_unique_across_sellers_buyers_and_operators_and_long_enough(buyers):
    config = roles_config(buyers)
    config["buyers"][2]["api_keys"] = [SELLER_KEY, "short"]
    config["operators"].append({"id": "ops2", "api_keys": [B1_KEY]})
    config["operators"].append({"id": "ops3"})
    config["operators"].append({"id": "ops", "api_keys": ["ops-key-0009"]})
    errors = errors_of(config)
    assert errors["buyers[2].api_keys[0]"] == "key already used at sellers[0].api_keys[0]"
    assert errors["buyers[2].api_keys[1]"] == "an API key must be at least 8 characters"
    assert errors["operators[1].api_keys[0]"] == "key already used at buyers[0].api_keys[0]"
    assert errors["operators[2].api_keys"] == "an operator needs at least one key"
    assert errors["operators[3].id"] == "duplicate id 'ops'"
    assert len(errors) == 5, errors


def test_role_keys_and_hashes_may_come_from_the_environment(buyers, monkeypatch):
    config = roles_config(buyers)
    monkeypatch.setenv("PP_OPS_KEY", "ops-from-env-1")
    monkeypatch.setenv("PP_ANA_HASH", config["users"][0]["password_hash"])
    config["operators"][0]["api_keys"] = ["env:PP_OPS_KEY"]
    config["buyers"][2]["api_keys"] = ["env:PP_B3_KEY"]
    config["users"][0]["password_hash"] = "env:PP_ANA_HASH"
    assert errors_of(copy.deepcopy(config)) == {"buyers[2].api_keys[0]": "environment variable PP_B3_KEY is not set"}
    monkeypatch.setenv("PP_B3_KEY", "b3-from-env-1")
    loaded = from_dict(config)
    assert loaded.operators[0].api_keys == ["ops-from-env-1"] and loaded.buyers[2].api_keys == ["b3-from-env-1"]


# The password command and sign-in ---------------------------------------------------------


def passwd(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pingpost.cli", "passwd"], input=stdin, cwd=SCRATCH,
                          capture_output=True, text=True, timeout=60)


def test_passwd_prints_an_argon2id_hash_of_the_first_line_of_stdin():
    done = passwd("s3cret pass\nignored second line\n")
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert hashed.startswith("$argon2id$") and "s3cret" not in done.stdout
    assert PasswordHasher().verify(hashed, "s3cret pass")
    from_dict({"users": [{"name": "ana", "password_hash": hashed, "role": "operator"}]})  # the config takes it


@pytest.mark.parametrize("stdin", ["", "\n"], ids=["nothing", "empty_line"])
def test_passwd_refuses_an_empty_password(stdin):
    done = passwd(stdin)
    assert done.returncode == 2 and done.stdout == ""
    assert "empty password" in done.stderr


def test_sign_in_checks_the_hash_and_names_any_case(buyers):
    access = Access(from_dict(roles_config(buyers)))
    assert access.sign_in("ana", ANA_PASSWORD) == Principal(Role.OPERATOR, "ana", user="ana")
    assert access.sign_in(" SAM ", ANA_PASSWORD) == Principal(Role.SELLER, "acme", user="sam")
    assert access.sign_in("bea", ANA_PASSWORD) == Principal(Role.BUYER, "b1", user="bea")
    assert access.sign_in("ana", ANA_PASSWORD + "x") is None
    assert access.sign_in("ana", "") is None
    assert access.sign_in("nobody", ANA_PASSWORD) is None
    assert access.user("Bea") == Principal(Role.BUYER, "b1", user="bea") and access.user("nobody") is None


def test_keys_name_their_principals(buyers):
    access = Access(from_dict(roles_config(buyers)))
    assert access.by_key(SELLER_KEY) == Principal(Role.SELLER, "acme")
    assert access.by_key(SELLER_TEST_KEY) == Principal(Role.SELLER, "acme", test=True)
    assert access.by_key(B2_KEY) == Principal(Role.BUYER, "b2")
    assert access.by_key(OPS_KEY) == Principal(Role.OPERATOR, "ops")
    assert access.by_key("nope-not-a-key") is None and access.by_key(None) is None and access.by_key("") is None


# The seller API by role -------------------------------------------------------------------

SELLING = [("POST", "/v1/ping", PING), ("POST", "/v1/post", {"ping_id": "x", "lead": LEAD}),
           ("POST", "/v1/leads", {**PING, "lead": LEAD})]


@pytest.mark.parametrize("key", [OPS_KEY, B1_KEY], ids=["operator", "buyer"])
@pytest.mark.parametrize("method,path,body", SELLING, ids=[r[1] for r in SELLING])
async def test_only_a_seller_sells(buyers, exchange, key, method, path, body):
    buyers.script("c1", ping=bid(2), post=accept())
    ex = await exchange(roles_config(buyers, {"id": "c1"}))
    status, answer = await ex.call(method, path, body, key=key)
    assert_error(status, answer, "forbidden")
    assert "c1" not in buyers.pings and "c1" not in buyers.posts


async def sold_and_unsold(buyers: Any, ex: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ping sent to c1 (b1), c2 (b2) and c3 (b3): c1 bids 3 and rejects, c2 bids 2 and buys,
    c3 does not bid. Returns (the ping's answer, the post's answer)."""
    status, pinged = await ex.ping(PING)
    assert status == 200 and pinged["status"] == "bid", pinged
    status, posted = await ex.post(pinged["ping_id"], LEAD)
    assert status == 200 and posted["status"] == "sold", posted
    return pinged, posted


def three_buyers(buyers: Any) -> list[dict[str, Any]]:
    buyers.script("c1", ping=bid(3), post=reject("full"))
    buyers.script("c2", ping=bid(2), post=accept("b2-lead-9"))
    return [{"id": "c1"}, {"id": "c2", "buyer": "b2"}, {"id": "c3", "buyer": "b3"}]


async def test_the_trace_by_role(buyers, exchange):
    ex = await exchange(roles_config(buyers, *three_buyers(buyers)))
    pinged, posted = await sold_and_unsold(buyers, ex)
    ping_id = pinged["ping_id"]
    status, mine = await ex.trace(ping_id)
    assert status == 200
    assert (await ex.trace(ping_id, key=OPS_KEY)) == (200, mine)  # an operator sees the trace whole

    status, b1 = await ex.trace(ping_id, key=B1_KEY)  # bid, was offered, rejected
    assert status == 200
    assert [c["campaign_id"] for c in b1["campaigns"]] == ["c1"] and b1["status"] == "bid"
    assert "price" not in b1 and "not_pinged" not in b1
    assert b1["post"] == {"status": "unsold", "attempts": 1, "offers": [
        {"campaign_id": "c1", "buyer_id": "b1", "outcome": "rejected:full", "bid": 3.0,
         "ms": mine["post"]["offers"][0]["ms"]}]}

    status, b2 = await ex.trace(ping_id, key=B2_KEY)  # bought: its own price, its lead_id
    assert status == 200 and [c["campaign_id"] for c in b2["campaigns"]] == ["c2"]
    assert b2["post"]["status"] == "sold" and b2["post"]["price"] == 2.0
    assert b2["post"]["lead_id"] == posted["lead_id"] and b2["post"]["attempts"] == 1
    assert [o["buyer_id"] for o in b2["post"]["offers"]] == ["b2"]
    named = {c["buyer_id"] for c in b2["campaigns"] + b2["post"]["offers"]}
    assert named == {"b2"} and "price" not in b2

    b3_key = "b3-key-0001"
    config = roles_config(buyers, *three_buyers(buyers))
    config["buyers"][2]["api_keys"] = [b3_key]
    ex3 = await exchange(config)
    pinged3, _ = await sold_and_unsold(buyers, ex3)
    status, b3 = await ex3.trace(pinged3["ping_id"], key=b3_key)  # sent, no bid, never offered
    assert status == 200 and b3["status"] == "no_bid" and "post" not in b3
    assert [c["outcome"] for c in b3["campaigns"]] == ["no_bid"]


async def test_a_trace_of_someone_else_is_404_and_no_key_401(buyers, exchange):
    buyers.script("c1", ping=bid(3))
    ex = await exchange(roles_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2", "filters": {"states": ["NY"]}}))
    status, pinged = await ex.ping(PING)
    assert status == 200
    ping_id = pinged["ping_id"]
    assert_error(*(await ex.trace(ping_id, key=OTHER_KEY)), "not_found")
    assert_error(*(await ex.trace(ping_id, key=B2_KEY)), "not_found")  # c2 was filtered out: never sent it
    assert_error(*(await ex.trace(ping_id, key=None)), "unauthorized")
    assert_error(*(await ex.trace("0" * 24, key=OPS_KEY)), "not_found")


async def test_a_sold_lead_by_role(buyers, exchange):
    ex = await exchange(roles_config(buyers, *three_buyers(buyers)))
    _, posted = await sold_and_unsold(buyers, ex)
    path = f"/v1/leads/{posted['lead_id']}"
    status, seen = await ex.call("GET", path)
    assert status == 200 and seen["price"] == posted["price"]
    assert await ex.call("GET", path, key=OPS_KEY) == (200, seen)
    assert_error(*(await ex.call("GET", path, key=B2_KEY)), "forbidden")  # even the buyer that bought it
    assert_error(*(await ex.call("GET", path, key=OTHER_KEY)), "not_found")
    assert_error(*(await ex.call("GET", path, key=None)), "unauthorized")


# /metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key,status", [(OPS_KEY, 200), (B1_KEY, 403), (SELLER_KEY, 403), (None, 403),
                                        ("nope-not-a-key", 401)],
                         ids=["operator", "buyer", "seller", "none", "unknown"])
async def test_metrics_answer_an_operator_key_from_any_address(buyers, exchange, key, status):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(roles_config(buyers, {"id": "c1"}, metrics_allowed_ips=["10.0.0.0/8"]))
    assert (await ex.ping(PING))[0] == 200
    answered, body = await ex.call("GET", "/metrics", key=key)
    assert answered == status, body
    if status == 200:
        assert 'campaign="c1"' in body
    else:
        assert "c1" not in str(body)
