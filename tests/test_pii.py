"""Personal data never reaches a buyer's ping: keys by their words, values by their look.

The hostile pings go over real HTTP to the real app, with a buyer server behind it that
records every request: each is refused as 422 ``pii_in_ping`` naming its paths, and the
buyer received none of them. Legitimate values that look a little like personal data
(zips, years, scores, hashes, ids, timestamps) go through to the buyer unchanged. The
rules themselves are checked with generated phone numbers, SSNs and near-misses.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pingpost import normalize
from tests.helpers_contract import assert_error, ping_ok
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, PING, base_config

AUTO = {"id": "auto", "attributes": {"vehicle_year": "int"}}

# (ping changes, the paths pii_in_ping must name)
HOSTILE: list[tuple[dict[str, Any], list[str]]] = [
    # Keys, by the words they contain, in any case.
    ({"attributes": {"contact_email": "x"}}, ["attributes.contact_email"]),
    ({"attributes": {"Email": "x"}}, ["attributes.Email"]),
    ({"attributes": {"EMAIL": True}}, ["attributes.EMAIL"]),
    ({"attributes": {"phone_number": "x"}}, ["attributes.phone_number"]),
    ({"attributes": {"full_name": "Ada Lovelace"}}, ["attributes.full_name"]),
    ({"attributes": {"FirstName": "Ada", "lastName": "Lovelace"}}, ["attributes.FirstName", "attributes.lastName"]),
    ({"attributes": {"surname": "Lovelace"}}, ["attributes.surname"]),
    ({"attributes": {"e-mail": "x"}}, ["attributes.e-mail"]),
    ({"attributes": {"home_address": "1 Main St"}}, ["attributes.home_address"]),
    ({"attributes": {"clientIP": "10.0.0.1", "ipv4": "10.0.0.2"}}, ["attributes.clientIP", "attributes.ipv4"]),
    ({"attributes": {"dateOfBirth": "1990-01-01", "birth_year": 1990}},
     ["attributes.dateOfBirth", "attributes.birth_year"]),
    ({"attributes": {"ssn": "x", "SSN4": 1234}}, ["attributes.ssn", "attributes.SSN4"]),
    ({"attributes": {"cellphone": ["x"]}}, ["attributes.cellphone"]),
    ({"attributes": {"ada@example.com": True}}, ["attributes.ada@example.com"]),
    # Values, under any key, in any string field.
    ({"attributes": {"note": "ada@example.com"}}, ["attributes.note"]),
    ({"attributes": {"note": "call (415) 555-0134 after 5"}}, ["attributes.note"]),
    ({"attributes": {"c": "+1 415 555 0134", "d": "415.555.0134", "e": "14155550134"}},
     ["attributes.c", "attributes.d", "attributes.e"]),
    ({"attributes": {"x": "123-45-6789"}}, ["attributes.x"]),
    ({"attributes": {"list": ["ok", "ada@example.com", 4, "4155550134"]}}, ["attributes.list[1]", "attributes.list[3]"]),
    ({"source_id": "ada@example.com"}, ["source_id"]),
    ({"sub_id": "415-555-0134"}, ["sub_id"]),
    ({"vertical": "4155550134"}, ["vertical"]),
    # Unknown top-level fields are named by the same rules (before the unknown-field error).
    ({"contact_email": "x"}, ["contact_email"]),
    ({"note": "ada@example.com"}, ["note"]),
    # Personal data wins over a declared vertical's and the shapes' errors.
    ({"zip": "1", "attributes": {"colour": "ada@example.com"}}, ["attributes.colour"]),
]


async def started(buyers: Any, exchange: Any, verticals: list[dict[str, Any]]) -> Any:
    buyers.script("c1", ping=bid(2), post=accept())
    buyers.script("c2", ping=bid(2), post=accept())
    config = base_config(buyers, {"id": "c1"}, {"id": "c2", "vertical": "4155550134"})
    return await exchange({**config, "verticals": verticals})


async def test_hostile_pings_are_refused_and_reach_no_buyer(buyers, exchange):
    ex = await started(buyers, exchange, [AUTO])
    for changes, paths in HOSTILE:
        for route in ("/v1/ping", "/v1/leads"):
            body = {**PING, **changes, **({"lead": LEAD} if route == "/v1/leads" else {})}
            status, answer = await ex.call("POST", route, body)
            assert_error(status, answer, "pii_in_ping")
            assert [f["path"] for f in answer["error"]["fields"]] == paths, (route, changes, answer)
    # Every hostile ping went to a vertical with campaigns; not one of them got through.
    assert buyers.pings == {} and buyers.posts == {}, (buyers.pings, buyers.posts)
    await ping_ok(ex, {**PING, "attributes": {"vehicle_year": 2019}})
    assert len(buyers.pings["c1"]) == 1


LEGITIMATE: dict[str, Any] = {
    "zip": "90210-1234", "source_id": "src-123", "sub_id": "2024-01-02T13:00:00Z",
    "quality_score": 80, "tcpa_consent": True,
    "email_sha256": hashlib.sha256(b"ada@example.com").hexdigest(),
    "phone_sha256": hashlib.sha256(b"4155550134").hexdigest(),
    "attributes": {
        "vehicle_year": 2019, "vehicle_count": 2, "credit": "good", "vin": "1HGCM82633A004352",
        "request_id": "123e4567-e89b-12d3-a456-426614174000", "hash": "ab" * 32, "sent_at": "1704200400",
        "sent_at_ms": "1704200400000", "price": "1234.56", "zip_code": "90210", "zip4": "90210-1234",
        "phone_type": "mobile", "years_at_address": 3, "email_verified": True, "has_phone": True,
        "email_domain": "gmail.com", "ip_score": 87, "email_sha256": "cd" * 32, "date": "2019-05-15",
        "ratio": "1-2-3", "code": "000-12-3456", "short": "555-0134", "name": "Gold plan",
        "ip_country": "US", "tags": ["sr22", "multi_car", "2019"],
    },
}


async def test_legitimate_values_reach_the_buyer_unchanged(buyers, exchange):
    ex = await started(buyers, exchange, [])
    answer = await ping_ok(ex, {"vertical": "auto", "state": "CA", **LEGITIMATE})
    assert answer["status"] == "bid"
    sent = buyers.pings["c1"][0].body
    assert sent["attributes"] == LEGITIMATE["attributes"]
    assert (sent["zip"], sent["source_id"], sent["sub_id"]) == ("90210", "src-123", LEGITIMATE["sub_id"])


# The rules, on generated values ------------------------------------------------------------

digits = st.text("0123456789", min_size=1, max_size=1)


@st.composite
def us_phones(draw: Any) -> str:
    """A valid US number in one of the ways people write it."""
    a = draw(st.integers(2, 9)), draw(digits), draw(digits)
    e = draw(st.integers(2, 9)), draw(digits), draw(digits)
    line = "".join(draw(digits) for _ in range(4))
    a_s, e_s = "".join(map(str, a)), "".join(map(str, e))
    style = draw(st.sampled_from(["{a}{e}{l}", "{a}-{e}-{l}", "({a}) {e}-{l}", "{a}.{e}.{l}", "+1 {a} {e} {l}",
                                  "1-{a}-{e}-{l}", "+1{a}{e}{l}", "({a}){e}-{l}", "{a} {e} {l}"]))
    return style.format(a=a_s, e=e_s, l=line)


@settings(max_examples=300, deadline=None)
@given(us_phones(), st.sampled_from(["", "tel ", "call: "]), st.sampled_from(["", " now", ", thanks"]))
def test_every_written_us_phone_is_personal_text(phone, before, after):
    assert normalize.phone(phone) is not None  # the lead's own rule takes it as a phone, too
    assert normalize.personal_text(before + phone + after)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 899).filter(lambda n: n != 666), st.integers(1, 99), st.integers(1, 9999))
def test_every_valid_ssn_is_personal_text(area_number, group, serial):
    assert normalize.personal_text(f"{area_number:03d}-{group:02d}-{serial:04d}")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**63))
def test_numbers_written_as_text_are_not_phones_unless_ten_digits_of_one(n):
    text = str(n)
    expected = len(text) == 10 and text[0] not in "01" and text[3] not in "01" or (
        len(text) == 11 and text[0] == "1" and text[1] not in "01" and text[4] not in "01")
    assert normalize.personal_text(text) == expected, text


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_hashes_and_ids_are_not_personal_text(seed):
    digest = hashlib.sha256(seed).hexdigest()
    assert not normalize.personal_text(digest)
    assert not normalize.personal_text(f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}")
    assert not normalize.personal_text("src-" + str(int(digest[:12], 16)))


@pytest.mark.parametrize("key", ["email", "Email", "contact_email", "contactEmail", "EMAIL_ADDRESS", "emailAddress",
                                 "phone", "PhoneNumber", "mobile_phone", "telephone", "first_name", "FirstName",
                                 "firstname", "LAST_NAME", "fullName", "customer_name", "address", "streetAddress",
                                 "ip", "IPAddress", "client_ip", "ipv6", "dob", "DOB", "date_of_birth", "birthdate",
                                 "ssn", "ssn_last4", "social_security_number", "e-mail", "user.email"])
def test_personal_keys(key):
    assert normalize.personal_key(key)


@pytest.mark.parametrize("key", ["vehicle_year", "zip", "zip_code", "state", "credit", "tags", "vip", "ship_date",
                                 "phone_type", "email_verified", "has_email", "years_at_address", "address_type",
                                 "email_sha256", "phone_md5", "ip_score", "ip_country", "email_domain", "name",
                                 "homeowner", "tcpa", "description", "recipe", "zipper"])
def test_keys_that_are_not_personal(key):
    assert not normalize.personal_key(key)
