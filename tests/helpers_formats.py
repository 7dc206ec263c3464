"""The buyer-format cases in tests/fixtures/formats/, one TOML file each, and what every test
of them shares: the campaign a case configures, the request its format makes (as the buyer
receives it) and the outcome it reads.

A case file holds ``about``, ``stage`` (ping or post), ``[campaign]`` (the campaign's keys as
an operator writes them; ``campaign_from`` takes another case's), ``[env]`` (variables its
``env:`` secrets read), ``[request]`` (the golden: method, URL, headers, body), ``[answer]``
(status, content type, body) and ``[outcome]``. A post case has the ``price`` it was bid at
and may name the ping case whose answer made that bid (``after``), whose reference it carries.
``given.toml`` is the one ping and lead every case is made from.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from pingpost import money
from pingpost.auction import buyer_lead
from pingpost.config import Campaign, from_dict
from pingpost.formats.campaign import PingContext, PostContext, format_of
from pingpost.formats.results import Answer, BidResult, PostResult
from pingpost.http1 import Target
from pingpost.schema import Lead, PingFields

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"
GIVEN: dict[str, Any] = tomllib.loads((FIXTURES / "given.toml").read_text())


@dataclass
class Case:
    name: str
    about: str
    stage: str
    campaign: dict[str, Any]
    env: dict[str, str]
    answer: dict[str, Any]
    request: dict[str, Any] | None
    outcome: dict[str, Any] | None
    price: float | None
    after: str | None


def load_cases() -> dict[str, Case]:
    raw = {path.stem: tomllib.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.toml")) if path.stem != "given"}
    cases = {}
    for name, data in raw.items():
        source = raw[data["campaign_from"]] if "campaign_from" in data else data
        cases[name] = Case(name=name, about=data["about"], stage=data["stage"], campaign=source["campaign"],
                           env=source.get("env", {}), answer=data["answer"], request=data.get("request"),
                           outcome=data.get("outcome"), price=data.get("price"), after=data.get("after"))
    return cases


CASES = load_cases()


def campaign_of(case: Case, campaign_id: str | None = None) -> dict[str, Any]:
    """The case's campaign as a config entry. A ping case gets a post that is never sent (a
    custom campaign describes both); a post case bids through its ``after`` case's ping, or
    has its price fixed."""
    entry: dict[str, Any] = {"id": campaign_id or case.name, "buyer": "b1", "vertical": GIVEN["ping"]["vertical"]}
    if case.stage == "ping":
        entry |= {"post_url": "https://unused.example/post", "post": {}} | copy.deepcopy(case.campaign)
    elif case.after is not None:
        entry |= copy.deepcopy(CASES[case.after].campaign) | copy.deepcopy(case.campaign)
    else:
        entry |= {"fixed_price": case.price} | copy.deepcopy(case.campaign)
    return entry


def config_of(*campaigns: dict[str, Any]) -> dict[str, Any]:
    return {"sellers": [{"id": GIVEN["seller_id"], "api_keys": ["acme-live-key"]}], "buyers": [{"id": "b1"}],
            "campaigns": list(campaigns)}


def campaign(case: Case) -> Campaign:
    """The case's campaign through the config's every check (its ``env`` must be set)."""
    return from_dict(config_of(campaign_of(case))).campaigns[0]


def ping_fields() -> PingFields:
    return msgspec.convert(GIVEN["ping"], PingFields)


def lead() -> dict[str, Any]:
    """The lead as a buyer's post reads it: the ping's fields with the lead's over them."""
    return buyer_lead(ping_fields(), msgspec.convert(GIVEN["lead"], Lead))


def reference_of(case: Case) -> str | None:
    return None if case.after is None else (CASES[case.after].outcome or {}).get("reference")


def render(case: Case) -> tuple[Target, bytes]:
    fmt = format_of(campaign(case))
    if case.stage == "ping":
        context = PingContext(ping_fields(), GIVEN["ping_id"], GIVEN["seller_id"], GIVEN["test"], GIVEN["now"])
        return fmt.ping(context, case.name, GIVEN["tmax_ms"])
    assert case.price is not None
    return fmt.post(PostContext(GIVEN["ping_id"], case.name, GIVEN["seller_id"], GIVEN["test"],
                                money.to_cents(case.price), reference_of(case), lead(), GIVEN["now"]))


def request_of(target: Target, body: bytes) -> dict[str, Any]:
    """The request as the buyer receives it: method, URL, every header in order, body."""
    head = target.head.decode("latin-1") + str(len(body))
    line, *header_lines = head.split("\r\n")
    method, path, _ = line.split(" ")
    headers = dict(h.split(": ", 1) for h in header_lines)
    return {"method": method, "url": f"{target.origin[0]}://{headers['Host']}{path}", "headers": headers,
            "body": body.decode()}


def read(case: Case) -> dict[str, Any]:
    answer = Answer(status=case.answer["status"], body=case.answer["body"].encode(),
                    content_type=case.answer["content_type"].encode())
    fmt = format_of(campaign(case))
    return outcome_of(fmt.read_bid(answer) if case.stage == "ping" else fmt.read_post(answer))


def outcome_of(result: BidResult | PostResult) -> dict[str, Any]:
    found: dict[str, Any] = {"outcome": result.outcome}
    if isinstance(result, BidResult):
        if result.cents is not None:
            found["price"] = money.to_amount(result.cents)
        if result.bid_id is not None:
            found["reference"] = result.bid_id
    elif result.lead_id is not None:
        found["lead_id"] = result.lead_id
    return found


# How docs/buyer-formats.md shows a case (tests/test_formats_fixtures.py holds the page to it).

DOC_ONLY_KEYS = ("id", "buyer", "vertical", "fixed_price")


def http_text(case: Case) -> str:
    """The golden request as the buyer's server reads it off the wire."""
    golden = case.request
    assert golden is not None
    parts = urlsplit(golden["url"])
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{golden['method']} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in golden["headers"].items()), ""]
    return "\n".join(lines) + "\n" + golden["body"] + ("\n" if golden["body"] else "")


def outcome_row(case: Case) -> str:
    """One row of a page's answers table: status, Content-Type, body, what is recorded."""
    outcome = case.outcome
    assert outcome is not None
    recorded = f"`{outcome['outcome']}`"
    if "price" in outcome:
        recorded += f" at {outcome['price']:.2f}"
    if "reference" in outcome:
        recorded += f", reference `{outcome['reference']}`"
    if "lead_id" in outcome:
        recorded += f", the buyer's lead id `{outcome['lead_id']}`"
    body = case.answer["body"].replace("|", "\\|")
    return f"| {case.answer['status']} | `{case.answer['content_type']}` | `{body}` | {recorded} |"
