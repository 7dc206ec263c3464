"""CPU per seller request of the HTTP server: aiohttp's own request handler against
``connections.Connection`` with its deadlines (docs/performance.md, "Seller connections").

Run: ``.venv/bin/python bench/server_overhead.py [--requests N] [--rounds R]``. One process
on uvloop serves two copies of one exchange (a fixed-price campaign, so no buyer I/O; memory
store) on loopback: ``plain`` as ``serve`` did before the deadlines (``web.TCPSite``, aiohttp's
``RequestHandler``), ``deadlines`` as it does now (``connections.listen``, ``Connection``,
the ``Server`` header dropped). A lean client sends
pre-encoded pings over 32 keep-alive connections, back to back. Each round runs both, in
alternating order, and takes the process CPU time (``time.process_time``, the client's
included, which is the same for both) per request; printed: median and range over the rounds.
Process CPU time counts only this process's work, so other load on the machine moves it far
less than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httptools
import uvloop
from aiohttp import web

from pingpost.config import from_dict
from pingpost.connections import Limits, listen
from pingpost.metrics import Metrics
from pingpost.server import make_app
from pingpost.store.memory import MemoryStore

CONFIG = {
    "sellers": [{"id": "acme", "api_keys": ["acme-live-key"]}],
    "buyers": [{"id": "b1"}],
    "campaigns": [{"id": "c1", "buyer": "b1", "vertical": "auto", "fixed_price": 2.0,
                   "post_url": "http://127.0.0.1:9/post"}],
}
BODY = json.dumps({"vertical": "auto", "zip": "90210", "state": "CA"}).encode()
REQUEST = (b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nAuthorization: Bearer acme-live-key\r\n"
           b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
CONNECTIONS = 32


class Seller(asyncio.Protocol):
    """Sends the next ping as soon as the answer to the last one is complete, going round
    ``pings`` (whole requests); ``left`` is [pings to send, answers to wait for]."""

    def __init__(self, pings: list[bytes], left: list[int], done: asyncio.Future[None]) -> None:
        self.pings = pings
        self.left = left
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        if self.left[0] > 0:
            self.left[0] -= 1
            self.transport.write(self.pings[self.left[0] % len(self.pings)])

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() != 200:
            raise RuntimeError(f"answer {self.parser.get_status_code()}")
        self.left[1] -= 1
        if self.left[1] == 0 and not self.done.done():
            self.done.set_result(None)
        self.send()


async def send_pings(port: int, pings: list[bytes], n: int) -> float:
    """CPU seconds of this process for ``n`` pings over ``CONNECTIONS`` connections, going
    round ``pings``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left = [n, n]
    started = time.process_time()
    transports = [(await loop.create_connection(lambda: Seller(pings, left, done), "127.0.0.1", port))[0]
                  for _ in range(CONNECTIONS)]
    await done
    spent = time.process_time() - started
    for transport in transports:
        transport.close()
    return spent


async def drive(port: int, requests: int) -> float:
    """CPU microseconds of this process per request, for ``requests`` pings."""
    return await send_pings(port, [REQUEST], requests) / requests * 1e6


async def serve_plain() -> tuple[web.AppRunner, int]:
    app = make_app(from_dict(CONFIG), MemoryStore())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    return runner, runner.addresses[0][1]


async def serve_deadlines() -> tuple[web.AppRunner, int, asyncio.Server]:
    config = from_dict(CONFIG)
    app = make_app(config, MemoryStore())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listener = await listen(runner, Limits(config.exchange, 10_000, Metrics()), "127.0.0.1", 0, None, False)
    return runner, listener.sockets[0].getsockname()[1], listener


async def main(requests: int, rounds: int, sides: list[str]) -> None:
    plain_runner, plain_port = await serve_plain()
    deadlines_runner, deadlines_port, listener = await serve_deadlines()
    ports = {"plain": plain_port, "deadlines": deadlines_port}
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for name in sides:  # warm-up
        await drive(ports[name], requests // 5)
    for n in range(rounds):
        for name in sides if n % 2 == 0 else sides[::-1]:
            figures[name].append(await drive(ports[name], requests))
    for name, values in figures.items():
        print(f"{name:10} {statistics.median(values):7.1f} µs CPU per request "
              f"({min(values):.1f}–{max(values):.1f}, {rounds} rounds of {requests})")
    if len(sides) == 2:
        ratios = [d / p for p, d in zip(figures["plain"], figures["deadlines"])]
        print(f"deadlines / plain, per round: median {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}–{max(ratios):.3f})")
    listener.close()
    await deadlines_runner.cleanup()
    await plain_runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--side", choices=["plain", "deadlines"], action="append",
                        help="drive only this one (for an instruction count under valgrind); default both")
    args = parser.parse_args()
    uvloop.run(main(args.requests, args.rounds, args.side or ["plain", "deadlines"]))
