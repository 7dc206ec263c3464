"""SIGHUP swaps in a changed config whole; a bad file keeps the running one, and so does a
config that passes the checks but cannot be built."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import msgspec
import pytest

from pingpost.config import Config, ConfigError, from_dict
from pingpost.launch import Child
from pingpost.server import ROUTES, reload
from pingpost.store.base import Numbering
from pingpost.store.memory import MemoryStore
from pingpost.targeting import CAPPED, OPEN
from tests.helpers_process import Served, write_config
from tests.support.buyers import bid
from tests.support.exchange import PING, SELLER_KEY, base_config


async def _start(config_path: Path) -> tuple[Child, str]:
    process = await Child.started([sys.executable, "-m", "pingpost.cli", "serve", "--config", str(config_path),
                                   "--port", "0"], timeout=20, name="serve",
                                  cwd=config_path.parent)
    line = process.stdout[0]
    assert line.startswith("listening on "), line
    return process, line.split()[-1]


async def _pinged_campaigns(session: aiohttp.ClientSession, url: str) -> set[str]:
    headers = {"Authorization": f"Bearer {SELLER_KEY}"}
    async with session.post(url + "/v1/ping", json=PING, headers=headers) as response:
        ping_id = (await response.json())["ping_id"]
    async with session.get(f"{url}/v1/pings/{ping_id}", headers=headers) as response:
        trace = await response.json()
    return {c["campaign_id"] for c in trace["campaigns"] if c["outcome"] == "bid"}


async def _after_reload(process: Child, session: aiohttp.ClientSession, url: str,
                        want: set[str]) -> set[str]:
    process.signal(signal.SIGHUP)
    seen: set[str] = set()
    for _ in range(50):
        seen = await _pinged_campaigns(session, url)
        if seen == want:
            break
        await asyncio.sleep(0.1)
    return seen


async def test_sighup_swaps_the_config_and_refuses_a_bad_one(buyers, tmp_path):
    for campaign in ("c1", "c2"):
        buyers.script(campaign, ping=bid(2.0))
    path = tmp_path / "exchange.json"
    path.write_text(json.dumps(base_config(buyers, {"id": "c1"})))
    process, url = await _start(path)
    try:
        async with aiohttp.ClientSession() as session:
            assert await _pinged_campaigns(session, url) == {"c1"}

            path.write_text(json.dumps(base_config(buyers, {"id": "c2"}, {"id": "c1", "active": False})))
            assert await _after_reload(process, session, url, {"c2"}) == {"c2"}

            path.write_text(json.dumps({"exchange": {"auction_timeout_ms": -1}}))
            process.signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await _pinged_campaigns(session, url) == {"c2"}
    finally:
        process.signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 20)
    assert code == 0
    events = [json.loads(line) for line in process.stderr if line.startswith("{")]
    reloads = [e for e in events if e.get("event") == "reload"]
    assert [e["status"] for e in reloads] == ["ok", "refused"]
    assert any("exchange.auction_timeout_ms" in error for error in reloads[1]["errors"])


async def test_a_new_config_keeps_what_the_store_knows_of_staying_campaigns(buyers):
    before = from_dict(base_config(buyers, {"id": "c1", "caps": {"daily": 1}}))
    after = from_dict(base_config(buyers, {"id": "c0"}, {"id": "c1", "caps": {"daily": 1}}))
    store = MemoryStore()
    await store.start(before.campaigns, before.exchange)
    try:
        now = time.time()
        assert await store.reserve("c1", 100, now) is not None
        store.last_bids[0] = 250
        assert store.blocks[0] == CAPPED
        store.adopt(Numbering.of(after.campaigns, after.exchange))
        assert store.index_of("c1") == 1
        assert list(store.blocks) == [OPEN, CAPPED] and store.last_bids == [0, 250]
        assert await store.reserve("c1", 100, now) is None
    finally:
        await store.close()


async def test_a_campaign_whose_caps_are_removed_opens(buyers):
    capped = from_dict(base_config(buyers, {"id": "c1", "caps": {"daily": 1}}))
    uncapped = from_dict(base_config(buyers, {"id": "c1"}))
    store = MemoryStore()
    await store.start(capped.campaigns, capped.exchange)
    try:
        assert await store.reserve("c1", 100, time.time()) is not None and store.blocks[0] == CAPPED
        store.adopt(Numbering.of(uncapped.campaigns, uncapped.exchange))
        await store.refresh()
        assert store.blocks[0] == OPEN and store.capped == []
    finally:
        await store.close()


async def _events_until(served: Served, count: int) -> list[dict[str, Any]]:
    """The first ``count`` reload events the process logged, waiting for them."""
    for _ in range(100):
        reloads = [e for e in served.log_events() if e.get("event") == "reload"]
        if len(reloads) >= count:
            return reloads
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {served.log_events()} logged")


async def test_a_bad_port_or_a_header_with_a_line_break_is_refused_at_load(buyers, tmp_path):
    """Port 99999 matches the URL pattern but no request can be built for it; a header value
    with CRLF would add a header to every buyer request. Both are refused by the checks, with
    their paths, and the running config goes on serving whole."""
    buyers.script("c1", ping=bid(2.0))
    buyers.script("c2", ping=bid(3.0))
    good = base_config(buyers, {"id": "c1"})
    served = await Served.start(tmp_path, good)
    url = f"http://127.0.0.1:{served.port}"
    bad_port = base_config(buyers, {"id": "c1"}, {"id": "c2", "ping_url": "http://127.0.0.1:99999/c2/ping"})
    injecting = base_config(buyers, {"id": "c1"}, {"id": "c2", "headers": {"X-Token": "t\r\nX-Injected: 1"}})
    try:
        async with aiohttp.ClientSession() as session:
            for n, (bad, path) in enumerate([(bad_port, "campaigns[1].ping_url"),
                                             (injecting, "campaigns[1].headers.X-Token")], start=1):
                write_config(tmp_path, bad)
                served.signal(signal.SIGHUP)
                event = (await _events_until(served, n))[-1]
                assert event["status"] == "refused", event
                assert any(error.startswith(f"{path}: ") for error in event["errors"]), event
                assert await _pinged_campaigns(session, url) == {"c1"}
    finally:
        served.signal()
        assert await served.wait() == 0
    assert "c2" not in buyers.pings
    assert all("X-Injected" not in received.headers for received in buyers.pings["c1"])


class _Events(logging.Handler):
    """The structured events a logger emits, whatever the handlers above it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(getattr(record, "event", {}))


@pytest.fixture
def server_events() -> Iterator[_Events]:
    handler = _Events()
    logger = logging.getLogger("pingpost.server")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.setLevel(level)
    logger.removeHandler(handler)


async def test_a_config_that_fails_to_build_leaves_every_piece_of_the_old_one(buyers, exchange, server_events):
    """The Structs take a port of 99999 (only the file checks refuse it), and no buyer
    request can be built for it: the build fails after the index and the store's numbering
    could have been made. Nothing of that config may be left behind, and the next good
    config is taken whole."""
    buyers.script("c1", ping=bid(2.0))
    buyers.script("c0", ping=bid(5.0))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    engine, routes = ex.engine, ex.app[ROUTES]

    def pieces() -> tuple[Any, ...]:
        return (engine.config, engine.index, engine.campaigns, engine.sellers, routes.gate, engine.store.campaign_ids)

    before = pieces()

    unbuildable = base_config(buyers, {"id": "c0"}, {"id": "c1"}, {"id": "c2", "ping_url": "http://127.0.0.1:99999/"})
    unbuildable["sellers"][0]["api_keys"] = ["acme-next-live-key"]
    with pytest.raises(ConfigError):
        from_dict(unbuildable)
    assert await reload(ex.app, msgspec.convert(unbuildable, Config)) is False

    assert all(now is then for now, then in zip(pieces(), before))
    assert engine.store.index_of("c1") == 0 and engine.index.campaigns[0].id == "c1"
    status, answer = await ex.ping(PING)
    assert status == 200 and answer["price"] == 2.0
    assert (await ex.ping(PING, key="acme-next-live-key"))[0] == 401
    failed = [e for e in server_events.events if e.get("event") == "reload"]
    assert [e["status"] for e in failed] == ["failed"] and failed[0]["error"].startswith("ValueError: ")

    buildable = base_config(buyers, {"id": "c0"}, {"id": "c1"})
    buildable["sellers"][0]["api_keys"] = ["acme-next-live-key"]
    assert await reload(ex.app, from_dict(buildable)) is True
    assert engine.store.index_of("c1") == 1 and routes.gate is not before[4]
    status, answer = await ex.ping(PING, key="acme-next-live-key")
    assert status == 200 and answer["price"] == 5.0
    assert (await ex.ping(PING))[0] == 401
    assert [e["status"] for e in server_events.events if e.get("event") == "reload"] == ["failed", "ok"]
