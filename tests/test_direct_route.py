"""The ping's direct route: on a ``connections.listen`` connection, ``POST /v1/ping`` skips
the app's router and middleware. The same requests, each answered once through the router
(aiohttp's own ``TCPSite``) and once directly, get the same status, the same headers (but
``Server`` and ``Date``) and the same body (but the new ping's id and times), and only the
requests the direct route leaves to the app reach the router.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from pingpost.config import from_dict
from pingpost.connections import Limits, listen
from pingpost.server import EXCHANGE, MAX_BODY, make_app
from pingpost.store.memory import MemoryStore
from tests.support.buyers import BuyerServer, bid
from tests.support.exchange import PING, SELLER_KEY, base_config
from tests.test_connections import Answer, read_answer

#: Fields of a ping's answer that differ between any two pings.
_PER_PING = ("ping_id", "expires_at", "auction_ms")


def request(body: bytes, *, target: str = "/v1/ping", method: str = "POST", key: str | None = SELLER_KEY,
            content_type: str = "application/json", extra: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: exchange\r\n"
    if key is not None:
        head += f"Authorization: Bearer {key}\r\n"
    head += f"Content-Type: {content_type}\r\n{extra}"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def chunked(body: bytes) -> bytes:
    return (f"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nAuthorization: Bearer {SELLER_KEY}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n"


PING_BODY = json.dumps(PING).encode()

#: (what it is, the request, whether the direct route answers it)
REQUESTS: list[tuple[str, bytes, bool]] = [
    ("a ping", request(PING_BODY), True),
    ("a chunked ping", chunked(PING_BODY), True),
    ("a gzip body", request(gzip.compress(PING_BODY), extra="Content-Encoding: gzip\r\n"), True),
    ("no key", request(PING_BODY, key=None), True),
    ("an unknown key", request(PING_BODY, key="nobody"), True),
    ("another role's key", request(PING_BODY, key="operator-key-1"), True),
    ("not JSON's media type", request(PING_BODY, content_type="text/plain"), True),
    ("a body over the limit", request(b"{" + b" " * MAX_BODY + b"}"), True),
    ("malformed JSON", request(b'{"vertical": "auto", '), True),
    ("missing fields", request(b'{"vertical": "auto"}'), True),
    ("a bad state", request(json.dumps({**PING, "state": "XX"}).encode()), True),
    ("personal data", request(json.dumps({**PING, "sub_id": "ada@example.com"}).encode()), True),
    ("a bad gzip body", request(b"not gzip at all", extra="Content-Encoding: gzip\r\n"), True),
    ("a query string", request(PING_BODY, target="/v1/ping?debug=1"), False),
    ("Expect: 100-continue", request(PING_BODY, extra="Expect: 100-continue\r\n"), False),
    ("GET", request(b"", method="GET"), False),
    ("another route", request(b"", method="GET", target="/healthz"), False),
]


class Served:
    """One app behind two listeners: aiohttp's routed ``TCPSite`` and ``connections.listen``,
    counting the requests that reach the app's router."""

    def __init__(self, runner: web.AppRunner, routed_port: int, direct_port: int) -> None:
        self.runner = runner
        self.routed_port = routed_port
        self.direct_port = direct_port
        self.routed = 0


@pytest.fixture
async def served(buyers: BuyerServer) -> AsyncIterator[Served]:
    buyers.script("c1", ping=bid(12.5))
    raw = base_config(buyers, {"id": "c1"})
    raw["operators"] = [{"id": "ops", "api_keys": ["operator-key-1"]}]
    app = make_app(from_dict(raw), MemoryStore())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    assert runner.server is not None
    routing = runner.server.request_handler

    async def counting(req: web.BaseRequest) -> web.StreamResponse:
        served.routed += 1
        return await routing(req)

    runner.server.request_handler = counting
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    engine = app[EXCHANGE]
    listener = await listen(runner, Limits(engine.config.exchange, 100, engine.metrics), "127.0.0.1", 0, None, False)
    served = Served(runner, site._server.sockets[0].getsockname()[1],  # type: ignore[union-attr]
                    listener.sockets[0].getsockname()[1])
    yield served
    listener.close()
    await runner.cleanup()


def comparable(answer: Answer) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in answer.headers.items() if k not in ("server", "date", "content-length")}
    body: Any = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else answer.body
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in _PER_PING}
    return answer.status, headers, body


async def once(port: int, raw: bytes) -> Answer:
    """One request on a new connection; the answer after any interim ``100 Continue``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(10):
            answer = await read_answer(reader)
            while answer.status == 100:
                answer = await read_answer(reader)
        return answer
    finally:
        writer.close()


@pytest.mark.parametrize(("what", "raw", "direct"), REQUESTS, ids=[what for what, _, _ in REQUESTS])
async def test_the_direct_route_answers_as_the_router_does(served: Served, what: str, raw: bytes,
                                                           direct: bool) -> None:
    routed = await once(served.routed_port, raw)
    assert served.routed == 1
    answered = await once(served.direct_port, raw)
    assert served.routed == (1 if direct else 2), "the direct route took a request it leaves to the app"
    assert comparable(answered) == comparable(routed), what
    assert "server" not in answered.headers


async def test_a_direct_ping_is_a_real_auction(served: Served) -> None:
    answers = await asyncio.gather(*(once(served.direct_port, request(PING_BODY)) for _ in range(5)))
    assert [a.status for a in answers] == [200] * 5
    assert {a.json()["price"] for a in answers} == {12.5}
    assert len({a.json()["ping_id"] for a in answers}) == 5
    assert served.routed == 0
    assert served.runner.app[EXCHANGE].metrics.render().count(b'pingpost_pings_total{status="bid"} 5.0') == 1
