"""A custom campaign's every bad piece is refused at start with its path, as every other
config error is: one change to a good campaign per row, and exactly the errors it causes.
No message carries a secret's value."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from pingpost.config import ConfigError, from_dict

GOOD: dict[str, Any] = {
    "id": "c", "buyer": "b", "vertical": "auto", "format": "custom",
    "ping_url": "https://buyer.example/ping", "post_url": "https://buyer.example/post",
    "ping": {
        "fields": [{"to": "zipCode", "from": "zip"}, {"to": "meta.source", "from": "source_id", "transforms": ["upper"]}],
        "answer": {"success": {"path": "response", "match": "^success$"}, "price": {"path": "bid"},
                   "reference": {"path": "id"}, "reason": {"path": "details"}},
    },
    "post": {
        "encoding": "xml",
        "fields": [{"to": "name", "from": "first_name"}, {"to": "ref", "from": "reference"}],
        "answer": {"parse": "xml", "success": {"path": "/result/status", "match": "^ok$"},
                   "reference": {"path": "/result/@id"}, "reason": {"regex": "reason: (.*)"}},
    },
}


def config(campaign: dict[str, Any]) -> dict[str, Any]:
    return {"sellers": [{"id": "acme", "api_keys": ["acme-live-key"]}], "buyers": [{"id": "b"}], "campaigns": [campaign]}


def changed(*changes: tuple[str, Any]) -> dict[str, Any]:
    """GOOD with each ``(path, value)`` set (``a.b[1].c``); a value of ``...`` deletes the key."""
    campaign = copy.deepcopy(GOOD)
    for path, value in changes:
        steps: list[Any] = [int(s) if s.isdigit() else s for s in re.findall(r"[^.\[\]]+", path)]
        node = campaign
        for step in steps[:-1]:
            node = node[step]
        if value is ...:
            del node[steps[-1]]
        else:
            node[steps[-1]] = value
    return campaign


def errors_of(campaign: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as refused:
        from_dict(config(campaign))
    return refused.value.errors


def test_the_good_campaign_loads() -> None:
    loaded = from_dict(config(GOOD)).campaigns[0]
    assert loaded.format == "custom" and loaded.ping is not None and loaded.ping.fields[0].from_ == "zip"


P = "campaigns[0]."
ROWS = [
    ("unknown_transform", [("ping.fields[1].transforms", ["upper", "shout"])],
     [(P + "ping.fields[1].transforms[1]", "unknown transform 'shout': one of digits, upper, lower, trim, age, md5, "
                                           "sha256, ascii, number, first:N, last:N, date:FORMAT")]),
    ("bad_last_n", [("ping.fields[1].transforms", ["last:0"])],
     [(P + "ping.fields[1].transforms[0]", "last:N needs a whole number N from 1 to 10000")]),
    ("date_with_a_time", [("ping.fields[1].transforms", ["date:%Y-%m-%d %H:%M"])],
     [(P + "ping.fields[1].transforms[0]", "date format directive %H is not one a date fills: use %A, %B, %U, %W, "
                                           "%Y, %a, %b, %d, %j, %m, %w, %y (and %% for %)")]),
    ("bad_success_pattern", [("ping.answer.success.match", "^(success$")],
     [(P + "ping.answer.success.match", "not a valid regular expression: missing ), unterminated subpattern at "
                                        "position 1")]),
    ("regex_without_group", [("post.answer.reason.regex", "reason: .*")],
     [(P + "post.answer.reason.regex", "the regex needs a group, as in id=(\\d+): the group is the value")]),
    ("bad_xpath", [("post.answer.success.path", "/result/status[")],
     [(P + "post.answer.success.path", "'/result/status[': 'status[' is not a step of the XPath subset (name or *, "
                                       "then [predicates])")]),
    ("bad_xpath_predicate", [("post.answer.success.path", "/result/status[position()>1]")],
     [(P + "post.answer.success.path", "'/result/status[position()>1]': '[position()>1]' is not a predicate of the "
                                       "subset ([n], [last()], [@a], [@a='v'], [c], [c='v'])")]),
    ("bad_dot_path", [("ping.answer.price.path", "offers..price")],
     [(P + "ping.answer.price.path", "'offers..price' has an empty step: write steps like results.0.price")]),
    ("read_with_path_and_regex", [("ping.answer.price", {"path": "bid", "regex": "bid=(\\d+)"})],
     [(P + "ping.answer.price", "a read takes either a path or a regex")]),
    ("ping_without_price", [("ping.answer.price", ...)],
     [(P + "ping.answer.price", "a ping's answer needs a price to read")]),
    ("field_from_and_value", [("ping.fields[0].value", "90210")],
     [(P + "ping.fields[0]", "a field takes its value either from the ping or lead (from) or as a constant (value)")]),
    ("personal_data_in_a_ping", [("ping.fields[0].from", "phone")],
     [(P + "ping.fields[0].from", "a ping carries no personal data: phone is only in the post")]),
    ("reference_in_a_ping", [("ping.fields[0].from", "reference")],
     [(P + "ping.fields[0].from", "unknown value 'reference' for a ping: one of state, source_id, sub_id, "
                                  "quality_score, tcpa_consent, email_sha256, phone_sha256, attributes, vertical, zip, "
                                  "ping_id, campaign_id, seller_id, test, tmax_ms, or attributes.<name>")]),
    ("two_fields_one_place", [("ping.fields[1].to", "zipCode")],
     [(P + "ping.fields[1].to", "writes where fields[0].to does (the same place, or one inside the other)")]),
    ("field_inside_another", [("ping.fields[1].to", "zipCode.plus4")],
     [(P + "ping.fields[1].to", "writes where fields[0].to does (the same place, or one inside the other)")]),
    ("list_index_gap", [("ping.fields[0].to", "codes.0"), ("ping.fields[1].to", "codes.2")],
     [(P + "ping.fields[0].to", "list indexes under codes must run 0, 1, 2...")]),
    ("xml_name", [("post.fields[0].to", "first name")],
     [(P + "post.fields[0].to", "'first name': 'first name' is not an XML element name")]),
    ("xml_root", [("post.root", "1lead")], [(P + "post.root", "'1lead' is not an XML element name")]),
    ("get_with_a_body", [("ping.method", "GET")],
     [(P + "ping.encoding", 'a GET carries no body: its fields go in the query string (encoding = "query")')]),
    ("basic_without_password", [("ping.auth", {"type": "basic", "user": "u"})],
     [(P + "ping.auth.password", "auth type basic needs user and password")]),
    ("bearer_with_a_name", [("ping.auth", {"type": "bearer", "token": "t", "name": "X"})],
     [(P + "ping.auth.name", "does not go with auth type bearer (it takes token)")]),
    ("auth_header_twice", [("ping.auth", {"type": "bearer", "token": "t"}), ("ping.headers", {"authorization": "x"})],
     [(P + "ping.auth", "the Authorization header is also in headers: give it in one place")]),
    ("auth_header_name", [("ping.auth", {"type": "header", "name": "Content-Length", "value": "v"})],
     [(P + "ping.auth.name", "the exchange sets this header itself")]),
    ("stage_header_line_break", [("post.headers", {"X-Tag": "a\r\nX-Evil: 1"})],
     [(P + "post.headers.X-Tag", "a header value may hold only visible ASCII, spaces and tabs (no CR, LF or other "
                                 "control characters)")]),
    ("stage_content_type_header", [("post.headers", {"Content-Type": "text/xml"})],
     [(P + "post.headers.Content-Type", "the exchange sets this header itself")]),
    ("custom_without_post", [("post", ...)], [(P + "post", "a campaign of format custom describes its post here")]),
    ("custom_without_ping", [("ping", ...)], [(P + "ping", "a campaign of format custom describes its ping here")]),
    ("stages_without_custom", [("format", ...)],
     [(P + "ping", 'only a campaign of format = "custom" describes its requests'),
      (P + "post", 'only a campaign of format = "custom" describes its requests')]),
    ("fixed_price_with_a_ping", [("ping_url", ...), ("fixed_price", 5.0)],
     [(P + "ping", "a fixed-price campaign sends no ping: leave this out")]),
    ("unknown_format", [("format", "soap")], [(P + "format", "Invalid enum value 'soap'")]),
    ("unknown_stage_key", [("ping.body", "{}")], [(P + "ping.body", "unknown field")]),
    ("unknown_field_key", [("ping.fields[1].transform", ["upper"])], [(P + "ping.fields[1].transform", "unknown field")]),
    ("bad_encoding", [("ping.encoding", "yaml")], [(P + "ping.encoding", "Invalid enum value 'yaml'")]),
]


@pytest.mark.parametrize(("changes", "expected"), [pytest.param(c, e, id=name) for name, c, e in ROWS])
def test_a_bad_piece_is_refused_with_its_path(changes: list[tuple[str, Any]], expected: list[tuple[str, str]]) -> None:
    assert errors_of(changed(*changes)) == expected


def test_every_bad_piece_is_reported_at_once() -> None:
    campaign = changed(("ping.fields[1].transforms", ["shout"]), ("ping.answer.success.match", "(("),
                       ("post.answer.reference.path", "/result/@"))
    assert [path for path, _ in errors_of(campaign)] == [
        P + "ping.fields[1].transforms[0]", P + "ping.answer.success.match", P + "post.answer.reference.path"]


SECRET = "s3cr3t-value-\r\n-with-a-line-break"


def test_secrets_come_from_the_environment_and_no_error_shows_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUYER_USER", "exchange")
    monkeypatch.setenv("BUYER_PASSWORD", "pa55")
    campaign = changed(("ping.auth", {"type": "basic", "user": "env:BUYER_USER", "password": "env:BUYER_PASSWORD"}))
    loaded = from_dict(config(campaign)).campaigns[0]
    assert loaded.ping is not None and loaded.ping.auth is not None and loaded.ping.auth.password == "pa55"

    monkeypatch.setenv("BUYER_TOKEN", SECRET)
    campaign = changed(("ping.auth", {"type": "header", "name": "X-Key", "value": "env:BUYER_TOKEN"}),
                       ("post.auth", {"type": "bearer", "token": "env:NOT_SET_ANYWHERE"}))
    errors = errors_of(campaign)
    assert errors == [
        (P + "post.auth.token", "environment variable NOT_SET_ANYWHERE is not set"),
        (P + "ping.auth.value", "a header value may hold only visible ASCII, spaces and tabs (no CR, LF or other "
                                "control characters)")]
    assert all("s3cr3t" not in reason for _, reason in errors)
