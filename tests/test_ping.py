"""Contract section 2 (POST /v1/ping), 3 (the buyer's ping) and 4.1-4.3, 4.9 over real HTTP."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from tests.helpers_contract import make_config, outcomes, parse_rfc3339_utc, ping, ping_ok
from tests.support.buyers import Reply, bid
from tests.support.exchange import OTHER_KEY, PING, SELLER_KEY, base_config

SHA_E = "a" * 64
SHA_P = "B" * 64
FULL_PING = {"vertical": "auto", "zip": "90210-1234", "state": "ca", "source_id": "src1", "sub_id": "sub9",
             "quality_score": 77, "tcpa_consent": True, "email_sha256": SHA_E, "phone_sha256": SHA_P,
             "attributes": {"age": 41, "cars": ["a", "b"], "own": True, "score": 1.5}}


async def test_bid_answer_shape(buyers, exchange):
    buyers.script("c1", ping=bid(3.5))
    ex = await exchange(base_config(buyers, {"id": "c1"}, ping_ttl_s=90))
    before = datetime.datetime.now(datetime.timezone.utc)
    answer = await ping_ok(ex)
    assert set(answer) == {"ping_id", "status", "price", "expires_at", "auction_ms"}
    assert answer["status"] == "bid" and answer["price"] == 3.5
    assert isinstance(answer["ping_id"], str) and answer["ping_id"]
    assert isinstance(answer["auction_ms"], (int, float)) and answer["auction_ms"] >= 0
    expires = parse_rfc3339_utc(answer["expires_at"])
    assert abs((expires - before).total_seconds() - 90) < 5


async def test_no_bid_answer_has_no_price(buyers, exchange):
    buyers.script("c1", ping=Reply(status=204))
    ex = await exchange(base_config(buyers, {"id": "c1"}, ping_ttl_s=30))
    before = datetime.datetime.now(datetime.timezone.utc)
    answer = await ping_ok(ex)
    assert set(answer) == {"ping_id", "status", "expires_at", "auction_ms"}
    assert answer["status"] == "no_bid"
    assert abs((parse_rfc3339_utc(answer["expires_at"]) - before).total_seconds() - 30) < 5


async def test_no_campaigns_is_no_bid(buyers, exchange):
    ex = await exchange(base_config(buyers))
    assert (await ping_ok(ex))["status"] == "no_bid"


@pytest.mark.parametrize("answer", [Reply(status=204), bid(0), bid(None), bid(0.001)])
async def test_every_kind_of_no_bid(buyers, exchange, answer):
    buyers.script("c1", ping=answer)
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    got = await ping_ok(ex)
    assert got["status"] == "no_bid" and "price" not in got


async def test_ping_ids_are_unique(buyers, exchange):
    ex = await exchange(base_config(buyers))
    ids = {(await ping_ok(ex))["ping_id"] for _ in range(20)}
    assert len(ids) == 20


async def test_buyer_ping_carries_exactly_the_contract_fields(buyers, exchange):
    buyers.script("c1", ping=bid(2))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer = await ping_ok(ex, FULL_PING)
    [received] = buyers.pings["c1"]
    body = received.body
    assert set(body) == {"ping_id", "campaign_id", "vertical", "zip", "state", "seller_id", "source_id", "sub_id",
                         "quality_score", "tcpa_consent", "email_sha256", "phone_sha256", "attributes", "test",
                         "tmax_ms"}
    assert body["ping_id"] == answer["ping_id"]
    assert body["campaign_id"] == "c1" and body["seller_id"] == "acme" and body["test"] is False
    assert body["zip"] == "90210", "ZIP+4 is cut to 5 digits"
    assert body["state"] == "CA", "state is upper-cased"
    assert body["vertical"] == "auto" and body["source_id"] == "src1" and body["sub_id"] == "sub9"
    assert body["quality_score"] == 77 and body["tcpa_consent"] is True
    assert body["email_sha256"] == SHA_E and body["phone_sha256"] == SHA_P
    assert body["attributes"] == FULL_PING["attributes"]
    assert received.headers["Content-Type"].startswith("application/json")


async def test_absent_optional_fields_are_omitted(buyers, exchange):
    buyers.script("c1", ping=bid(2))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    await ping_ok(ex, {"vertical": "auto", "zip": "10001"})
    body = buyers.pings["c1"][0].body
    assert set(body) == {"ping_id", "campaign_id", "vertical", "zip", "seller_id", "test", "tmax_ms"}


async def test_campaign_headers_are_sent(buyers, exchange):
    buyers.script("c1", ping=bid(2))
    ex = await exchange(base_config(buyers, {"id": "c1", "headers": {"X-Buyer-Token": "s3cret", "X-Two": "2"}}))
    await ping_ok(ex)
    headers = buyers.pings["c1"][0].headers
    assert headers["X-Buyer-Token"] == "s3cret" and headers["X-Two"] == "2"


@pytest.mark.parametrize("campaign_timeout,auction_timeout,limit", [(300, 1000, 300), (5000, 250, 250)],
                         ids=["campaign_timeout", "remaining_auction_time"])
async def test_tmax_ms_is_at_most_the_campaign_timeout_and_the_auction_time(buyers, exchange, campaign_timeout,
                                                                            auction_timeout, limit):
    buyers.script("c1", ping=bid(2))
    ex = await exchange(base_config(buyers, {"id": "c1", "timeout_ms": campaign_timeout},
                                    auction_timeout_ms=auction_timeout))
    await ping_ok(ex)
    tmax = buyers.pings["c1"][0].body["tmax_ms"]
    assert isinstance(tmax, int) and 0 < tmax <= limit


@pytest.mark.parametrize("auction_timeout,ping_timeout,limit", [(5000, 150, 150), (200, 60_000, 200)],
                         ids=["shortens", "never_lengthens"])
async def test_ping_timeout_ms_shortens_but_never_lengthens_the_deadline(buyers, exchange, auction_timeout,
                                                                         ping_timeout, limit):
    buyers.script("c1", ping=bid(2, delay=2.5))
    ex = await exchange(base_config(buyers, {"id": "c1", "timeout_ms": 5000}, auction_timeout_ms=auction_timeout))
    started = time.monotonic()
    answer = await ping_ok(ex, ping(timeout_ms=ping_timeout))
    assert time.monotonic() - started < 1.5, "the auction ran past min(auction_timeout_ms, timeout_ms)"
    assert answer["status"] == "no_bid"
    assert buyers.pings["c1"][0].body["tmax_ms"] <= limit
    assert (await outcomes(ex, answer["ping_id"]))["c1"] == "timeout"


async def test_late_bids_are_dropped_and_on_time_ones_win(buyers, exchange):
    buyers.script("slow", ping=bid(9, delay=2.0))
    buyers.script("fast", ping=bid(2))
    ex = await exchange(base_config(buyers, {"id": "slow", "timeout_ms": 5000}, {"id": "fast"},
                                    auction_timeout_ms=250))
    started = time.monotonic()
    answer = await ping_ok(ex)
    assert time.monotonic() - started < 1.5
    assert answer["status"] == "bid" and answer["price"] == 2
    assert await outcomes(ex, answer["ping_id"]) == {"slow": "timeout", "fast": "bid"}


async def test_buyers_are_pinged_in_parallel(buyers, exchange):
    for c in ("c1", "c2", "c3", "c4"):
        buyers.script(c, ping=bid(1, delay=0.4))
    ex = await exchange(base_config(buyers, *({"id": c} for c in ("c1", "c2", "c3", "c4")),
                                    auction_timeout_ms=1000))
    answer = await ping_ok(ex)
    # One after the other would need 1.6 s and miss the 1 s deadline; in parallel all four bid.
    assert set((await outcomes(ex, answer["ping_id"])).values()) == {"bid"}


async def test_fixed_price_campaign_bids_without_a_call(buyers, exchange):
    ex = await exchange(base_config(buyers, {"id": "fx", "ping_url": None, "fixed_price": 4.255}))
    answer = await ping_ok(ex)
    assert answer["status"] == "bid" and answer["price"] == 4.25
    assert "fx" not in buyers.pings


async def test_inactive_campaign_is_not_pinged(buyers, exchange):
    buyers.script("off", ping=bid(5))
    ex = await exchange(base_config(buyers, {"id": "off", "active": False}))
    answer = await ping_ok(ex)
    assert answer["status"] == "no_bid" and "off" not in buyers.pings


async def test_other_verticals_are_not_pinged(buyers, exchange):
    buyers.script("home", ping=bid(5))
    buyers.script("auto", ping=bid(1))
    ex = await exchange(base_config(buyers, {"id": "home", "vertical": "home_insurance"}, {"id": "auto"}))
    answer = await ping_ok(ex)
    assert answer["price"] == 1 and "home" not in buyers.pings and len(buyers.pings["auto"]) == 1


async def test_max_buyers_per_ping_prefers_priority(buyers, exchange):
    for c in ("low", "mid", "high"):
        buyers.script(c, ping=bid(1))
    ex = await exchange(base_config(buyers, {"id": "low", "priority": 1}, {"id": "mid", "priority": 5},
                                    {"id": "high", "priority": 9}, max_buyers_per_ping=2))
    answer = await ping_ok(ex)
    assert set(buyers.pings) == {"mid", "high"}
    assert (await outcomes(ex, answer["ping_id"]))["low"].startswith("skipped")


async def test_max_buyers_per_ping_then_prefers_the_highest_last_known_bid(buyers, exchange):
    buyers.script("c1", ping=bid(1))
    buyers.script("c2", ping=bid(2))
    buyers.script("c3", ping=bid(9))
    ex = await exchange(base_config(buyers, {"id": "c1", "filters": {"states": ["CA"]}}, {"id": "c2"}, {"id": "c3"},
                                    max_buyers_per_ping=2))
    # c1 is filtered out for NY, so c2 and c3 are pinged and make their bids known.
    await ping_ok(ex, ping(state="NY"))
    assert set(buyers.pings) == {"c2", "c3"}
    buyers.pings.clear()
    # All three now pass; equal priority, so the two best last known bids (c3 9.00, c2 2.00) win over c1.
    answer = await ping_ok(ex)
    assert set(buyers.pings) == {"c2", "c3"}
    assert (await outcomes(ex, answer["ping_id"]))["c1"].startswith("skipped")


def _today_and_tomorrow() -> tuple[list[str], list[str]]:
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    today = datetime.datetime.now(datetime.timezone.utc).weekday()
    near = [days[today], days[(today + 1) % 7]]
    return near, [d for d in days if d not in near]


async def test_schedule_filter(buyers, exchange):
    near, far = _today_and_tomorrow()
    buyers.script("open", ping=bid(1))
    buyers.script("closed", ping=bid(2))
    ex = await exchange(base_config(
        buyers, {"id": "open", "filters": {"schedule": {"days": near, "timezone": "UTC"}}},
        {"id": "closed", "filters": {"schedule": {"days": far, "start": "00:00", "end": "24:00", "timezone": "UTC"}}}))
    answer = await ping_ok(ex)
    assert set(buyers.pings) == {"open"}
    assert await outcomes(ex, answer["ping_id"]) == {"open": "bid", "closed": "filtered:schedule"}


Case = tuple[dict[str, Any], str]  # (ping body, seller key)
ACME, OTHER = SELLER_KEY, OTHER_KEY

FILTER_CASES: list[tuple[str, dict[str, Any], list[Case], list[Case], str]] = [
    ("states", {"states": ["CA", "ny"]}, [(ping(state="ca"), ACME), (ping(state="NY"), ACME)],
     [(ping(state="TX"), ACME), (ping(state=None), ACME)], "states"),
    ("exclude_states", {"exclude_states": ["tx"]}, [(ping(state="CA"), ACME), (ping(state=None), ACME)],
     [(ping(state="Tx"), ACME)], "exclude_states"),
    ("zips", {"zips": ["90210"]}, [(ping(zip="90210-1111"), ACME)], [(ping(zip="90211"), ACME)], "zips"),
    ("exclude_zips", {"exclude_zips": ["90210"]}, [(ping(zip="90211"), ACME)], [(ping(zip="90210-0001"), ACME)],
     "exclude_zips"),
    ("zip_prefixes", {"zip_prefixes": ["902", "1"]}, [(ping(zip="90299"), ACME), (ping(zip="10001"), ACME)],
     [(ping(zip="90310"), ACME)], "zip_prefixes"),
    ("sellers", {"sellers": ["acme"]}, [(PING, ACME)], [(PING, OTHER)], "sellers"),
    ("exclude_sellers", {"exclude_sellers": ["acme"]}, [(PING, OTHER)], [(PING, ACME)], "exclude_sellers"),
    ("sources", {"sources": ["s1"]}, [(ping(source_id="s1"), ACME)],
     [(ping(source_id="s2"), ACME), (PING, ACME)], "sources"),
    ("exclude_sources", {"exclude_sources": ["s1"]}, [(ping(source_id="s2"), ACME), (PING, ACME)],
     [(ping(source_id="s1"), ACME)], "exclude_sources"),
    ("min_quality", {"min_quality": 50}, [(ping(quality_score=50), ACME), (ping(quality_score=100), ACME)],
     [(ping(quality_score=49), ACME), (ping(quality_score=None), ACME)], "min_quality"),
]


def _rule(op: str, value: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": "f", "op": op}
    if value is not None:
        rule["value"] = value
    return {"rules": [rule]}


def _attrs(value: Any) -> dict[str, Any]:
    return ping(attributes={"f": value, "other": 1})


RULE_CASES: list[tuple[str, dict[str, Any], list[Case], list[Case], str]] = [
    ("eq", _rule("eq", "x"), [(_attrs("x"), ACME), (_attrs(["y", "x"]), ACME)],
     [(_attrs("y"), ACME), (PING, ACME)], "rule:f"),
    ("ne", _rule("ne", "x"), [(_attrs("y"), ACME)], [(_attrs("x"), ACME), (PING, ACME)], "rule:f"),
    ("in", _rule("in", ["a", "b"]), [(_attrs("b"), ACME)], [(_attrs("c"), ACME)], "rule:f"),
    ("not_in", _rule("not_in", ["a", "b"]), [(_attrs("c"), ACME)], [(_attrs("a"), ACME)], "rule:f"),
    ("gt", _rule("gt", 5), [(_attrs(6), ACME), (_attrs(5.5), ACME)], [(_attrs(5), ACME), (_attrs("9"), ACME)],
     "rule:f"),
    ("gte", _rule("gte", 5), [(_attrs(5), ACME)], [(_attrs(4.99), ACME)], "rule:f"),
    ("lt", _rule("lt", 5), [(_attrs(4), ACME)], [(_attrs(5), ACME)], "rule:f"),
    ("lte", _rule("lte", 5), [(_attrs(5), ACME)], [(_attrs(6), ACME)], "rule:f"),
    ("between", _rule("between", [1, 3]), [(_attrs(1), ACME), (_attrs(3), ACME)],
     [(_attrs(0.5), ACME), (_attrs(4), ACME)], "rule:f"),
    ("exists", _rule("exists", None), [(_attrs(0), ACME)], [(PING, ACME), (ping(attributes={"g": 1}), ACME)],
     "rule:f"),
    ("exists_false", _rule("exists", False), [(PING, ACME)], [(_attrs(1), ACME)], "rule:f"),
]


@pytest.mark.parametrize("name,filters,passing,failing,reason", FILTER_CASES + RULE_CASES,
                         ids=[c[0] for c in FILTER_CASES + RULE_CASES])
async def test_filters_over_http(buyers, exchange, name, filters, passing, failing, reason):
    buyers.script("c1", ping=bid(2))
    ex = await exchange(make_config(buyers, {"id": "c1", "filters": filters}))
    for body, key in passing:
        buyers.pings.clear()
        answer = await ping_ok(ex, body, key)
        assert answer["status"] == "bid", (name, body)
        assert len(buyers.pings.get("c1", [])) == 1, (name, body)
    for body, key in failing:
        buyers.pings.clear()
        answer = await ping_ok(ex, body, key)
        assert answer["status"] == "no_bid", (name, body)
        assert "c1" not in buyers.pings, (name, body)
        assert (await outcomes(ex, answer["ping_id"], key))["c1"] == f"filtered:{reason}", (name, body)


async def test_all_given_filters_must_pass(buyers, exchange):
    buyers.script("c1", ping=bid(2))
    ex = await exchange(base_config(buyers, {"id": "c1", "filters": {"states": ["CA"], "min_quality": 90}}))
    answer = await ping_ok(ex, ping(state="CA", quality_score=80))
    assert answer["status"] == "no_bid"
    assert (await outcomes(ex, answer["ping_id"]))["c1"] == "filtered:min_quality"
    assert (await ping_ok(ex, ping(state="CA", quality_score=95)))["status"] == "bid"
