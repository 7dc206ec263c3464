"""Scriptable buyers on a real port: ``BuyerServer`` plays any number of campaigns at
``/<campaign_id>/ping`` and ``/<campaign_id>/post``; a test scripts each campaign's answers
with ``Reply`` values (or a function of the request) and reads back what the exchange sent.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web


@dataclass
class Reply:
    """One scripted buyer answer. ``reset`` drops the connection; ``delay`` waits first."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    delay: float = 0.0
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def bid(amount: Any, bid_id: str | None = None, delay: float = 0.0) -> Reply:
    payload: dict[str, Any] = {"bid": amount}
    if bid_id is not None:
        payload["bid_id"] = bid_id
    return Reply(json=payload, delay=delay)


def accept(lead_id: str = "buyer-lead-1", delay: float = 0.0) -> Reply:
    return Reply(json={"accepted": True, "lead_id": lead_id}, delay=delay)


def reject(reason: str = "not_interested", delay: float = 0.0) -> Reply:
    return Reply(json={"accepted": False, "reason": reason}, delay=delay)


Script = Reply | Callable[[dict[str, Any]], Reply | Awaitable[Reply]]


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]


class BuyerServer:
    """Many campaigns' ping and post endpoints on one real port."""

    def __init__(self) -> None:
        self.ping_scripts: dict[str, Script] = {}
        self.post_scripts: dict[str, Script] = {}
        self.pings: dict[str, list[Received]] = {}
        self.posts: dict[str, list[Received]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    def script(self, campaign_id: str, ping: Script | None = None, post: Script | None = None) -> None:
        if ping is not None:
            self.ping_scripts[campaign_id] = ping
        if post is not None:
            self.post_scripts[campaign_id] = post

    def ping_url(self, campaign_id: str) -> str:
        return f"{self.url}/{campaign_id}/ping"

    def post_url(self, campaign_id: str) -> str:
        return f"{self.url}/{campaign_id}/post"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        campaign_id, kind = request.match_info["campaign"], request.match_info["kind"]
        try:
            body = await request.json()
        except ValueError:
            body = {"_unparsed": True}
        received = Received(body, dict(request.headers))
        scripts, log = (self.ping_scripts, self.pings) if kind == "ping" else (self.post_scripts, self.posts)
        log.setdefault(campaign_id, []).append(received)
        script = scripts.get(campaign_id, Reply(status=204) if kind == "ping" else reject("unscripted"))
        reply = script(body) if callable(script) else script
        if asyncio.iscoroutine(reply):
            reply = await reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.reset:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to send on a reset connection
        if reply.body is not None:
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers,
                                content_type="application/json")
        if reply.json is None:
            return web.Response(status=reply.status, headers=reply.headers)
        return web.json_response(reply.json, status=reply.status, headers=reply.headers)

    async def start(self, ssl_context: Any = None, host: str = "127.0.0.1", sock: socket.socket | None = None) -> None:
        """Listen on a free port of ``host``, or on ``sock`` (bound, not yet listening) when given."""
        app = web.Application()
        app.router.add_post("/{campaign}/{kind:ping|post}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site: web.BaseSite = (web.SockSite(self._runner, sock) if sock is not None
                              else web.TCPSite(self._runner, host, 0, ssl_context=ssl_context))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{'localhost' if ssl_context else host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def buyers() -> AsyncIterator[BuyerServer]:
    server = BuyerServer()
    await server.start()
    yield server
    await server.stop()


