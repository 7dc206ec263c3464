"""What a buyer format costs per call: making the request and reading the answer, for the
default protocol and for configured JSON and XML formats (the fixture cases' own).

Run: ``taskset -c 1 .venv/bin/pytest bench/test_bench_formats.py --benchmark-only``
(results: docs/performance.md, "Buyer formats").
"""

from __future__ import annotations

import os

import pytest

from pingpost.config import from_dict
from pingpost.formats.campaign import CampaignFormat, PingContext, PostContext, format_of
from pingpost.formats.pingpost import PingBody
from pingpost.formats.results import Answer
from tests.helpers_formats import CASES, GIVEN, campaign, config_of, lead, ping_fields

DEFAULT = {"id": "c", "buyer": "b1", "vertical": "medicare", "ping_url": "http://buyer.example/ping",
           "post_url": "http://buyer.example/post"}


@pytest.fixture(autouse=True, scope="module")
def case_env() -> None:
    for case in CASES.values():
        os.environ.update(case.env)


def context() -> PingContext:
    return PingContext(ping_fields(), GIVEN["ping_id"], GIVEN["seller_id"], GIVEN["test"], GIVEN["now"])


def default_format() -> CampaignFormat:
    return format_of(from_dict(config_of(DEFAULT)).campaigns[0])


@pytest.mark.parametrize("name", ["default", "json_ping_bid", "xml_ping_matched", "query_ping_get"])
def test_ping_request(benchmark, name: str) -> None:
    """One buyer's ping request. The default protocol's shared body is made once per ping
    (here once per call, as for a ping with one such buyer)."""
    benchmark.group = "ping request"
    if name == "default":
        ping = ping_fields()
        body = benchmark(lambda: PingBody(ping, GIVEN["ping_id"], GIVEN["seller_id"], False).to("c", 500))
        assert body.startswith(b'{"campaign_id":"c"')
        return
    fmt = format_of(campaign(CASES[name]))
    target, body = benchmark(lambda: fmt.ping(context(), "c", 500))
    assert body or target.path


@pytest.mark.parametrize("name", ["default", "json_ping_bid", "xml_ping_matched", "query_ping_get"])
def test_ping_answer(benchmark, name: str) -> None:
    if name == "default":
        fmt, answer = default_format(), Answer(200, b'{"bid":22,"bid_id":"123456"}', None, b"application/json")
    else:
        case = CASES[name]
        fmt = format_of(campaign(case))
        answer = Answer(case.answer["status"], case.answer["body"].encode(), None, case.answer["content_type"].encode())
    benchmark.group = "ping answer"
    assert benchmark(fmt.read_bid, answer).outcome == "bid"


@pytest.mark.parametrize("name", ["default", "json_post_echo", "xml_post_cdata", "form_post_sold"])
def test_post_request_and_answer(benchmark, name: str) -> None:
    if name == "default":
        fmt, answer = default_format(), Answer(200, b'{"accepted":true,"lead_id":"x"}', None, b"application/json")
    else:
        case = CASES[name]
        fmt = format_of(campaign(case))
        answer = Answer(case.answer["status"], case.answer["body"].encode(), None, case.answer["content_type"].encode())
    offer = PostContext(GIVEN["ping_id"], "c", GIVEN["seller_id"], False, 2200, "123456", lead(), GIVEN["now"])

    def both() -> str:
        fmt.post(offer)
        return fmt.read_post(answer).outcome

    benchmark.group = "post request + answer"
    assert benchmark(both) in ("accepted", "rejected:Invalid_phone")
