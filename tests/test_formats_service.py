"""The buyer-format cases end to end: real buyer servers on 127.0.0.1 speaking each case's
API (JSON, XML, form, query string, JSON in a form field), a real exchange, a seller's ping,
post and cascade over the mixed formats. Each buyer must receive exactly its case's golden
request and the trace must show exactly its case's outcome.

The exchange runs on a clock stopped at the cases' ``now`` (ages in requests are computed
from it); a case's URL is served under ``/<campaign>/<stage>`` of one local server, so its
golden's origin and ``Host`` become that server's, and the case's ping id the real one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import msgspec
import pytest
from aiohttp import web

from tests.helpers_formats import CASES, GIVEN, Case, campaign_of, config_of


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: str


class CaseBuyers:
    """Every case's buyer on one port: a stage's route answers its case's canned answer."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.received: dict[str, list[Received]] = {}
        self.origin = ""
        self._runner: web.AppRunner | None = None

    def route(self, campaign_id: str, stage: str, url: str, answer: dict[str, Any]) -> str:
        """The local URL standing for a case's ``url``, answering ``answer``."""
        parts = urlsplit(url)
        self.answers[f"/{campaign_id}/{stage}{parts.path}"] = answer
        return self.local(campaign_id, stage, url)

    def local(self, campaign_id: str, stage: str, url: str) -> str:
        parts = urlsplit(url)
        return f"{self.origin}/{campaign_id}/{stage}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(request.method, self.origin + request.path_qs,
                            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.raw_headers},
                            (await request.read()).decode())
        self.received.setdefault(request.path, []).append(received)
        answer = self.answers[request.path]
        return web.Response(status=answer["status"], body=answer["body"].encode(),
                            headers={"Content-Type": answer["content_type"]})

    def expected(self, case: Case, campaign_id: str, ping_id: str) -> Received:
        """The case's golden as this server receives it for ``campaign_id`` in one auction."""
        golden = case.request
        assert golden is not None
        host = self.origin.removeprefix("http://")
        body = golden["body"].replace(GIVEN["ping_id"], ping_id)
        headers = {**golden["headers"], "Host": host}
        if "Content-Length" in headers:  # the golden's, for its own ping id's length
            assert int(headers["Content-Length"]) == len(golden["body"].encode()), case.name
            headers["Content-Length"] = str(len(body.encode()))
        return Received(golden["method"], self.local(campaign_id, case.stage, golden["url"]), headers, body)

    def got(self, campaign_id: str, stage: str, url: str) -> list[Received]:
        return self.received.get(urlsplit(self.local(campaign_id, stage, url)).path, [])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.origin = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def case_buyers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CaseBuyers]:
    for case in CASES.values():
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)
    server = CaseBuyers()
    await server.start()
    yield server
    await server.stop()


def served(buyers: CaseBuyers, case: Case) -> dict[str, Any]:
    """The case's campaign with its URLs on the local server: its own stage answers its
    answer, a post case's ping its ``after`` case's."""
    entry = campaign_of(case)
    if case.stage == "ping":
        entry["ping_url"] = buyers.route(case.name, "ping", entry["ping_url"], case.answer)
        entry["post_url"] = buyers.route(case.name, "post", entry["post_url"], {"status": 500, "body": "",
                                                                              "content_type": "text/plain"})
    else:
        entry["post_url"] = buyers.route(case.name, "post", entry["post_url"], case.answer)
        if case.after is not None:
            entry["ping_url"] = buyers.route(case.name, "ping", entry["ping_url"], CASES[case.after].answer)
    return entry


def outcomes(trace: dict[str, Any]) -> dict[str, str]:
    return {c["campaign_id"]: c["outcome"] for c in trace["campaigns"]}


PING_CASES = [c for c in CASES.values() if c.stage == "ping"]
POST_CASES = [c for c in CASES.values() if c.stage == "post"]
REJECTING = sorted((c for c in POST_CASES if c.outcome and c.outcome["outcome"] != "accepted"),
                   key=lambda c: -(c.price or 0))
ACCEPTING = [c for c in POST_CASES if c.outcome and c.outcome["outcome"] == "accepted"]


def test_the_cascade_cases_are_ranked_rejects_first() -> None:
    """Each cascade offers the lead to every rejecting case, then to one accepting case: that
    needs the rejecting cases' prices above the accepting ones', and no two alike."""
    prices = [c.price for c in POST_CASES]
    assert len(set(prices)) == len(prices)
    assert min(c.price or 0 for c in REJECTING) > max(c.price or 0 for c in ACCEPTING)


async def test_one_ping_to_every_format(case_buyers, exchange) -> None:
    ex = await exchange(config_of(*(served(case_buyers, c) for c in PING_CASES)), clock=lambda: GIVEN["now"])
    status, answered = await ex.ping(GIVEN["ping"])
    best = max(c.outcome["price"] for c in PING_CASES if c.outcome and c.outcome["outcome"] == "bid")
    assert status == 200 and answered["status"] == "bid" and answered["price"] == best, answered

    _, trace = await ex.trace(answered["ping_id"])
    assert outcomes(trace) == {c.name: c.outcome["outcome"] for c in PING_CASES if c.outcome}
    bids = {c["campaign_id"]: c["bid"] for c in trace["campaigns"] if c["outcome"] == "bid"}
    assert bids == {c.name: c.outcome["price"] for c in PING_CASES if c.outcome and c.outcome["outcome"] == "bid"}
    for case in PING_CASES:
        assert case_buyers.got(case.name, "ping", campaign_of(case)["ping_url"]) == [
            case_buyers.expected(case, case.name, answered["ping_id"])], case.name


@pytest.mark.parametrize("sold_to", ACCEPTING, ids=[c.name for c in ACCEPTING])
async def test_a_cascade_over_mixed_formats(case_buyers, exchange, sold_to: Case) -> None:
    """Ping, then post: the lead goes down every rejecting format (a reason read from XML
    CDATA, a text regex, a JSON list, a 4xx, a 5xx) to the one that buys it."""
    offered = [*REJECTING, sold_to]
    ex = await exchange(config_of(*(served(case_buyers, c) for c in offered)), clock=lambda: GIVEN["now"])
    status, answered = await ex.ping(GIVEN["ping"])
    assert status == 200 and answered["price"] == REJECTING[0].price, answered

    status, sold = await ex.post(answered["ping_id"], msgspec.to_builtins(GIVEN["lead"]))
    assert status == 200, sold
    assert sold["status"] == "sold" and sold["price"] == sold_to.price and sold["attempts"] == len(offered), sold

    _, trace = await ex.trace(answered["ping_id"])
    assert [(o["campaign_id"], o["outcome"]) for o in trace["post"]["offers"]] == [
        (c.name, c.outcome["outcome"]) for c in offered if c.outcome]
    for case in offered:
        post_url = campaign_of(case)["post_url"]
        assert case_buyers.got(case.name, "post", post_url) == [
            case_buyers.expected(case, case.name, answered["ping_id"])], case.name
        if case.after is not None:  # its bid and reference came from its own ping
            ping_url = campaign_of(case)["ping_url"]
            assert case_buyers.got(case.name, "ping", ping_url) == [
                case_buyers.expected(CASES[case.after], case.name, answered["ping_id"])], case.name


async def test_no_secret_reaches_a_log_line_a_trace_or_a_metric(case_buyers, exchange, caplog) -> None:
    """The auth values (read from the environment) go into the buyers' request heads only."""
    caplog.set_level(logging.DEBUG)
    offered = [*PING_CASES, *REJECTING, ACCEPTING[0]]
    ex = await exchange(config_of(*(served(case_buyers, c) for c in offered)), clock=lambda: GIVEN["now"])
    _, answered = await ex.ping(GIVEN["ping"])
    _, sold = await ex.post(answered["ping_id"], msgspec.to_builtins(GIVEN["lead"]))
    assert sold["status"] == "sold"
    _, trace = await ex.trace(answered["ping_id"])
    _, metrics = await ex.call("GET", "/metrics", key=None)
    seen = "\n".join([caplog.text, *(str(r.__dict__) for r in caplog.records), msgspec.json.encode(trace).decode(),
                      metrics])
    secrets = {value for case in CASES.values() for value in case.env.values()}
    assert "ZXhjaGFuZ2U6cGFzcw==" in "".join(str(r.headers) for rs in case_buyers.received.values() for r in rs)
    assert [secret for secret in secrets | {"ZXhjaGFuZ2U6cGFzcw=="} if secret in seen] == []
