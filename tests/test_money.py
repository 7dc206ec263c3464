"""Contract 4.3, 4.4 and 7 (cents): cutting bids, min_bid, revenue share, ranking.

HTTP tests drive the real exchange; property tests (hypothesis) hold ``pingpost.money``,
``pingpost.normalize`` and ``pingpost.targeting.rank`` to the contract's arithmetic.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from decimal import ROUND_FLOOR, Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pingpost import money, normalize
from pingpost.targeting import Bid, rank
from tests.helpers_contract import make_config, outcomes, ping_ok, sold_ping
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, base_config

# HTTP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("written,price", [(2.999, 2.99), (0.29, 0.29), (1.005, 1.0), (0.57, 0.57), (1.1, 1.1),
                                           (4.35, 4.35), (19.999999, 19.99), (1, 1.0), (1234.5678, 1234.56)])
async def test_bid_is_cut_down_to_whole_cents(buyers, exchange, written, price):
    buyers.script("c1", ping=bid(written), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    answer, sold = await sold_ping(ex)
    assert answer["price"] == price and sold["price"] == price
    assert buyers.posts["c1"][0].body["price"] == price, "the buyer sees its own cut bid"


async def test_min_bid_is_compared_with_the_cut_bid(buyers, exchange):
    buyers.script("under", ping=bid(0.999))
    ex = await exchange(make_config(buyers, {"id": "under"}, acme={"min_bid": 1.0}))
    answer = await ping_ok(ex)
    # 0.999 is cut to 0.99 before the comparison, so it is below 1.00 although it rounds to 1.00.
    assert answer["status"] == "no_bid" and "price" not in answer
    assert (await outcomes(ex, answer["ping_id"]))["under"] == "below_min_bid"
    status, body = await ex.post(answer["ping_id"], LEAD)
    assert 400 <= status < 500 and "under" not in buyers.posts


async def test_min_bid_equal_to_the_cut_bid_passes(buyers, exchange):
    buyers.script("edge", ping=bid(1.009), post=accept())
    buyers.script("under", ping=bid(0.5))
    ex = await exchange(make_config(buyers, {"id": "edge"}, {"id": "under"}, acme={"min_bid": 1.0}))
    answer, sold = await sold_ping(ex)
    assert answer["price"] == 1.0 and sold["status"] == "sold" and sold["attempts"] == 1
    assert await outcomes(ex, answer["ping_id"]) == {"edge": "bid", "under": "below_min_bid"}
    assert "under" not in buyers.posts, "a bid below min_bid is never offered the lead"


@pytest.mark.parametrize("bid_amount,share,price", [(3.00, 0.7, 2.10), (1.0, 0.29, 0.29), (10.0, 0.57, 5.70),
                                                    (2.999, 0.5, 1.49), (0.01, 0.5, 0.0), (9.99, 1.0, 9.99),
                                                    (4.35, 0.9, 3.91)])
async def test_revenue_share_is_exact(buyers, exchange, bid_amount, share, price):
    buyers.script("c1", ping=bid(bid_amount), post=accept())
    ex = await exchange(make_config(buyers, {"id": "c1"}, acme={"revenue_share": share}))
    answer = await ping_ok(ex)
    assert answer["status"] == "bid" and answer["price"] == price
    status, sold = await ex.post(answer["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == price
    assert buyers.posts["c1"][0].body["price"] == money.to_amount(money.to_cents(bid_amount)), \
        "the buyer is charged its whole bid, not the seller's share"


async def test_higher_bid_ranks_first(buyers, exchange):
    buyers.script("cheap", ping=bid(2.0), post=accept())
    buyers.script("rich", ping=bid(2.01), post=accept())
    ex = await exchange(base_config(buyers, {"id": "cheap", "priority": 10}, {"id": "rich"}))
    answer, sold = await sold_ping(ex)
    assert answer["price"] == 2.01 and sold["price"] == 2.01
    assert "rich" in buyers.posts and "cheap" not in buyers.posts, "priority only breaks ties between equal bids"


async def test_equal_bids_higher_priority_first(buyers, exchange):
    buyers.script("p0", ping=bid(3.0), post=accept())
    buyers.script("p5", ping=bid(3.0), post=accept())
    ex = await exchange(base_config(buyers, {"id": "p0", "priority": 0}, {"id": "p5", "priority": 5}))
    for _ in range(8):
        await sold_ping(ex)
    assert len(buyers.posts["p5"]) == 8 and "p0" not in buyers.posts


async def test_equal_bid_and_priority_share_wins(buyers, exchange):
    ex = await exchange(base_config(buyers, {"id": "a", "ping_url": None, "fixed_price": 2.5},
                                    {"id": "b", "ping_url": None, "fixed_price": 2.5}))
    buyers.script("a", post=accept())
    buyers.script("b", post=accept())
    for _ in range(40):
        await sold_ping(ex)
    wins = Counter({c: len(buyers.posts.get(c, [])) for c in ("a", "b")})
    # A fair coin gives each at least one win in 40 with probability 1 - 2^-39.
    assert wins["a"] >= 1 and wins["b"] >= 1 and wins["a"] + wins["b"] == 40


# pingpost.money ----------------------------------------------------------------------------

decimal_amounts = st.decimals(min_value=0, max_value=Decimal("99999.9999"), places=4, allow_nan=False,
                              allow_infinity=False)


@given(decimal_amounts)
def test_to_cents_floors_the_written_number(written):
    # A float made from a decimal of <= 15 significant digits repr()s back to that decimal.
    amount = float(str(written))
    expected = int((written * 100).to_integral_value(ROUND_FLOOR))
    assert money.to_cents(amount) == expected


@given(st.integers(min_value=0, max_value=10**9))
def test_to_cents_is_exact_on_whole_cents(cents):
    assert money.to_cents(cents / 100) == cents
    assert money.to_amount(cents) == cents / 100


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_to_cents_never_rounds_up(amount):
    cents = money.to_cents(amount)
    assert cents >= 0
    assert Decimal(cents) <= Decimal(repr(amount)) * 100 < Decimal(cents + 1)


@pytest.mark.parametrize("amount, cents", [(0.29, 29), (12.345, 1234), (0.0, 0), (-0.0, 0), (1e-05, 0), (7, 700),
                                           (1.5e16, 1_500_000_000_000_000_000), (99.999, 9999), (0.1, 10)])
def test_to_cents_of_written_numbers(amount, cents):
    assert money.to_cents(amount) == cents


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), -float("inf")])
def test_to_cents_refuses_what_is_not_an_amount(bad):
    with pytest.raises(ValueError):
        money.to_cents(bad)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10_000))
def test_apply_share_is_exact(cents, basis_points):
    ratio = money.share(basis_points / 10_000)
    # Integer arithmetic is the oracle: floor(cents * bp / 10000), no floats involved.
    assert money.apply_share(cents, ratio) == cents * basis_points // 10_000


def test_apply_share_known_values():
    assert money.apply_share(300, money.share(0.7)) == 210
    assert money.apply_share(100, money.share(0.29)) == 29
    assert money.apply_share(999, money.share(1.0)) == 999
    assert money.apply_share(1, money.share(0.5)) == 0


# pingpost.normalize ------------------------------------------------------------------------

area = st.integers(min_value=2, max_value=9).map(str)
digit = st.integers(min_value=0, max_value=9).map(str)


@st.composite
def us_numbers(draw: st.DrawFn) -> str:
    return (draw(area) + "".join(draw(digit) for _ in range(2)) + draw(area)
            + "".join(draw(digit) for _ in range(6)))


@st.composite
def written_phones(draw: st.DrawFn) -> tuple[str, str]:
    """A valid number and a way a seller might write it (punctuation, +1 or 1 prefix)."""
    digits = draw(us_numbers())
    style = draw(st.sampled_from(["plain", "dashes", "dots", "parens", "spaces", "mixed"]))
    a, b, c = digits[:3], digits[3:6], digits[6:]
    written = {"plain": digits, "dashes": f"{a}-{b}-{c}", "dots": f"{a}.{b}.{c}", "parens": f"({a}) {b}-{c}",
               "spaces": f"{a} {b} {c}",
               "mixed": "".join(ch + draw(st.sampled_from(["", " ", "-", ".", "(", ")"])) for ch in digits)}[style]
    prefix = draw(st.sampled_from(["", "1", "1 ", "1-", "+1", "+1 ", "+1-", "+1 ("]))
    if prefix.endswith("(") and style != "plain":
        prefix = prefix[:-1]
    pad = draw(st.sampled_from(["", " ", "  "]))
    return pad + prefix + written + pad, digits


@given(written_phones())
def test_phone_normalizes_to_ten_digits(case):
    written, digits = case
    assert normalize.phone(written) == digits


@given(us_numbers(), st.integers(min_value=1, max_value=14).filter(lambda n: n not in (10, 11)))
def test_phone_with_wrong_digit_count_is_refused(digits, length):
    assert normalize.phone((digits * 2)[:length]) is None


@given(us_numbers(), st.sampled_from(list("abcxyz#*/,;_@")), st.integers(min_value=0, max_value=9))
def test_phone_with_letters_or_symbols_is_refused(digits, junk, at):
    assert normalize.phone(digits[:at] + junk + digits[at:]) is None


@given(us_numbers(), st.sampled_from(["0", "2", "9"]))
def test_phone_eleven_digits_need_a_leading_1(digits, lead_digit):
    assert normalize.phone(lead_digit + digits) is None


@given(us_numbers())
def test_phone_with_non_ascii_digits_is_refused(digits):
    arabic = "".join(chr(0x0660 + int(d)) for d in digits)
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in digits)
    assert normalize.phone(arabic) is None
    assert normalize.phone(fullwidth) is None
    assert normalize.phone(digits[:5] + arabic[5:]) is None


@pytest.mark.parametrize("bad", ["0155550134", "1155550134", "4150550134", "4151550134", "+2 415 555 0134",
                                 "415+5550134", "++14155550134", ""])
def test_phone_known_refusals(bad):
    assert normalize.phone(bad) is None


local_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-",
                     min_size=1, max_size=20)
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12)


@given(local_part, label, st.sampled_from(["com", "ORG", "Net", "io"]), st.sampled_from(["", " ", "\t", "  "]),
       st.sampled_from(["", " ", "\n"]))
def test_email_is_trimmed_and_lower_cased(local, domain, tld, before, after):
    address = f"{local}@{domain}.{tld}"
    assert normalize.email(before + address + after) == address.lower()


@pytest.mark.parametrize("bad", ["plain", "a@b", "@b.com", "a@.", "a b@c.com", "a@b@c.com", "a@b .com", ""])
def test_email_refusals(bad):
    assert normalize.email(bad) is None


@given(st.text("0123456789", min_size=5, max_size=5),
       st.one_of(st.just(""), st.text("0123456789", min_size=4, max_size=4).map(lambda d: "-" + d)))
def test_zip5_cuts_zip_plus_four(five, plus4):
    assert normalize.zip5(five + plus4) == five


@given(st.sampled_from(sorted(normalize.US_STATES)), st.lists(st.booleans(), min_size=2, max_size=2))
def test_state_codes_any_case_are_upper(code, upper):
    written = "".join(ch if up else ch.lower() for ch, up in zip(code, upper))
    assert normalize.state(written) == code


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=2, max_size=2))
def test_state_outside_the_us_list_is_refused(code):
    assume(code.upper() not in normalize.US_STATES)
    assert normalize.state(code) is None


def test_state_list_has_states_dc_and_territories():
    assert len(normalize.US_STATES - {"DC", "PR", "VI", "GU", "AS", "MP", "UM"}) == 50
    assert {"DC", "PR", "GU"} <= normalize.US_STATES


# pingpost.targeting.rank ------------------------------------------------------------------

bids_strategy = st.lists(
    st.builds(Bid, campaign=st.integers(min_value=0, max_value=10**6), cents=st.integers(min_value=0, max_value=500),
              priority=st.integers(min_value=-3, max_value=3)),
    max_size=30)


def _key(b: Bid) -> tuple[int, int]:
    return (-b.cents, -b.priority)


@given(bids_strategy, st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=2**64 - 1))
def test_rank_orders_by_bid_then_priority(bids, min_cents, seed):
    ranked, dropped = rank(bids, min_cents, seed)
    assert [_key(b) for b in ranked] == sorted(_key(b) for b in ranked)
    assert all(b.cents >= min_cents and b.cents > 0 for b in ranked), "nothing below min_bid ranks"
    assert all(b.cents < min_cents or b.cents <= 0 for b in dropped)
    assert sorted(map(id, ranked + dropped)) == sorted(map(id, bids)), "every bid is ranked or dropped once"


@given(bids_strategy, st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=2**64 - 1))
def test_rank_same_seed_same_order(bids, min_cents, seed):
    first, _ = rank(bids, min_cents, seed)
    second, _ = rank(list(bids), min_cents, seed)
    assert [id(b) for b in first] == [id(b) for b in second]


@given(bids_strategy, st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=2**64 - 1),
       st.randoms(use_true_random=False))
def test_rank_of_a_permutation_is_still_valid(bids, min_cents, seed, rnd):
    shuffled = list(bids)
    rnd.shuffle(shuffled)
    a, _ = rank(bids, min_cents, seed)
    b, _ = rank(shuffled, min_cents, seed)
    assert [_key(x) for x in a] == [_key(x) for x in b], "the same bids give the same order of (bid, priority)"
    assert sorted(map(id, a)) == sorted(map(id, b))


def test_rank_ties_are_random_over_seeds():
    bids = [Bid(0, 100, 0), Bid(1, 100, 0), Bid(2, 100, 0)]
    firsts = Counter(rank(bids, 0, random.getrandbits(64))[0][0].campaign for _ in range(600))
    assert set(firsts) == {0, 1, 2}
    assert all(n > 100 for n in firsts.values()), firsts  # ~200 each; 100 is far in the tail


@settings(max_examples=50)
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_cut_price_round_trips_through_json_numbers(amount):
    cents = money.to_cents(amount)
    assert money.to_cents(money.to_amount(cents)) == cents
    assert math.isclose(money.to_amount(cents) * 100, cents, abs_tol=1e-6)
