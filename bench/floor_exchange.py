"""The least a ping exchange on this stack can do, the floor under ``pingpost bench --baseline``.

It answers the seller's ``POST /v1/ping`` the way the plain exchange does (bearer key,
the required fields, every eligible buyer called at once, the highest bid wins, the answer
in pingpost's shape) with as little Python as the work allows: the seller's connection is a
bare asyncio protocol over httptools (no aiohttp), the buyers are called with pingpost's own
lean client (``pingpost.http1``: one pre-built head and one write per call), campaigns with
the same filters are grouped so that a ping tries each distinct filter once, and nothing is
kept: no books, no store, no trace, no metrics, no log line. What it costs a ping is mostly
what the event loop and the kernel cost for one seller request and its buyer calls on
loopback TCP, which any exchange pays; its pings/s over the plain exchange's is about the most any
exchange here could reach against that baseline on this machine. It reads the same config::

    python bench/floor_exchange.py --config exchange.toml --port 0
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httptools
import msgspec
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.plain_exchange import Campaign, answer_of, arguments, serve_until_stopped  # noqa: E402
from pingpost import http1, ids  # noqa: E402

Eligible = list[tuple[Campaign, http1.Target]]


def _response(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


UNAUTHORIZED = _response(b"401 Unauthorized", b'{"error":{"code":"unauthorized","message":"a valid API key is required"}}')
MALFORMED = _response(b"400 Bad Request", b'{"error":{"code":"malformed_json","message":"the body is not valid JSON"}}')
INVALID = _response(b"422 Unprocessable Entity",
                    b'{"error":{"code":"validation_error","message":"vertical and zip are required strings"}}')


class FloorExchange:
    def __init__(self, config: dict[str, Any]) -> None:
        self.keys = {f"Bearer {key}".encode(): seller["id"] for seller in config["sellers"] for key in seller["api_keys"]}
        #: campaigns with the same vertical and filters, so that each filter is tried once per ping
        self.groups: dict[tuple[Any, ...], Eligible] = {}
        for raw in config["campaigns"]:
            if raw.get("ping_url"):
                c = Campaign(raw)
                key = (c.vertical, msgspec.json.encode(raw.get("filters", {}), order="sorted"))
                target = http1.Target.of(raw["ping_url"], {"Content-Type": "application/json"})
                self.groups.setdefault(key, []).append((c, target))
        self.auction_timeout_s = config.get("exchange", {}).get("auction_timeout_ms", 1000) / 1000
        self.client = http1.Client(ssl.create_default_context(), 1 << 16)

    def eligible_for(self, ping: dict[str, Any], seller: str) -> Eligible:
        return [called for group in self.groups.values() if group[0][0].accepts(ping, seller) for called in group]

    async def fan_out(self, calls: list[tuple[http1.Target, bytes]], timeout_s: float) -> float:
        """The best bid of ``calls``, all sent at once: on an idle connection without a task
        where there is one, one timer for them all, 0 for every call not answered in time.
        Not ``pingpost.buyers.BuyerClient.fan_out``: its per-call bookkeeping (an ``Answer``
        each, a deadline per distinct limit, failures told apart) is part of what pingpost
        does beyond the floor, which this measures."""
        loop = asyncio.get_running_loop()
        out: list[tuple[http1.Target, http1._Connection | None, asyncio.Future[tuple[int, bytes, bytes]]]] = []
        for target, body in calls:
            sent = self.client.send_idle(target, body)
            out.append((target, None, asyncio.ensure_future(self.client.post(target, body))) if sent is None
                       else (target, *sent))
        all_in = loop.create_future()
        left = len(out)

        def end() -> None:
            if not all_in.done():
                all_in.set_result(None)

        def one(future: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                end()

        for _, _, future in out:
            future.add_done_callback(one)
        timer = loop.call_later(timeout_s, end)
        if out:
            await all_in
        timer.cancel()
        best = 0.0
        for target, connection, future in out:
            if not future.done() or future.cancelled() or future.exception() is not None:
                if connection is not None:
                    connection.close()
                future.cancel()
                continue
            status, _, answer = future.result()
            if connection is not None:
                self.client.keep(target, connection)
            try:
                bid = msgspec.json.decode(answer).get("bid") if status == 200 else None
            except (msgspec.DecodeError, AttributeError):
                bid = None
            if isinstance(bid, (int, float)) and bid > best:
                best = float(bid)
        return best

    async def ping(self, seller: str, raw: bytes) -> bytes:
        started = time.perf_counter()
        try:
            ping = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return MALFORMED
        if not isinstance(ping, dict) or not isinstance(ping.get("vertical"), str) or not isinstance(ping.get("zip"), str):
            return INVALID
        ping_id = ids.token()
        budget_s = min(self.auction_timeout_s, ping.pop("timeout_ms", 10**9) / 1000)
        ping.update(ping_id=ping_id, seller_id=seller, test=False, zip=ping["zip"][:5])
        shared = msgspec.json.encode(ping)[1:]
        eligible = self.eligible_for(ping, seller)
        calls = [(target, b'{"campaign_id":"%s",%s' % (c.id.encode(), shared)) for c, target in eligible]
        best = await self.fan_out(calls, min([budget_s] + [c.timeout_s for c, _ in eligible]))
        return _response(b"200 OK", msgspec.json.encode(answer_of(ping_id, best, started)))


class SellerConnection(asyncio.Protocol):
    """One seller's keep-alive connection; its requests answered in order."""

    def __init__(self, exchange: FloorExchange) -> None:
        self.exchange = exchange
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.authorization = b""
        self.body: list[bytes] = []
        self.answered: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.authorization = b""
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorization = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        seller = self.exchange.keys.get(self.authorization)
        before, self.answered = self.answered, asyncio.get_running_loop().create_future()
        asyncio.ensure_future(self.answer(seller, b"".join(self.body), before, self.answered))

    async def answer(self, seller: str | None, body: bytes, before: asyncio.Future[None] | None,
                     answered: asyncio.Future[None]) -> None:
        response = UNAUTHORIZED if seller is None else await self.exchange.ping(seller, body)
        if before is not None:
            await before
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(response)
        answered.set_result(None)


async def main() -> None:
    args = arguments(__doc__)
    with open(args.config, "rb") as f:
        exchange = FloorExchange(tomllib.load(f))
    server = await asyncio.get_running_loop().create_server(lambda: SellerConnection(exchange), args.host, args.port)
    await serve_until_stopped(args.host, server.sockets[0].getsockname()[1])
    server.close()
    exchange.client.close()


if __name__ == "__main__":
    uvloop.run(main())
