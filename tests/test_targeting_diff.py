"""The compiled targeting twin against the reference: identical answers on random inputs.

Values come from small pools so that generated pings and campaigns actually meet
(same zips, same attribute values, equal bids); each index answers several pings so the
compiled side's per-minute time zone cache is exercised across calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pingpost import targeting
from pingpost.config import DAYS, Config
from pingpost.schema import PingFields

pytestmark = pytest.mark.skipif(targeting._compiled is None, reason="pingpost._targeting is not built")

STATES = ["CA", "ny", "TX", "Fl"]
ZIPS = ["90210", "90211", "10001", "60601", "02134"]
PREFIXES = ["9", "90", "902", "9021", "90210", "1", "100", "0", "021"]
SELLERS = ["s1", "s2", "s3"]
SOURCES = ["src1", "src2", "src3"]
ZONES = ["UTC", "America/New_York", "America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe"]
TIMES = ["00:00", "00:30", "06:00", "09:15", "12:00", "17:45", "22:00", "23:59", "24:00"]
FIELDS = ["a", "b", "c", "d"]
NUMBERS = [-1, 0, 1, 2, 10, 0.5, 1.0, 2.5, 2**53, 2**53 + 1, 2**60]
SCALARS = NUMBERS + ["x", "y", "z", "1", True, False]
MINUTE_EDGES = [0.0, 1e-6, -2e-7, -4e-7, -6e-7, -1.0, 30.0, 59.9999995, 59.999999, 60.0]

scalars = st.sampled_from(SCALARS)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


def subset(pool: list[str]) -> st.SearchStrategy:
    return maybe(st.lists(st.sampled_from(pool), max_size=3))


def rule_value(op: str) -> st.SearchStrategy:
    if op == "exists":
        return st.sampled_from([None, True, False])
    if op in ("in", "not_in"):
        return st.lists(scalars, min_size=1, max_size=3) | st.sampled_from(["xy", "1"])  # a bare string: the reference iterates it
    if op == "between":
        return st.lists(st.sampled_from(NUMBERS), min_size=2, max_size=2).map(sorted)
    if op in ("gt", "gte", "lt", "lte"):
        return st.sampled_from(NUMBERS)
    return scalars


rules = st.sampled_from(["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "exists"]).flatmap(
    lambda op: st.fixed_dictionaries({"field": st.sampled_from(FIELDS), "op": st.just(op), "value": rule_value(op)}))

schedules = st.fixed_dictionaries({
    "days": st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True),
    "start": st.sampled_from(TIMES), "end": st.sampled_from(TIMES), "timezone": st.sampled_from(ZONES)})

FILTERS = {
    "states": subset(STATES), "exclude_states": subset(STATES), "zips": subset(ZIPS),
    "exclude_zips": subset(ZIPS), "zip_prefixes": subset(PREFIXES), "sellers": subset(SELLERS),
    "exclude_sellers": subset(SELLERS), "sources": subset(SOURCES), "exclude_sources": subset(SOURCES),
    "min_quality": maybe(st.integers(0, 100)), "schedule": maybe(schedules),
    "rules": maybe(st.lists(rules, min_size=1, max_size=3))}
# A few filters per campaign, rules most often, so that campaigns also pass and reach the later filters.
filters = st.lists(st.sampled_from([*FILTERS, "rules", "rules", "schedule"]), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: FILTERS[name] for name in names}))

campaign = st.fixed_dictionaries({
    "vertical": st.sampled_from(["v1", "v2"]), "priority": st.sampled_from([-1, 0, 0, 1, 5, 2**70]),
    "active": st.booleans(), "filters": filters})

attribute_values = scalars | st.lists(scalars, max_size=3)

pings = st.builds(
    PingFields, vertical=st.sampled_from(["v1", "v1", "v2", "v3"]),
    zip=st.sampled_from(ZIPS + ["90210-1234", "99999"]),
    state=st.sampled_from(STATES + ["zz", "ca", msgspec.UNSET]),
    source_id=st.sampled_from(SOURCES + ["other", msgspec.UNSET]),
    quality_score=st.sampled_from([0, 10, 50, 99, 100, msgspec.UNSET]),
    attributes=st.just(msgspec.UNSET) | st.dictionaries(st.sampled_from(FIELDS + ["e"]), attribute_values, max_size=4))

# 2000-01-01 .. 2100-01-01, mostly on quarter hours (where windows open and close in every
# zone used) give or take the microsecond rounding, sometimes anywhere.
nows = st.integers(946_684_800 // 900, 4_102_444_800 // 900).flatmap(
    lambda q: st.sampled_from(MINUTE_EDGES).map(lambda d: q * 900 + d) | st.floats(q * 900.0, q * 900.0 + 900))


def make_config(campaigns: list[dict], max_buyers: int) -> Config:
    raw = {"exchange": {"max_buyers_per_ping": max_buyers}, "buyers": [{"id": "b"}],
           "campaigns": [{"id": f"c{i}", "buyer": "b", "post_url": "http://b/post", "fixed_price": 1.0, **c}
                         for i, c in enumerate(campaigns)]}
    return msgspec.convert(raw, Config)


# 1,500 generated configs: on a loaded 2-core machine this outlasts the suite-wide 120 s bound.
@pytest.mark.timeout(900)
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaigns=st.lists(campaign, min_size=1, max_size=14), max_buyers=st.integers(1, 6), data=st.data())
def test_select_matches_reference(campaigns: list[dict], max_buyers: int, data: st.DataObject) -> None:
    config = make_config(campaigns, max_buyers)
    reference, compiled = targeting.Index(config), targeting.CompiledIndex(config)
    n = len(campaigns)
    last_bids = data.draw(st.lists(st.sampled_from([0, 5, 5, 100, -3, 2**70]), min_size=n, max_size=n))
    start = data.draw(nows)  # pings close in time: the per-minute cache must not carry over a minute's end
    for _ in range(4):
        ping, seller = data.draw(pings), data.draw(st.sampled_from(SELLERS + ["s9"]))
        now = start + data.draw(st.sampled_from([0.0, -0.5, 0.5, -4e-7, 4e-7, -30.0, 30.0]))
        blocks = bytearray(data.draw(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=n, max_size=n)))
        expected = reference.select(ping, seller, now, blocks, last_bids)
        assert compiled.select(ping, seller, now, blocks, last_bids) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pool=st.lists(campaign.map(lambda c: {**c, "vertical": "v1"}), min_size=1, max_size=8),
       max_buyers=st.integers(1, 40), data=st.data())
def test_large_verticals_match_reference(pool: list[dict], max_buyers: int, data: st.DataObject) -> None:
    """Verticals on both sides of ``DETAIL_LIMIT``, made of a few campaigns repeated: exact
    reasons below it, counts (keys in the same order) and the same top ``max_buyers`` past it,
    and the counts are what the exact reasons would count."""
    n = data.draw(st.integers(40, 200))
    campaigns = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    config = make_config(campaigns, max_buyers)
    reference, compiled = targeting.Index(config), targeting.CompiledIndex(config)
    last_bids = data.draw(st.lists(st.sampled_from([0, 5, 5, 100, -3, 2**40]), min_size=n, max_size=n))
    for _ in range(3):
        ping = msgspec.structs.replace(data.draw(pings), vertical="v1")
        seller, now = data.draw(st.sampled_from(SELLERS + ["s9"])), data.draw(nows)
        blocks = bytearray(data.draw(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=n, max_size=n)))
        expected = reference.select(ping, seller, now, blocks, last_bids)
        got = compiled.select(ping, seller, now, blocks, last_bids)
        assert got == expected and list(got.counts) == list(expected.counts)
        event("counted" if expected.counts else "exact")
        with mock.patch.object(targeting, "DETAIL_LIMIT", n):
            exact = reference.select(ping, seller, now, blocks, last_bids)
        assert exact.eligible == expected.eligible and not exact.counts
        if expected.counts:
            assert len(exact.reasons) > targeting.DETAIL_LIMIT and expected.reasons == []
            assert list(expected.counts.items()) == list(Counter(reason for _, reason in exact.reasons).items())
        else:
            assert exact.reasons == expected.reasons


@settings(max_examples=1500, deadline=None)
@given(rule_list=st.lists(rules, min_size=1, max_size=12),
       attributes=st.lists(st.dictionaries(st.sampled_from(FIELDS), attribute_values, max_size=4), max_size=4))
def test_rules_match_reference(rule_list: list[dict], attributes: list[dict]) -> None:
    """One rule per campaign, so that every rule meets every generated attribute set."""
    config = make_config([{"vertical": "v1", "filters": {"rules": [rule]}} for rule in rule_list], 100)
    reference, compiled = targeting.Index(config), targeting.CompiledIndex(config)
    n = len(rule_list)
    for attrs in [*attributes, msgspec.UNSET]:
        ping = PingFields(vertical="v1", zip="90210", attributes=attrs)
        expected = reference.select(ping, "s1", 0.0, bytearray(n), [0] * n)
        assert compiled.select(ping, "s1", 0.0, bytearray(n), [0] * n) == expected


@settings(max_examples=1000, deadline=None)
@given(windows=st.lists(schedules, min_size=1, max_size=8), start=nows,
       steps=st.lists(st.sampled_from([0.0, -0.5, 0.5, -4e-7, 4e-7, -60.0, 60.0, 900.0]), min_size=1, max_size=6))
def test_schedules_match_reference(windows: list[dict], start: float, steps: list[float]) -> None:
    """One schedule per campaign, asked at instants close together around window edges."""
    config = make_config([{"vertical": "v1", "filters": {"schedule": w}} for w in windows], 100)
    reference, compiled = targeting.Index(config), targeting.CompiledIndex(config)
    ping, n = PingFields(vertical="v1", zip="90210"), len(windows)
    for step in steps:
        expected = reference.select(ping, "s1", start + step, bytearray(n), [0] * n)
        assert compiled.select(ping, "s1", start + step, bytearray(n), [0] * n) == expected


bids = st.lists(st.builds(targeting.Bid, campaign=st.integers(0, 99),
                          cents=st.sampled_from([-5, 0, 1, 50, 100, 100, 250, 2**63]),
                          priority=st.sampled_from([-1, 0, 1, 2, 2**64])), max_size=60)


@settings(max_examples=3000, deadline=None)
@given(bids=bids, min_bid=st.sampled_from([0, 1, 50, 100, 2**64]),
       seed=st.integers(0, 2**64 - 1) | st.integers(-2**70, 2**70))
def test_rank_matches_reference(bids: list[targeting.Bid], min_bid: int, seed: int) -> None:
    assert targeting.rank(bids, min_bid, seed) == targeting.reference_rank(bids, min_bid, seed)


# Accept rates in parts per million, by campaign number: the store's values (0 to 10**6), and
# values no store makes, which the compiled ranker hands to the reference (a product past 64
# bits, a rate past 64 bits) or orders like it (negative, above 10**6). Pools small enough
# that different bids meet at equal worth (100 x 500,000 = 50 x 1,000,000). A sequence that is
# not a list, and campaign numbers outside it (negative ones index from the end, as in Python;
# past the end is the reference's IndexError), take the compiled ranker's slower path.
RATES = [0, 1, 250_000, 500_000, 500_000, 999_999, 1_000_000, 1_000_000, 2_000_000, -1, 2**40, 2**63]
rate_lists = st.lists(st.sampled_from(RATES), min_size=100, max_size=100)
rate_sequences = rate_lists | rate_lists.map(tuple)
stray_bids = st.lists(st.builds(targeting.Bid, campaign=st.integers(0, 99) | st.integers(-3, 102),
                                cents=st.sampled_from([-5, 0, 1, 50, 100, 100, 250, 2**63]),
                                priority=st.sampled_from([-1, 0, 1, 2, 2**64])), max_size=60)


def outcome(rank: Callable[..., Any], *args: Any) -> Any:
    """A ranker's answer, or the type of what it raised."""
    try:
        return rank(*args)
    except Exception as e:  # the twins must fail alike
        return type(e)


@settings(max_examples=3000, deadline=None)
@given(bids=bids, min_bid=st.sampled_from([0, 1, 50, 100, 2**64]), accept_ppm=rate_lists,
       seed=st.integers(0, 2**64 - 1) | st.integers(-2**70, 2**70))
def test_expected_rank_matches_reference(bids: list[targeting.Bid], min_bid: int, accept_ppm: list[int],
                                         seed: int) -> None:
    expected = targeting.reference_rank(bids, min_bid, seed, accept_ppm)
    assert targeting.rank(bids, min_bid, seed, accept_ppm) == expected
    event("tie on worth" if len({b.cents * accept_ppm[b.campaign] for b in expected[0]}) < len(expected[0])
          else "no tie")


@settings(max_examples=1000, deadline=None)
@given(bids=stray_bids, accept_ppm=rate_sequences, seed=st.integers(0, 2**64 - 1))
def test_expected_rank_indexes_rates_as_the_reference_does(bids: list[targeting.Bid], accept_ppm: Sequence[int],
                                                           seed: int) -> None:
    expected = outcome(targeting.reference_rank, bids, 0, seed, accept_ppm)
    assert outcome(targeting.rank, bids, 0, seed, accept_ppm) == expected
    event("raised" if isinstance(expected, type) else "ranked")
