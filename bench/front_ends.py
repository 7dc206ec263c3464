"""CPU per seller request of three front ends answering ``POST /v1/ping`` without buyer calls:
what the HTTP server alone costs, against what the floor exchange's bare protocol costs
(docs/performance.md, "Against the floor: what is left to take").

Run: ``.venv/bin/python bench/front_ends.py [--requests N] [--rounds R]``. One uvloop process
serves, on loopback:

* ``bare``: the floor exchange's seller connection (``bench/floor_exchange.py``): an asyncio
  protocol over httptools, a task per request, the same answer bytes every time;
* ``aiohttp``: aiohttp's low-level server (``web.Server``, no app, no router, no middleware),
  its handler reading the body and answering the same bytes as a ``web.Response``: the least
  any aiohttp front end does;
* ``pingpost``: the exchange as ``pingpost serve`` runs it (``make_app`` behind
  ``connections.listen``, the memory store, no books) with one fixed-price campaign, so a
  ping is the whole seller path (auth, decoding, checks, the auction, the record in the
  store, metrics, the log line at info to /dev/null) without a buyer call.

``server_overhead.py``'s lean client sends the same pre-encoded ping over 32 keep-alive
connections, back to back; each round drives every front end in turn (the order reversed
every other round) and takes the process CPU time per request, the client's included (the
same for all three, so the differences are the servers'). Printed: median and range.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.floor_exchange import SellerConnection  # noqa: E402
from bench.server_overhead import CONFIG, drive  # noqa: E402
from pingpost import logs  # noqa: E402
from pingpost.config import from_dict  # noqa: E402
from pingpost.connections import Limits, listen  # noqa: E402
from pingpost.metrics import Metrics  # noqa: E402
from pingpost.server import make_app  # noqa: E402
from pingpost.store.memory import MemoryStore  # noqa: E402

ANSWER = b'{"ping_id":"0123456789abcdef01234567","status":"bid","expires_at":"2026-12-03T17:00:00Z",' \
         b'"auction_ms":0.05,"price":2.0}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(ANSWER), ANSWER)


class _Fixed:
    """What ``SellerConnection`` needs of an exchange: a seller for the key, an answer."""

    keys = {b"Bearer acme-live-key": "acme"}

    async def ping(self, seller: str, raw: bytes) -> bytes:
        return RESPONSE


async def serve_bare() -> tuple[asyncio.Server, int]:
    fixed: Any = _Fixed()
    server = await asyncio.get_running_loop().create_server(lambda: SellerConnection(fixed), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def serve_aiohttp() -> tuple[asyncio.Server, int]:
    async def answer(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")
    low_level = web.Server(answer, access_log=None)
    server = await asyncio.get_running_loop().create_server(low_level, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def serve_pingpost() -> tuple[web.AppRunner, asyncio.Server, int]:
    config = from_dict(CONFIG)
    runner = web.AppRunner(make_app(config, MemoryStore()), access_log=None, handle_signals=False)
    await runner.setup()
    listener = await listen(runner, Limits(config.exchange, 10_000, Metrics()), "127.0.0.1", 0, None, False)
    return runner, listener, listener.sockets[0].getsockname()[1]


async def main(requests: int, rounds: int) -> None:
    bare, bare_port = await serve_bare()
    low_level, aiohttp_port = await serve_aiohttp()
    runner, listener, pingpost_port = await serve_pingpost()
    ports = {"bare": bare_port, "aiohttp": aiohttp_port, "pingpost": pingpost_port}
    figures: dict[str, list[float]] = {name: [] for name in ports}
    for port in ports.values():  # warm-up
        await drive(port, requests // 5)
    for n in range(rounds):
        for name in list(ports) if n % 2 == 0 else list(ports)[::-1]:
            figures[name].append(await drive(ports[name], requests))
    for name, values in figures.items():
        print(f"{name:9} {statistics.median(values):7.1f} µs CPU per request "
              f"({min(values):.1f}–{max(values):.1f}, {rounds} rounds of {requests})")
    for server in (bare, low_level, listener):
        server.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with open("/dev/null", "w") as sink:
        sys.stderr = sink
        logs.setup("info")
        logging.getLogger("pingpost.buyers").setLevel(logging.WARNING)
        uvloop.run(main(args.requests, args.rounds))
