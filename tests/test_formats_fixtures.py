"""Every buyer-format case in tests/fixtures/formats/, run by one test body: the campaign
passes the config's checks, its format makes exactly the golden request from the shared ping
and lead, and reads the canned answer into exactly the expected outcome.

The same files drive tests/test_formats_service.py against real buyer servers.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pingpost.config import from_dict
from tests.helpers_formats import (CASES, DOC_ONLY_KEYS, FIXTURES, Case, campaign_of, http_text, outcome_row, read, render,
                                   request_of)


@pytest.fixture
def case_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Case:
    case: Case = request.param
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    return case


@pytest.mark.parametrize("case_env", CASES.values(), ids=CASES.keys(), indirect=True)
def test_case(case_env: Case) -> None:
    case = case_env
    assert case.request is not None and case.outcome is not None, f"{case.name} has no golden"
    assert request_of(*render(case)) == case.request
    assert read(case) == case.outcome
    if case.after is not None:
        bid = CASES[case.after].outcome
        assert bid is not None and bid["outcome"] == "bid" and bid["price"] == case.price, \
            f"{case.name} is posted at the price {case.after} bid"


def _stages(case: Case) -> list[dict[str, Any]]:
    entry = campaign_of(case)
    return [entry[kind] for kind in ("ping", "post") if entry.get(kind)]


def _kind(outcome: str) -> str:
    """``no_bid:Quota_Reached`` -> ``no_bid``, ``rejected:error:http_503`` -> ``rejected:error``."""
    if outcome.startswith("rejected:"):
        return "rejected:error" if outcome.startswith("rejected:error:") else "rejected"
    return outcome.split(":")[0]


def test_the_cases_cover_every_encoding_auth_parse_and_outcome_kind() -> None:
    """The fixture families stay complete: each encoding, auth type, method and parse kind
    is in a case, and so is each kind of outcome, of pings and of posts."""
    stages = [stage for case in CASES.values() for stage in _stages(case)]
    assert {s.get("encoding", "json") for s in stages} == {"json", "xml", "form", "query", "json_in_form"}
    assert {s["auth"]["type"] for s in stages if "auth" in s} == {"basic", "bearer", "header", "query"}
    assert {s.get("method", "POST") for s in stages} == {"POST", "GET"}
    assert {s.get("answer", {}).get("parse", "auto") for s in stages} == {"auto", "json", "xml", "text"}
    assert {(c.stage, _kind(c.outcome["outcome"])) for c in CASES.values() if c.outcome} == {
        ("ping", "bid"), ("ping", "no_bid"), ("ping", "error"),
        ("post", "accepted"), ("post", "rejected"), ("post", "rejected:error")}


PAGE = Path(__file__).resolve().parent.parent / "docs" / "buyer-formats.md"
MARKED = re.compile(r"<!-- (case|request|answers): ([\w ]+) -->\n(```\w*\n(.*?)```|(\|.*?)\n\n)", re.S)


def marked(kind: str) -> list[tuple[list[str], str]]:
    """The page's blocks marked ``<!-- kind: case ... -->``: the cases named, the block's text."""
    return [(names.split(), block if block else table) for found, names, _, block, table in MARKED.findall(PAGE.read_text())
            if found == kind]


@pytest.fixture
def every_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in CASES.values():
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)


def test_the_page_shows_each_campaign_as_its_cases_configure_it() -> None:
    shown = marked("case")
    for names, block in shown:
        doc = tomllib.loads(block)["campaigns"]
        doc = doc[0] if isinstance(doc, list) else doc
        merged: dict[str, Any] = {}
        for name in names:
            merged |= CASES[name].campaign
        assert {k: v for k, v in doc.items() if k not in DOC_ONLY_KEYS} == {k: merged[k] for k in doc
                                                                          if k not in DOC_ONLY_KEYS}, names
        assert {"ping", "post"} & set(merged) <= set(doc), names
        assert doc.get("fixed_price", CASES[names[-1]].price) == CASES[names[-1]].price
    own = {name for name, path in ((p.stem, p) for p in FIXTURES.glob("*.toml")) if "[campaign]" in path.read_text()}
    assert own == {name for names, _ in shown for name in names}, "every case with a campaign of its own is shown"


def test_the_page_shows_each_request_as_the_buyer_receives_it(every_env: None) -> None:
    shown = marked("request")
    for (name,), block in shown:
        assert block == http_text(CASES[name]), name
    assert {CASES[name].campaign["ping_url" if CASES[name].stage == "ping" else "post_url"]
            for (name,), _ in shown} == {c.campaign["ping_url" if c.stage == "ping" else "post_url"] for c in CASES.values()}


def test_the_page_shows_every_answer_as_it_is_recorded() -> None:
    shown = marked("answers")
    for names, table in shown:
        assert table.splitlines()[2:] == [outcome_row(CASES[name]) for name in names], names
    assert sorted(name for names, _ in shown for name in names) == sorted(CASES)


def test_every_whole_campaign_on_the_page_loads(every_env: None) -> None:
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", PAGE.read_text(), re.S) if b.startswith("[[campaigns]]")]
    assert len(blocks) >= 4
    for block in blocks:
        campaign = tomllib.loads(block)["campaigns"][0]
        from_dict({"sellers": [{"id": "acme", "api_keys": ["acme-live-key"]}], "buyers": [{"id": campaign["buyer"]}],
                   "campaigns": [campaign]})
