"""Bodies built to break the decoder, and the validation report a seller gets.

Over real HTTP against the real app with a recording buyer server behind it: nesting
thousands of levels deep, integers past 64 bits, every bad field of a body reported at once
in plain words, and the attributes a declared vertical takes.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from pingpost.config import ConfigError, from_dict
from pingpost.schema import RULES, DirectPostRequest, Lead, PingRequest, PostLead, PostRequest
from tests.helpers_contract import assert_error, ping_ok, raw
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, PING, base_config

PING_ROUTE, POST_ROUTE, DIRECT_ROUTE = "/v1/ping", "/v1/post", "/v1/leads"
DEEP = 5000  # far past the ~1000 levels of Python's recursion limit; well inside 64 KiB


def deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def ping_json(**extra: str) -> str:
    """The standard ping as JSON text, with extra fields given as raw JSON text."""
    return json.dumps(PING)[:-1] + "".join(f', "{k}": {v}' for k, v in extra.items()) + "}"


def lead_json(**extra: str) -> str:
    return json.dumps(LEAD)[:-1] + "".join(f', "{k}": {v}' for k, v in extra.items()) + "}"


async def send(ex: Any, route: str, text: str) -> tuple[int, Any]:
    status, content_type, data = await raw(ex, "POST", route, data=text.encode(),
                                           headers={"Content-Type": "application/json"})
    assert content_type == "application/json", (status, data[:200])
    return status, json.loads(data)


def paths(answer: Any) -> list[str]:
    return [f["path"] for f in answer["error"]["fields"]]


def messages(answer: Any) -> dict[str, str]:
    return {f["path"]: f["message"] for f in answer["error"]["fields"]}


async def started(buyers: Any, exchange: Any, **config: Any) -> Any:
    buyers.script("c1", ping=bid(2), post=accept())
    return await exchange({**base_config(buyers, {"id": "c1"}), **config})


def nothing_reached_buyers(buyers: Any) -> None:
    assert buyers.pings == {} and buyers.posts == {}, (buyers.pings, buyers.posts)


# Nesting ------------------------------------------------------------------------------------

DEEP_BODIES = [
    ("top-level array", PING_ROUTE, deep_list(DEEP)),
    ("top-level objects", PING_ROUTE, deep_object(DEEP)),
    ("in attributes", PING_ROUTE, ping_json(attributes=f'{{"k": {deep_list(DEEP)}}}')),
    ("attributes as objects", PING_ROUTE, ping_json(attributes=deep_object(DEEP))),
    ("in an unknown field", PING_ROUTE, ping_json(extra=deep_list(DEEP))),
    ("beside personal data", PING_ROUTE, ping_json(email='"a@b.co"', attributes=f'{{"k": {deep_list(DEEP)}}}')),
    ("direct: top-level array", DIRECT_ROUTE, deep_list(DEEP)),
    ("direct: in attributes", DIRECT_ROUTE, ping_json(attributes=f'{{"k": {deep_list(DEEP)}}}', lead=json.dumps(LEAD))),
    ("direct: in lead.attributes", DIRECT_ROUTE, ping_json(lead=lead_json(attributes=f'{{"k": {deep_list(DEEP)}}}'))),
    ("post: top-level array", POST_ROUTE, deep_list(DEEP)),
    ("post: in lead.attributes", POST_ROUTE,
     f'{{"ping_id": "abc", "lead": {lead_json(attributes=deep_object(DEEP))}}}'),
    ("post: as the lead", POST_ROUTE, f'{{"ping_id": "abc", "lead": {deep_list(DEEP)}}}'),
]


@pytest.mark.parametrize("route,text", [row[1:] for row in DEEP_BODIES], ids=[row[0] for row in DEEP_BODIES])
async def test_body_nested_thousands_deep_is_400_not_500(buyers, exchange, route, text):
    ex = await started(buyers, exchange)
    assert len(text) < 64 * 1024
    status, answer = await send(ex, route, text)
    assert_error(status, answer, "malformed_json")
    assert "deep" in answer["error"]["message"]
    nothing_reached_buyers(buyers)
    assert (await ping_ok(ex))["status"] == "bid"  # and the exchange goes on serving


@pytest.mark.parametrize("route", [PING_ROUTE, DIRECT_ROUTE])
async def test_nesting_a_plain_decoder_reads_is_explained_with_its_path(buyers, exchange, route):
    ex = await started(buyers, exchange)
    text = ping_json(attributes=f'{{"k": {deep_list(50)}}}', **({"lead": json.dumps(LEAD)} if route == DIRECT_ROUTE else {}))
    status, answer = await send(ex, route, text)
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["attributes.k[0]"], answer
    nothing_reached_buyers(buyers)


# Integers past 64 bits ----------------------------------------------------------------------

BIG = 2**64
BIG_VALUES = [
    pytest.param("n", BIG, "attributes.n", id="2**64"),
    pytest.param("n", [1, BIG], "attributes.n[1]", id="2**64 in a list"),
    pytest.param("n", -(2**63) - 1, "attributes.n", id="-2**63-1"),
    pytest.param("n", 2**63, "attributes.n", id="2**63"),
    pytest.param("n", 10**400, "attributes.n", id="10**400"),
]


@pytest.mark.parametrize("key,value,path", BIG_VALUES)
async def test_ping_attribute_past_64_bits_is_422(buyers, exchange, key, value, path):
    ex = await started(buyers, exchange)
    status, answer = await ex.ping({**PING, "attributes": {"fine": 1, key: value}})
    assert_error(status, answer, "validation_error")
    assert paths(answer) == [path], answer
    assert "9223372036854775807" in messages(answer)[path]
    nothing_reached_buyers(buyers)


@pytest.mark.parametrize("key,value,path", BIG_VALUES)
async def test_direct_post_attribute_past_64_bits_is_422(buyers, exchange, key, value, path):
    ex = await started(buyers, exchange)
    status, answer = await ex.direct({**PING, "attributes": {key: value}, "lead": LEAD})
    assert_error(status, answer, "validation_error", path)
    status, answer = await ex.direct({**PING, "lead": {**LEAD, "attributes": {key: value}}})
    assert_error(status, answer, "validation_error", "lead." + path)
    nothing_reached_buyers(buyers)


@pytest.mark.parametrize("key,value,path", BIG_VALUES)
async def test_post_lead_attribute_past_64_bits_is_422_and_never_posted(buyers, exchange, key, value, path):
    ex = await started(buyers, exchange)
    ping_id = (await ping_ok(ex))["ping_id"]
    status, answer = await ex.post(ping_id, {**LEAD, "attributes": {key: value}})
    assert_error(status, answer, "validation_error", "lead." + path)
    assert "c1" not in buyers.posts
    status, sold = await ex.post(ping_id, LEAD)  # the ping is still there to be posted
    assert status == 200 and sold["status"] == "sold", sold


async def test_numbers_no_decoder_reads_are_422(buyers, exchange):
    """A float past 1.8e308, and an integer of thousands of digits (msgspec reads neither)."""
    ex = await started(buyers, exchange)
    status, answer = await send(ex, PING_ROUTE, ping_json(attributes='{"n": 1e400}'))
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["attributes.n"] and "float" in messages(answer)["attributes.n"], answer
    status, answer = await send(ex, PING_ROUTE, ping_json(attributes='{"n": 1' + "0" * 5000 + "}"))
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["attributes"] and "9223372036854775807" in messages(answer)["attributes"], answer
    nothing_reached_buyers(buyers)


async def test_64_bit_limits_pass_to_the_buyer_exactly(buyers, exchange):
    ex = await started(buyers, exchange)
    attributes = {"max": 2**63 - 1, "min": -(2**63), "list": [2**63 - 1, -(2**63)], "float": 1.7e308}
    await ping_ok(ex, {**PING, "attributes": attributes})
    assert buyers.pings["c1"][0].body["attributes"] == attributes


# Every bad field, in plain words ------------------------------------------------------------

def plain_words(answer: Any) -> None:
    """Messages a seller reads: no regex, no msgspec type names, one wording."""
    text = json.dumps(answer)
    for leak in ("regex", "Expected", "`", "(?!", "str |", "UnsetType"):
        assert leak not in text, (leak, answer)
    for field in answer["error"]["fields"]:
        assert field["message"].startswith(("must be ", "is required", "is not ")), field


async def test_every_bad_ping_field_is_reported_in_plain_words(buyers, exchange):
    ex = await started(buyers, exchange)
    status, answer = await ex.ping({"vertical": "Auto", "zip": "9021", "state": "C", "quality_score": 101,
                                    "timeout_ms": "100", "colour": "red", "attributes": {"ok": 1, "k": None}})
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["vertical", "zip", "state", "quality_score", "timeout_ms", "colour", "attributes.k"]
    plain_words(answer)
    assert messages(answer)["zip"] == "must be 5 digits or ZIP+4 (12345-6789)"
    assert messages(answer)["colour"] == "is not a field of this request"
    assert answer["error"]["message"].startswith("vertical: must be ")
    nothing_reached_buyers(buyers)


async def test_every_bad_lead_field_is_reported(buyers, exchange):
    ex = await started(buyers, exchange)
    ping_id = (await ping_ok(ex))["ping_id"]
    lead = {"first_name": "  ", "email": "not-an-email", "phone": "12", "zip": "90210", "dob": "1990-13-01",
            "consent_cert_url": "http://plain.example"}
    status, answer = await ex.post(ping_id, lead)
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["lead.first_name", "lead.email", "lead.phone", "lead.dob", "lead.consent_cert_url",
                             "lead.last_name"], answer
    assert messages(answer)["lead.last_name"] == "is required"
    plain_words(answer)
    status, answer = await ex.post(ping_id, {k: v for k, v in LEAD.items() if k != "zip"})
    assert_error(status, answer, "validation_error")
    assert messages(answer) == {"lead.zip": "is required"}
    assert "c1" not in buyers.posts


async def test_values_of_the_right_shape_but_no_real_value_are_all_reported(buyers, exchange):
    """State "ZZ", email "a@b" and phone "000 000 0000" pass the decoder's shapes; the
    normalizers refuse them, and all three are named (not only the first)."""
    ex = await started(buyers, exchange)
    status, answer = await ex.direct({**PING, "state": "ZZ", "lead": {**LEAD, "email": "a@b", "phone": "000 000 0000"}})
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["state", "lead.email", "lead.phone"], answer
    plain_words(answer)
    # The same three beside a shape error: the explanation names them all too.
    status, answer = await ex.direct({**PING, "state": "ZZ", "zip": "1",
                                      "lead": {**LEAD, "email": "a@b", "phone": "000 000 0000"}})
    assert paths(answer) == ["zip", "state", "lead.email", "lead.phone"], answer
    nothing_reached_buyers(buyers)


def test_every_request_field_has_its_rule():
    for struct in (PingRequest, PostRequest, DirectPostRequest, Lead, PostLead):
        for field in msgspec.structs.fields(struct):
            assert field.encode_name in RULES, (struct.__name__, field.encode_name)


# Declared verticals -------------------------------------------------------------------------

AUTO = {"id": "auto", "attributes": {"vehicle_year": "int", "credit": "string", "price": "number",
                                     "homeowner": "bool", "tags": "list[string]", "years": "list[int]"}}
GOOD_ATTRIBUTES = {"vehicle_year": 2019, "credit": "good", "price": 12.5, "homeowner": True,
                   "tags": ["sr22"], "years": [2019, 2020]}


async def test_a_declared_vertical_takes_its_attributes(buyers, exchange):
    ex = await started(buyers, exchange, verticals=[AUTO])
    await ping_ok(ex, {**PING, "attributes": GOOD_ATTRIBUTES})
    await ping_ok(ex, {**PING, "attributes": {"price": 12}})  # an int is a number
    assert [p.body["attributes"] for p in buyers.pings["c1"]] == [GOOD_ATTRIBUTES, {"price": 12}]


BAD_DECLARED = [
    ({"colour": "red"}, {"attributes.colour": "is not an attribute of vertical auto"}),
    ({"vehicle_year": "2019"}, {"attributes.vehicle_year": "must be a whole number"}),
    ({"vehicle_year": 2019.0}, {"attributes.vehicle_year": "must be a whole number"}),
    ({"vehicle_year": True}, {"attributes.vehicle_year": "must be a whole number"}),
    ({"price": "12"}, {"attributes.price": "must be a number"}),
    ({"homeowner": 1}, {"attributes.homeowner": "must be true or false"}),
    ({"tags": "sr22"}, {"attributes.tags": "must be a list of strings"}),
    ({"years": [2019, "2020"]}, {"attributes.years": "must be a list of whole numbers"}),
    ({"credit": 700, "colour": "red", "vehicle_year": 2019},
     {"attributes.credit": "must be a string", "attributes.colour": "is not an attribute of vertical auto"}),
]


@pytest.mark.parametrize("attributes,expected", BAD_DECLARED)
async def test_a_declared_vertical_refuses_other_attributes(buyers, exchange, attributes, expected):
    ex = await started(buyers, exchange, verticals=[AUTO])
    status, answer = await ex.ping({**PING, "attributes": attributes})
    assert_error(status, answer, "validation_error")
    assert messages(answer) == expected
    status, answer = await ex.direct({**PING, "attributes": attributes, "lead": LEAD})
    assert_error(status, answer, "validation_error")
    assert messages(answer) == expected
    status, answer = await ex.direct({**PING, "lead": {**LEAD, "attributes": attributes}})
    assert_error(status, answer, "validation_error")
    assert messages(answer) == {f"lead.{k}": v for k, v in expected.items()}
    nothing_reached_buyers(buyers)


async def test_a_declared_vertical_checks_the_posted_lead_attributes(buyers, exchange):
    ex = await started(buyers, exchange, verticals=[AUTO])
    ping_id = (await ping_ok(ex, {**PING, "attributes": {"vehicle_year": 2019}}))["ping_id"]
    status, answer = await ex.post(ping_id, {**LEAD, "attributes": {"colour": "red", "vehicle_year": "new"}})
    assert_error(status, answer, "validation_error")
    assert messages(answer) == {"lead.attributes.colour": "is not an attribute of vertical auto",
                                "lead.attributes.vehicle_year": "must be a whole number"}
    assert "c1" not in buyers.posts
    status, sold = await ex.post(ping_id, {**LEAD, "attributes": {"credit": "good"}})
    assert status == 200 and sold["status"] == "sold", sold
    assert buyers.posts["c1"][0].body["lead"]["attributes"] == {"vehicle_year": 2019, "credit": "good"}


async def test_declared_errors_come_with_the_other_field_errors(buyers, exchange):
    ex = await started(buyers, exchange, verticals=[AUTO])
    status, answer = await ex.ping({**PING, "zip": "1", "attributes": {"colour": "red", "k": None}})
    assert_error(status, answer, "validation_error")
    assert paths(answer) == ["zip", "attributes.k", "attributes.colour"], answer


async def test_an_undeclared_vertical_takes_any_attributes(buyers, exchange):
    ex = await started(buyers, exchange, verticals=[{**AUTO, "id": "home"}])
    attributes = {"colour": "red", "vehicle_year": "2019", "tags": [1, "a", True]}
    await ping_ok(ex, {**PING, "attributes": attributes})
    assert buyers.pings["c1"][0].body["attributes"] == attributes


def config_errors(buyers: Any, **changes: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        from_dict({**base_config(buyers, {"id": "c1"}), **changes})
    return caught.value.errors


def test_bad_vertical_declarations_are_refused_with_their_paths(buyers):
    errors = dict(config_errors(buyers, verticals=[
        {"id": "auto", "attributes": {"vehicle_year": "integer", "n": 5, "tags": "list[list[int]]",
                                      "contact_email": "string", "ok": "list[number]"}},
        {"id": "auto"},
        {"id": "Home", "colour": "red"},
    ]))
    assert set(errors) == {"verticals[0].attributes.vehicle_year", "verticals[0].attributes.n",
                           "verticals[0].attributes.tags", "verticals[0].attributes.contact_email",
                           "verticals[1].id", "verticals[2].id", "verticals[2].colour"}, errors
    assert "string, int, number, bool, list[string]" in errors["verticals[0].attributes.vehicle_year"]
    assert "personal data" in errors["verticals[0].attributes.contact_email"]


def test_a_campaign_rule_on_an_undeclared_attribute_is_refused(buyers):
    config = base_config(buyers, {"id": "c1", "filters": {"rules": [
        {"field": "vehicle_year", "op": "gte", "value": 2010}, {"field": "colour", "op": "eq", "value": "red"}]}})
    with pytest.raises(ConfigError) as caught:
        from_dict({**config, "verticals": [AUTO]})
    assert caught.value.errors == [("campaigns[0].filters.rules[1].field", "vertical auto declares no attribute 'colour'")]
    from_dict(config)  # the same rules in an undeclared vertical are fine
