"""SIGHUP swaps in a changed config whole; a bad file keeps the running one."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

from pingpost.config import from_dict
from pingpost.store.memory import MemoryStore
from pingpost.targeting import CAPPED, OPEN
from tests.conftest import PING, SELLER_KEY, base_config, bid


async def _start(config_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pingpost.cli", "serve", "--config", str(config_path), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    assert line.startswith("listening on "), line
    return process, line.split()[-1]


async def _pinged_campaigns(session: aiohttp.ClientSession, url: str) -> set[str]:
    headers = {"Authorization": f"Bearer {SELLER_KEY}"}
    async with session.post(url + "/v1/ping", json=PING, headers=headers) as response:
        ping_id = (await response.json())["ping_id"]
    async with session.get(f"{url}/v1/pings/{ping_id}", headers=headers) as response:
        trace = await response.json()
    return {c["campaign_id"] for c in trace["campaigns"] if c["outcome"] == "bid"}


async def _after_reload(process: asyncio.subprocess.Process, session: aiohttp.ClientSession, url: str,
                        want: set[str]) -> set[str]:
    process.send_signal(signal.SIGHUP)
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
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await _pinged_campaigns(session, url) == {"c2"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0
    events = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
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
        store.learn(after.campaigns, after.exchange)
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
        store.learn(uncapped.campaigns, uncapped.exchange)
        await store.refresh()
        assert store.blocks[0] == OPEN and store.capped == []
    finally:
        await store.close()
