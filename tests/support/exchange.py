"""The real exchange app on a free port: ``exchange(config)`` starts one with that config
and calls it as a seller would; ``base_config`` is the config most tests start from. It is
served as ``pingpost serve`` serves it (``connections.listen``: seller connections with their
deadlines, the ping's direct route).
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from pingpost import ledger as books
from pingpost.config import Config, from_dict
from pingpost.connections import Limits, listen
from pingpost.server import EXCHANGE, make_app
from pingpost.store.base import Clock, Store
from pingpost.store.memory import MemoryStore
from tests.support.buyers import BuyerServer
from tests.support.keys import TEST_KEY

SELLER_KEY = "acme-live-key"
SELLER_TEST_KEY = "acme-test-key"
OTHER_KEY = "other-live-key"

PING = {"vertical": "auto", "zip": "90210", "state": "CA", "quality_score": 80}
LEAD = {"first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com", "phone": "(415) 555-0134",
        "zip": "90210"}


def base_config(buyers: BuyerServer, *campaigns: dict[str, Any], **exchange: Any) -> dict[str, Any]:
    """A config dict with two sellers (acme: live and test keys; other) and buyers b1..b3.

    Each campaign dict needs ``id``; ``buyer`` defaults to b1, ``vertical`` to auto,
    and ``ping_url``/``post_url`` to this buyer server's endpoints for that campaign
    (pass ``ping_url=None`` for a fixed-price campaign).
    """
    built = []
    for spec in campaigns:
        c = {"buyer": "b1", "vertical": "auto", "ping_url": buyers.ping_url(spec["id"]),
             "post_url": buyers.post_url(spec["id"]), **spec}
        if c["ping_url"] is None:
            del c["ping_url"]
        built.append(c)
    return {
        "exchange": {"auction_timeout_ms": 1000, "post_timeout_ms": 5000, **exchange},
        "sellers": [
            {"id": "acme", "api_keys": [SELLER_KEY], "test_api_keys": [SELLER_TEST_KEY]},
            {"id": "other", "api_keys": [OTHER_KEY]},
        ],
        "buyers": [{"id": "b1"}, {"id": "b2"}, {"id": "b3"}],
        "campaigns": built,
    }


class RunningExchange:
    """A running exchange and a client session to call it like a seller would."""

    def __init__(self, config: Config, store: Store, ca_file: str | None, clock: Clock = time.time,
                 ledger: books.Ledger | None = None) -> None:
        self.app = make_app(config, store, ca_file=ca_file, clock=clock, ledger=ledger)
        self.store = store
        self.url = ""
        self.session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    @property
    def engine(self) -> Any:
        return self.app[EXCHANGE]

    @property
    def ledger(self) -> books.Ledger:
        """The books this exchange writes (the app closes them when it stops)."""
        return self.app[EXCHANGE].ledger  # type: ignore[no-any-return]

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        engine = self.app[EXCHANGE]
        self._listener = await listen(self._runner, Limits(engine.config.exchange, 10_000, engine.metrics),
                                      "127.0.0.1", 0, None, False)
        port = self._listener.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def call(self, method: str, path: str, json: Any = None, key: str | None = SELLER_KEY,
                   data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON body or raw text)."""
        assert self.session is not None
        h = {"Authorization": f"Bearer {key}"} if key else {}
        if json is not None or data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        kwargs: dict[str, Any] = {"headers": h}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.url + path, **kwargs) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text

    async def ping(self, body: dict[str, Any], key: str | None = SELLER_KEY) -> tuple[int, Any]:
        return await self.call("POST", "/v1/ping", body, key)

    async def post(self, ping_id: str, lead: dict[str, Any], key: str | None = SELLER_KEY) -> tuple[int, Any]:
        return await self.call("POST", "/v1/post", {"ping_id": ping_id, "lead": lead}, key)

    async def direct(self, body: dict[str, Any], key: str | None = SELLER_KEY) -> tuple[int, Any]:
        return await self.call("POST", "/v1/leads", body, key)

    async def trace(self, ping_id: str, key: str | None = SELLER_KEY) -> tuple[int, Any]:
        return await self.call("GET", f"/v1/pings/{ping_id}", key=key)


ExchangeFactory = Callable[..., Awaitable[RunningExchange]]


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[ExchangeFactory]:
    """``await exchange(config_dict, store=None, ca_file=None, clock=time.time, ledger=None)``
    starts one (on a memory store on ``clock`` unless given a store, keeping its books in a
    SQLite file of its own unless given an open ledger); all stop after the test."""
    started: list[RunningExchange] = []

    async def start(config: dict[str, Any], store: Store | None = None, ca_file: str | None = None,
                    clock: Clock = time.time, ledger: books.Ledger | None = None) -> RunningExchange:
        if ledger is None:
            ledger = await books.open(f"sqlite:///{tmp_path / f'books-{len(started)}.db'}", key=TEST_KEY)
        running = RunningExchange(from_dict(copy.deepcopy(config)), store or MemoryStore(clock), ca_file, clock,
                                  ledger)
        await running.start()
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.stop()


