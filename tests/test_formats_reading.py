"""A custom format's answer reading and its transforms, one table row per rule: what each
status, body and price becomes, hostile XML and JSON included (never an exception), and
what each transform makes of each kind of value."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pingpost.formats.answer import AnswerFormat, cents_of
from pingpost.formats.results import Answer
from pingpost.formats.spec import AnswerSpec, Read, Success
from pingpost.formats.transforms import compile_one

JSON = b"application/json"
XML = b"application/xml"
TEXT = b"text/plain"


def reader(**spec: Any) -> AnswerFormat:
    problems: list[tuple[str, str]] = []
    compiled = AnswerFormat(AnswerSpec(**spec), True, problems)
    assert problems == []
    return compiled


JSON_BUYER = reader(success=Success(path="status", match="^ok$"), price=Read(path="offer.price"),
                    reference=Read(path="offer.id"), reason=Read(path="reason"))
XML_BUYER = reader(success=Success(path="/r/status", match="^ok$"), price=Read(path="price"),
                   reference=Read(path="/r/offer/@id"), reason=Read(path="//reason"))
TEXT_BUYER = reader(parse="text", success=Success(match="^OK"), price=Read(regex=r"price=([0-9.]+)"),
                    reason=Read(regex=r"^NO: (.*)"))
NO_SUCCESS = reader(price=Read(path="bid"))

BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
                  b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><r><status>ok</status><price>&c;</price></r>')
EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><reason>&x;</reason></r>'


PINGS = [
    ("json_bid", JSON_BUYER, Answer(200, b'{"status":"OK","offer":{"price":7.5,"id":"o-1"}}', None, JSON),
     (750, "o-1", "bid")),
    ("json_ok_without_price", JSON_BUYER, Answer(200, b'{"status":"ok"}', None, JSON), (None, None, "error:bad_bid")),
    ("json_zero_price", JSON_BUYER, Answer(200, b'{"status":"ok","offer":{"price":0}}', None, JSON),
     (None, None, "no_bid")),
    ("json_price_under_a_cent", JSON_BUYER, Answer(200, b'{"status":"ok","offer":{"price":"0.004"}}', None, JSON),
     (None, None, "no_bid")),
    ("json_failure_reason", JSON_BUYER, Answer(200, b'{"status":"no","reason":"Outside our area!"}', None, JSON),
     (None, None, "no_bid:Outside_our_area")),
    ("json_failure_no_reason", JSON_BUYER, Answer(200, b'{"status":"no"}', None, JSON), (None, None, "no_bid")),
    ("json_says_timeout", JSON_BUYER, Answer(200, b'{"status":"no","reason":"timeout"}', None, JSON),
     (None, None, "no_bid:buyer_timeout")),
    ("bad_json", JSON_BUYER, Answer(200, b'{"status":"ok"', None, JSON), (None, None, "error:bad_json")),
    ("json_nested_too_deep", JSON_BUYER, Answer(200, b"[" * 20000 + b"]" * 20000, None, JSON),
     (None, None, "error:bad_json")),
    ("json_labelled_text", JSON_BUYER, Answer(200, b'{"status":"ok","offer":{"price":7.5}}', None, TEXT),
     (None, None, "no_bid")),
    ("http_204", JSON_BUYER, Answer(204, b"", None, b""), (None, None, "no_bid")),
    ("http_302", JSON_BUYER, Answer(302, b"", None, b""), (None, None, "error:http_302")),
    ("http_503", JSON_BUYER, Answer(503, b'{"status":"ok","offer":{"price":7.5}}', None, JSON),
     (None, None, "error:http_503")),
    ("http_400_reason", JSON_BUYER, Answer(400, b'{"status":"ok","reason":"zip required"}', None, JSON),
     (None, None, "no_bid:zip_required")),
    ("http_404_no_reason", JSON_BUYER, Answer(404, b"<html>Not Found</html>", None, b"text/html"),
     (None, None, "error:http_404")),
    ("transport_failure", JSON_BUYER, Answer(failure="error:reset"), (None, None, "error:reset")),
    ("reference_too_long", JSON_BUYER,
     Answer(200, b'{"status":"ok","offer":{"price":1,"id":"' + b"x" * 257 + b'"}}', None, JSON),
     (None, None, "error:bad_answer")),
    ("xml_bid", XML_BUYER, Answer(200, b'<r><status>ok</status><price> 3.25 </price><offer id="x9"/></r>', None, XML),
     (325, "x9", "bid")),
    ("xml_namespaced", XML_BUYER,
     Answer(200, b'<r xmlns="urn:b"><status>ok</status><price>3</price><offer id="n1"/></r>', None, b"text/xml"),
     (300, "n1", "bid")),
    ("xml_reasons_joined", XML_BUYER,
     Answer(200, b"<r><status>no</status><e><reason>zip</reason></e><reason>age</reason></r>", None, XML),
     (None, None, "no_bid:age_zip")),
    ("xml_malformed", XML_BUYER, Answer(200, b"<r><status>ok</r>", None, XML), (None, None, "error:bad_xml")),
    ("xml_entities_refused", XML_BUYER, Answer(200, BILLION_LAUGHS, None, XML), (None, None, "error:bad_xml")),
    ("xml_external_entity_refused", XML_BUYER, Answer(200, EXTERNAL, None, XML), (None, None, "error:bad_xml")),
    ("xml_nested_deep", XML_BUYER, Answer(200, b"<r><status>no</status><reason>" + b"<a>" * 100000 + b"deep"
                                          + b"</a>" * 100000 + b"</reason></r>", None, XML),
     (None, None, "no_bid:deep")),
    ("xml_not_utf8", XML_BUYER, Answer(200, b"<r><status>ok</status><price>\xff</price></r>", None, XML),
     (None, None, "error:bad_xml")),
    ("text_bid", TEXT_BUYER, Answer(200, b"OK price=12.00", None, TEXT), (1200, None, "bid")),
    ("text_refusal", TEXT_BUYER, Answer(200, b"NO: low quality", None, TEXT), (None, None, "no_bid:low_quality")),
    ("text_not_utf8", TEXT_BUYER, Answer(200, b"OK price=1.5 \xff\xfe", None, TEXT), (150, None, "bid")),
    ("price_alone_bids", NO_SUCCESS, Answer(200, b'{"bid":"12.50"}', None, JSON), (1250, None, "bid")),
    ("no_price_no_bid", NO_SUCCESS, Answer(200, b'{"other":1}', None, JSON), (None, None, "no_bid")),
    ("price_a_boolean", NO_SUCCESS, Answer(200, b'{"bid":true}', None, JSON), (None, None, "error:bad_bid")),
]


@pytest.mark.parametrize(("fmt", "answer", "expected"), [pytest.param(f, a, e, id=n) for n, f, a, e in PINGS])
def test_a_ping_answer_reads_as(fmt: AnswerFormat, answer: Answer, expected: tuple[Any, ...]) -> None:
    result = fmt.read_bid(answer)
    assert (result.cents, result.bid_id, result.outcome) == expected


POSTS = [
    ("accepted", JSON_BUYER, Answer(200, b'{"status":"ok","offer":{"id":"L-7"}}', None, JSON), (True, "L-7", "accepted")),
    ("rejected", JSON_BUYER, Answer(200, b'{"status":"dup","reason":"dup lead"}', None, JSON),
     (False, None, "rejected:dup_lead")),
    ("rejected_no_reason", JSON_BUYER, Answer(200, b'{"status":"dup"}', None, JSON),
     (False, None, "rejected:unspecified")),
    ("http_204_is_no_success", JSON_BUYER, Answer(204, b"", None, b""), (False, None, "rejected:unspecified")),
    ("http_500", JSON_BUYER, Answer(500, b"", None, b""), (False, None, "rejected:error:http_500")),
    ("http_409_no_reason", JSON_BUYER, Answer(409, b"", None, b""), (False, None, "rejected:error:http_409")),
    ("bad_json", JSON_BUYER, Answer(200, b"nope", None, JSON), (False, None, "rejected:error:bad_json")),
    ("xml_entities", XML_BUYER, Answer(200, BILLION_LAUGHS, None, XML), (False, None, "rejected:error:bad_xml")),
    ("timeout", XML_BUYER, Answer(failure="timeout"), (False, None, "rejected:timeout")),
    ("long_lead_id_cut", JSON_BUYER, Answer(200, b'{"status":"ok","offer":{"id":"' + b"y" * 300 + b'"}}', None, JSON),
     (True, "y" * 256, "accepted")),
]


@pytest.mark.parametrize(("fmt", "answer", "expected"), [pytest.param(f, a, e, id=n) for n, f, a, e in POSTS])
def test_a_post_answer_reads_as(fmt: AnswerFormat, answer: Answer, expected: tuple[Any, ...]) -> None:
    result = fmt.read_post(answer)
    assert (result.accepted, result.lead_id, result.outcome) == expected


@pytest.mark.parametrize(("value", "cents"), [
    (22, 2200), (6.66, 666), (0.29, 29), ("12.50", 1250), ("$12.50", 1250), (" $ 7 ", 700), ("$1,250.99", 125099),
    (".5", 50), ("12.999", 1299), ("abc", None), ("-1", None), (-1, None), ("12.5.1", None), ("1e3", None),
    ("1,25", None), (True, None), (None, None), (float("nan"), None), (float("inf"), None), (1e300, None),
    ("9" * 40, None), ([5], None)])
def test_what_is_a_price(value: Any, cents: int | None) -> None:
    assert cents_of(value) == cents


TODAY = datetime.date(2026, 5, 28)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("digits", "1 (619) 267-4352", "16192674352"), ("digits", 42, "42"), ("upper", "ab", "AB"), ("lower", "Male", "male"),
    ("trim", "  x ", "x"), ("first:3", "abcdef", "abc"), ("last:4", "6192674352", "4352"), ("last:10", "12", "12"),
    ("date:%m/%d/%Y", datetime.date(1952, 3, 14), "03/14/1952"), ("date:%d.%m.%y", "2026-07-01", "01.07.26"),
    ("date:%Y", "not a date", None), ("date:%Y", 5, None), ("age", datetime.date(1952, 3, 14), 74),
    ("age", datetime.date(1952, 5, 29), 73), ("age", datetime.date(1952, 5, 28), 74), ("age", "garbage", None),
    ("md5", "a@b.co", "b33a54a5a598e6d3356166652048ada9"),
    ("sha256", "x", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"),
    ("ascii", "José Núñez", "Jose Nunez"), ("ascii", "Straße Øster Łódź", "Strasse Oster Lodz"), ("ascii", "東京", ""),
    ("number", "123456", 123456), ("number", "12.50", 12.5), ("number", "12a", None), ("number", 7, 7),
    ("upper", True, "TRUE"), ("lower", ["A", "B"], "a,b"), ("digits", 12.5, "125"),
])
def test_a_transform(name: str, value: Any, expected: Any) -> None:
    transform = compile_one(name)
    assert not isinstance(transform, str), transform
    assert transform(value, TODAY) == expected
