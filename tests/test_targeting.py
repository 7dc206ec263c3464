"""Eligibility and ranking semantics (contract section 4), on the reference and the compiled index.

Every selection test runs against both implementations; test_targeting_diff.py checks
them against each other on random inputs, this file checks them against the rules.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

import msgspec
import pytest

from pingpost import targeting
from pingpost.config import from_dict, zone
from pingpost.schema import PingFields
from pingpost.targeting import BENCHED, CAPPED, OPEN, Bid, Index

MONDAY_NOON_UTC = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()


def config(*campaigns: dict[str, Any], max_buyers: int = 50):
    return from_dict({
        "exchange": {"max_buyers_per_ping": max_buyers},
        "sellers": [{"id": "s1", "api_keys": ["key-s1-123"]}],
        "buyers": [{"id": "b"}],
        "campaigns": [{"id": f"c{i}", "buyer": "b", "vertical": "auto", "post_url": "http://b/post",
                       "fixed_price": 1.0, **c} for i, c in enumerate(campaigns)],
    })


@pytest.fixture(params=["reference", "compiled"])
def build(request: pytest.FixtureRequest) -> Callable[..., Index]:
    if request.param == "compiled" and not targeting.build_index(config()).compiled:
        pytest.fail("pingpost._targeting is not built: run pip install -e .")
    return targeting.Index if request.param == "reference" else targeting.build_index


def ping(**fields: Any) -> PingFields:
    return PingFields(**{"vertical": "auto", "zip": "90210", **fields})


def reasons(build: Callable[..., Index], filters: dict[str, Any], now: float = MONDAY_NOON_UTC,
            seller: str = "s1", **ping_fields: Any) -> list[tuple[int, str]]:
    """Select one campaign with these filters; [] when it is eligible."""
    out = build(config({"filters": filters})).select(ping(**ping_fields), seller, now, bytearray(1), [0])
    assert (out.eligible == [0]) is (out.reasons == [])
    return out.reasons


def passes(build: Callable[..., Index], filters: dict[str, Any], **kwargs: Any) -> bool:
    return reasons(build, filters, **kwargs) == []


def test_the_compiled_index_and_ranker_are_in_use() -> None:
    assert targeting.build_index(config()).compiled is True
    assert targeting.Index.compiled is False
    assert targeting.rank is not targeting.reference_rank


# Filters ------------------------------------------------------------------------------------


def test_states_any_case_and_missing_state_fails(build) -> None:
    assert passes(build, {"states": ["ca", "NY"]}, state="Ca")
    assert reasons(build, {"states": ["CA"]}, state="NV") == [(0, "filtered:states")]
    assert not passes(build, {"states": ["CA"]})
    assert reasons(build, {"exclude_states": ["ca"]}, state="CA") == [(0, "filtered:exclude_states")]
    assert passes(build, {"exclude_states": ["CA"]})


def test_zips_compare_the_first_five_digits(build) -> None:
    assert passes(build, {"zips": ["90210"]}, zip="90210-1234")
    assert reasons(build, {"zips": ["90211"]}) == [(0, "filtered:zips")]
    assert reasons(build, {"exclude_zips": ["90210"]}, zip="90210-0001") == [(0, "filtered:exclude_zips")]
    assert passes(build, {"exclude_zips": ["90211"]})


def test_zip_prefixes(build) -> None:
    assert passes(build, {"zip_prefixes": ["1", "902"]})
    assert passes(build, {"zip_prefixes": ["90210"]})
    assert reasons(build, {"zip_prefixes": ["903", "0"]}) == [(0, "filtered:zip_prefixes")]


def test_sellers(build) -> None:
    assert passes(build, {"sellers": ["s1"]})
    assert reasons(build, {"sellers": ["s2"]}) == [(0, "filtered:sellers")]
    assert reasons(build, {"exclude_sellers": ["s1"]}) == [(0, "filtered:exclude_sellers")]
    assert passes(build, {"exclude_sellers": ["s2"]})


def test_sources_and_a_ping_without_source(build) -> None:
    assert passes(build, {"sources": ["web"]}, source_id="web")
    assert reasons(build, {"sources": ["web"]}) == [(0, "filtered:sources")]
    assert reasons(build, {"exclude_sources": ["web"]}, source_id="web") == [(0, "filtered:exclude_sources")]
    assert passes(build, {"exclude_sources": ["web"]})


def test_min_quality_and_a_ping_without_score(build) -> None:
    assert passes(build, {"min_quality": 50}, quality_score=50)
    assert reasons(build, {"min_quality": 50}, quality_score=49) == [(0, "filtered:min_quality")]
    assert not passes(build, {"min_quality": 0})
    assert passes(build, {"min_quality": 0}, quality_score=0)


def test_the_first_failing_filter_is_the_reason(build) -> None:
    filters = {"states": ["CA"], "zips": ["11111"], "min_quality": 90,
               "rules": [{"field": "x", "op": "exists"}]}
    assert reasons(build, filters) == [(0, "filtered:states")]
    assert reasons(build, filters, state="CA") == [(0, "filtered:zips")]
    assert reasons(build, filters, state="CA", zip="11111") == [(0, "filtered:min_quality")]
    assert reasons(build, filters, state="CA", zip="11111", quality_score=95) == [(0, "filtered:rule:x")]


# Schedules ----------------------------------------------------------------------------------


def at(day: int, hhmm: str, tz: str = "UTC") -> float:
    """Epoch seconds of ``hhmm`` on 2024-01-0<day> (day 1 is a Monday) in ``tz``."""
    hour, minute = map(int, hhmm.split(":"))
    return datetime.datetime(2024, 1, day, hour, minute, tzinfo=zone(tz)).timestamp()


def test_schedule_window_days_and_timezone(build) -> None:
    window = {"schedule": {"days": ["mon"], "start": "09:00", "end": "17:00", "timezone": "America/New_York"}}
    assert passes(build, window, now=at(1, "09:00", "America/New_York"))
    assert passes(build, window, now=at(1, "16:59", "America/New_York"))
    assert reasons(build, window, now=at(1, "17:00", "America/New_York")) == [(0, "filtered:schedule")]
    assert not passes(build, window, now=at(1, "08:59", "America/New_York"))
    assert not passes(build, window, now=at(2, "12:00", "America/New_York"))
    assert not passes(build, window, now=at(1, "09:00"))  # 09:00 UTC is 04:00 in New York


def test_overnight_schedule_runs_into_the_next_morning(build) -> None:
    window = {"schedule": {"days": ["sun"], "start": "22:00", "end": "06:00"}}
    assert passes(build, window, now=at(7, "22:00"))
    assert passes(build, window, now=at(1, "05:59"))  # Monday morning after the listed Sunday
    assert not passes(build, window, now=at(1, "06:00"))
    assert not passes(build, window, now=at(7, "05:00"))  # Sunday morning belongs to Saturday's window
    assert passes(build, {"schedule": {"days": ["tue"], "start": "18:00", "end": "24:00"}}, now=at(2, "23:59"))


def test_schedule_bitmap_wraps_the_week() -> None:
    bitmap = targeting.schedule_bitmap(["sun"], "23:00", "01:00")
    assert sum(bitmap) == 120
    assert bitmap[0] and bitmap[59] and not bitmap[60]
    assert bitmap[targeting.MINUTES_PER_WEEK - 60] and not bitmap[targeting.MINUTES_PER_WEEK - 61]
    assert sum(targeting.schedule_bitmap(["mon", "wed"], "00:00", "24:00")) == 2 * 1440


# Rules --------------------------------------------------------------------------------------


def rule(op: str, value: Any = None, attrs: Any = msgspec.UNSET, build=targeting.Index) -> bool:
    return passes(build, {"rules": [{"field": "x", "op": op, "value": value}]}, attributes=attrs)


@pytest.mark.parametrize("op, value, attribute, expected", [
    ("eq", "a", "a", True), ("eq", "a", "b", False), ("eq", 1, 1.0, True), ("eq", "1", 1, False),
    ("eq", True, 1, False), ("eq", 1, True, False), ("eq", True, True, True), ("eq", False, 0, False),
    ("ne", "a", "b", True), ("ne", "a", "a", False), ("ne", 1, True, True),
    ("in", ["a", 2], 2, True), ("in", ["a", 2], "b", False), ("in", [1], True, False),
    ("not_in", ["a", 2], "c", True), ("not_in", ["a", 2], 2.0, False),
    ("gt", 5, 6, True), ("gt", 5, 5, False), ("gte", 5, 5, True), ("gte", 5, 4.5, False),
    ("lt", 5, 4, True), ("lt", 5, 5, False), ("lte", 5, 5, True), ("lte", 5, 6, False),
    ("gt", 0, True, False), ("gt", 1, "2", False),
    ("between", [1, 3], 1, True), ("between", [1, 3], 3, True), ("between", [1, 3], 3.5, False),
    ("between", [0, 3], False, False),
    ("exists", None, "anything", True), ("exists", True, 0, True), ("exists", False, 0, False),
    # list attributes: eq/in when any element matches, ne/not_in when none does, no ordering
    ("eq", "a", ["b", "a"], True), ("eq", "a", ["b"], False), ("ne", "a", ["b", "a"], False),
    ("ne", "a", ["b"], True), ("in", ["a"], ["c", "a"], True), ("not_in", ["a"], ["c", "a"], False),
    ("not_in", ["a"], ["c"], True), ("gt", 1, [5], False), ("between", [0, 9], [5], False),
    ("eq", 1, [True], False),
])
def test_rule_ops(build, op: str, value: Any, attribute: Any, expected: bool) -> None:
    assert rule(op, value, {"x": attribute}, build) is expected


@pytest.mark.parametrize("op, value", [("eq", "a"), ("ne", "a"), ("in", ["a"]), ("not_in", ["a"]),
                                       ("gt", 1), ("lte", 1), ("between", [0, 1]), ("exists", True)])
def test_a_missing_attribute_fails_every_op_but_exists_false(build, op: str, value: Any) -> None:
    assert rule(op, value, {"other": "a"}, build) is False
    assert rule(op, value, msgspec.UNSET, build) is False
    assert rule("exists", False, {"other": 1}, build) is True
    assert rule("exists", False, msgspec.UNSET, build) is True


def test_huge_integers_compare_exactly(build) -> None:
    assert rule("gt", 2**53, {"x": 2**53 + 1}, build) is True
    assert rule("eq", 2**53, {"x": float(2**53 + 1)}, build) is True
    assert rule("eq", 2**53 + 1, {"x": float(2**53 + 1)}, build) is False


def test_rules_all_must_pass_and_report_their_field(build) -> None:
    filters = {"rules": [{"field": "x", "op": "eq", "value": 1}, {"field": "y", "op": "exists"}]}
    assert passes(build, filters, attributes={"x": 1, "y": "z"})
    assert reasons(build, filters, attributes={"x": 1}) == [(0, "filtered:rule:y")]
    assert reasons(build, filters, attributes={"y": 1}) == [(0, "filtered:rule:x")]


# Blocks, verticals and the max_buyers cut ----------------------------------------------------


def test_blocks_inactive_and_other_verticals(build) -> None:
    index = build(config({}, {}, {"active": False}, {"vertical": "home"}, {"filters": {"zips": ["11111"]}}))
    out = index.select(ping(), "s1", MONDAY_NOON_UTC, bytearray([CAPPED, BENCHED, OPEN, OPEN, BENCHED]), [0] * 5)
    assert out.eligible == []
    assert out.reasons == [(0, "capped"), (1, "benched"), (4, "benched")]  # a block comes before filters
    assert index.select(ping(vertical="life"), "s1", 0, bytearray(5), [0] * 5) == targeting.Selection()


def test_max_buyers_keeps_highest_priority_then_last_bid_then_order(build) -> None:
    index = build(config({"priority": 1}, {"priority": 2}, {"priority": 1}, {"priority": 1}, {"priority": 0},
                         {"filters": {"zips": ["11111"]}, "priority": 9}, max_buyers=3))
    out = index.select(ping(), "s1", MONDAY_NOON_UTC, bytearray(6), [0, 0, 50, 0, 999, 0])
    assert out.eligible == [1, 2, 0]
    assert out.reasons == [(5, "filtered:zips"), (3, targeting.OVER_MAX), (4, targeting.OVER_MAX)]


def test_eligible_is_best_first_without_a_cut(build) -> None:
    index = build(config({"priority": 0}, {"priority": 0}, {"priority": 3}))
    out = index.select(ping(), "s1", MONDAY_NOON_UTC, bytearray(3), [10, 20, 0])
    assert out == targeting.Selection(eligible=[2, 1, 0], reasons=[])


# The detail limit ---------------------------------------------------------------------------


def large_vertical(build: Callable[..., Index], filtered: int):
    """``filtered`` campaigns failing a state, a rule on ``x``, then a rule on ``y``, in
    turn, then 20 passing ones of rising priority, of which 5 are eligible."""
    kinds = [{"states": ["NY"]}, {"rules": [{"field": "x", "op": "exists"}]},
             {"rules": [{"field": "y", "op": "exists"}]}]
    campaigns = [{"filters": kinds[i % 3]} for i in range(filtered)]
    campaigns += [{"priority": i} for i in range(20)]
    n = len(campaigns)
    blocks = bytearray(n)
    blocks[1] = CAPPED
    return build(config(*campaigns, max_buyers=5)).select(ping(state="CA"), "s1", MONDAY_NOON_UTC, blocks, [0] * n)


def test_up_to_the_detail_limit_every_reason_is_listed(build) -> None:
    first = targeting.DETAIL_LIMIT - 15  # 49 filtered + 15 cut
    out = large_vertical(build, first)
    assert out.eligible == [first + 19, first + 18, first + 17, first + 16, first + 15] and out.counts == {}
    assert len(out.reasons) == targeting.DETAIL_LIMIT
    assert out.reasons[:4] == [(0, "filtered:states"), (1, "capped"), (2, "filtered:rule:y"), (3, "filtered:states")]
    assert out.reasons[first:] == [(i, targeting.OVER_MAX) for i in range(first + 14, first - 1, -1)]


def test_past_the_detail_limit_reasons_are_counted_in_order_of_appearance(build) -> None:
    first = targeting.DETAIL_LIMIT - 14  # 50 filtered + 15 cut
    out = large_vertical(build, first)
    assert out.eligible == [first + 19, first + 18, first + 17, first + 16, first + 15] and out.reasons == []
    assert list(out.counts.items()) == [("filtered:states", 17), ("capped", 1), ("filtered:rule:y", 16),
                                        ("filtered:rule:x", 16), (targeting.OVER_MAX, 15)]


# Ranking ------------------------------------------------------------------------------------

RANKERS = [pytest.param(targeting.reference_rank, id="reference"), pytest.param(targeting.rank, id="compiled")]


def test_tiebreak_keys_are_splitmix64() -> None:
    # The published splitmix64 sequence for seed 0.
    assert targeting.tiebreak_keys(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert targeting.tiebreak_keys(-1, 2) == targeting.tiebreak_keys(2**64 - 1, 2)


@pytest.mark.parametrize("rank", RANKERS)
def test_rank_by_bid_then_priority(rank) -> None:
    bids = [Bid(0, 100, 0), Bid(1, 300, 0), Bid(2, 100, 5), Bid(3, 200, 9)]
    ranked, dropped = rank(bids, 0, 1)
    assert [b.campaign for b in ranked] == [1, 3, 2, 0]
    assert dropped == []


@pytest.mark.parametrize("rank", RANKERS)
def test_rank_drops_below_min_bid_and_zero(rank) -> None:
    bids = [Bid(0, 99, 0), Bid(1, 100, 0), Bid(2, 0, 0), Bid(3, 150, 0)]
    ranked, dropped = rank(bids, 100, 7)
    assert [b.campaign for b in ranked] == [3, 1]
    assert [b.campaign for b in dropped] == [0, 2]


@pytest.mark.parametrize("rank", RANKERS)
def test_equal_bids_and_priorities_take_turns_by_seed(rank) -> None:
    bids = [Bid(i, 100, 1) for i in range(3)]
    firsts = {rank(bids, 0, seed)[0][0].campaign for seed in range(60)}
    assert firsts == {0, 1, 2}
    assert rank(bids, 0, 12345) == rank(bids, 0, 12345)
    keys = targeting.tiebreak_keys(12345, 3)
    assert [b.campaign for b in rank(bids, 0, 12345)[0]] == sorted(range(3), key=keys.__getitem__)


@pytest.mark.parametrize("rank", RANKERS)
def test_expected_rank_orders_by_bid_times_accept_rate(rank) -> None:
    """3.00 accepted 40% of the time is worth 1.20 a lead, 2.00 at 90% is worth 1.80."""
    bids = [Bid(0, 300, 0), Bid(1, 200, 0), Bid(2, 150, 0)]
    rates = [400_000, 900_000, 1_000_000]
    assert [b.campaign for b in rank(bids, 0, 1, rates)[0]] == [1, 2, 0]
    assert [b.campaign for b in rank(bids, 0, 1)[0]] == [0, 1, 2], "without rates: by bid alone"


@pytest.mark.parametrize("rank", RANKERS)
def test_expected_rank_ties_go_to_priority_then_the_seed(rank) -> None:
    """Equal worth from different bids (100 x 50% = 50 x 100%) is a tie, broken as equal bids are."""
    bids = [Bid(0, 100, 0), Bid(1, 50, 3), Bid(2, 25, 0)]
    rates = [500_000, 1_000_000, 1_000_000]
    assert [b.campaign for b in rank(bids, 0, 9, rates)[0]] == [1, 0, 2]
    tied = [Bid(0, 100, 0), Bid(1, 50, 0)]
    assert {rank(tied, 0, seed, rates)[0][0].campaign for seed in range(60)} == {0, 1}
    keys = targeting.tiebreak_keys(77, 2)
    assert [b.campaign for b in rank(tied, 0, 77, rates)[0]] == sorted(range(2), key=keys.__getitem__)


@pytest.mark.parametrize("rank", RANKERS)
def test_expected_rank_drops_by_the_real_bid_and_keeps_a_zero_rate(rank) -> None:
    """``min_bid`` compares the bid, not its worth; a rate of 0 ranks last but still ranks."""
    bids = [Bid(0, 99, 0), Bid(1, 100, 0), Bid(2, 500, 0)]
    ranked, dropped = rank(bids, 100, 7, [1_000_000, 10_000, 0])
    assert [b.campaign for b in ranked] == [1, 2]
    assert [b.campaign for b in dropped] == [0]
