"""A deletion that can be proven, end to end, on both ledgers.

``pingpost serve`` runs as an operator runs it (its own process, logging at debug, on a real
Redis that writes both an AOF and an RDB file), real buyer servers buy leads carrying unique
canary emails and phones, and an operator deletes one consumer by email. Then every byte the
exchange wrote is scanned: the ledger's database and its write-ahead log, the PostgreSQL
ledger's local journal (and PostgreSQL's own data directory, for the values in clear), Redis'
files, every log line. The canary values are nowhere; the erased leads' wrapped keys, captured
before the deletion, are nowhere the exchange wrote (PostgreSQL's own write-ahead log keeps old
row versions until it recycles them: docs/privacy.md), so the sealed bytes, wherever a copy
remains, no longer open; the money rows sum as before; the request log has the request and
no identifier; and the consumer, opted out by the deletion, is refused on post and not sold
on ping, with no buyer offered anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import pytest

from pingpost import ledger
from pingpost.privacy.keys import Unreadable
from tests.helpers_contract import assert_error
from tests.helpers_process import Served
from tests.pg_support import PostgresServer, postgres_server, postgres_url  # noqa: F401
from tests.redis_support import RedisServer, cli
from tests.support.buyers import BuyerServer, accept, bid
from tests.support.exchange import PING, SELLER_KEY, base_config
from tests.support.keys import TEST_KEY
from tests.test_access import OPS_KEY

SOLD = 3  # the canary consumer's leads, each sold


@pytest.fixture
def redis_on_disk() -> AsyncIterator[RedisServer]:
    """A Redis that persists everything it is sent: an AOF written at every command, RDB snapshots."""
    server = RedisServer(extra=("--appendonly", "yes", "--appendfsync", "always", "--save", "1 1"))
    server.start()
    yield server  # type: ignore[misc]
    server.remove()


class Seller:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def call(self, path: str, body: Any = None, key: str = SELLER_KEY) -> tuple[int, Any]:
        method = self.session.post if body is not None else self.session.get
        async with method(self.url + path, json=body, headers={"Authorization": f"Bearer {key}"}) as answer:
            return answer.status, await answer.json()

    async def sell(self, lead: dict[str, Any]) -> str:
        status, priced = await self.call("/v1/ping", PING)
        assert status == 200 and priced["status"] == "bid", priced
        status, sold = await self.call("/v1/post", {"ping_id": priced["ping_id"], "lead": lead})
        assert status == 200 and sold["status"] == "sold", sold
        return str(sold["lead_id"])


def files_under(*folders: Path) -> list[Path]:
    return [path for folder in folders for path in folder.rglob("*") if path.is_file()]


def found_in(needles: dict[str, bytes], paths: list[Path], texts: dict[str, str]) -> list[str]:
    """Which needle is in which file or text (files compared byte for byte, case-insensitively
    for the values in clear)."""
    hits = []
    for path in paths:
        try:
            body = path.read_bytes()
        except OSError:
            continue  # a file PostgreSQL removed while the scan ran
        lowered = body.lower()
        hits += [f"{name} in {path}" for name, needle in needles.items() if needle.lower() in lowered
                 or needle in body]
    for where, text in texts.items():
        hits += [f"{name} in {where}" for name, needle in needles.items()
                 if needle.lower() in text.encode().lower()]
    return hits


async def rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [tuple(row) for row in conn.execute(statement)]
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(statement)]
    finally:
        await conn.close()


async def until(check: Any, what: str, within_s: float = 30.0) -> Any:
    deadline = time.monotonic() + within_s
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return result


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_deleted_consumer_is_nowhere_the_exchange_wrote(
        backend: str, buyers: BuyerServer, redis_on_disk: RedisServer, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    canary = uuid.uuid4().hex[:12]
    email = f"canary.{canary}@example.com"
    phone = "415" + str(int(canary, 16) % 8_000_000 + 2_000_000)  # ten digits; an exchange code starts at 2
    posted_phone = f"({phone[:3]}) {phone[3:6]}-{phone[6:]}"
    canary_lead = {"first_name": "Cora", "last_name": f"Canary{canary}", "email": email.upper(),
                   "phone": posted_phone, "zip": "90210", "address": f"{canary} Canary Lane",
                   "consent_cert_url": f"https://cert.example.com/{canary}"}
    other = {"first_name": "Otto", "last_name": "Other", "email": f"other.{canary}@example.com",
             "phone": "4155550177", "zip": "90210"}

    flags = ["--redis", redis_on_disk.url, "--log-level", "debug"]
    pg_data: list[Path] = []
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'books.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg_data.append(server.data)
        flags += ["--ledger-journal", str(tmp_path / "journal.db")]
    flags += ["--ledger", url]
    for cid, cents in (("c1", 9.0), ("c2", 7.0)):
        buyers.script(cid, ping=bid(cents), post=accept(f"bought-{cid}"))
    config = base_config(buyers, {"id": "c1", "buyer": "b1"}, {"id": "c2", "buyer": "b2"})
    config["operators"] = [{"id": "ops", "api_keys": [OPS_KEY]}]
    served = await Served.start(tmp_path, config, *flags)
    try:
        async with aiohttp.ClientSession() as session:
            seller = Seller(session, f"http://127.0.0.1:{served.port}")
            erased_ids = [await seller.sell(canary_lead) for _ in range(SOLD)]
            kept_id = await seller.sell(other)
            everything = ", ".join(f"'{lead_id}'" for lead_id in [*erased_ids, kept_id])
            await until(lambda: rows(url, f"SELECT lead_id FROM lead_data WHERE lead_id IN ({everything}) "
                                          "AND key_wrapped IS NOT NULL"), "the leads in the books")
            sealed = {lead_id: (bytes(wrapped), bytes(data)) for lead_id, wrapped, data in await rows(
                url, f"SELECT lead_id, key_wrapped, data FROM lead_data WHERE lead_id IN ({everything})")}
            assert len(sealed) == SOLD + 1
            money = "SELECT sum(buyer_price_cents), sum(seller_price_cents), count(*) FROM sales"
            money_before = await rows(url, money)
            offered = sum(len(got) for got in buyers.posts.values())

            status, deleted = await seller.call("/v1/privacy/deletions", {"email": email}, key=OPS_KEY)
            assert status == 200 and deleted["leads_erased"] == SOLD, deleted

            # Opted out by its deletion: refused on post (by phone alone), not sold on ping.
            status, priced = await seller.call("/v1/ping", PING)
            status, refused = await seller.call("/v1/post", {"ping_id": priced["ping_id"], "lead": {
                **other, "email": f"new.{canary}@example.com", "phone": phone}})
            assert_error(status, refused, "opted_out")
            pinged = sum(len(got) for got in buyers.pings.values())
            hashed = {**PING, "phone_sha256": hashlib.sha256(phone.encode()).hexdigest()}
            status, unsold = await seller.call("/v1/ping", hashed)
            assert status == 200 and unsold["status"] == "no_bid", unsold
            assert sum(len(got) for got in buyers.pings.values()) == pinged
            assert sum(len(got) for got in buyers.posts.values()) == offered

            status, logged = await seller.call("/v1/privacy/requests", key=OPS_KEY)
            assert status == 200
            mine = [entry for entry in logged["requests"] if entry["request_id"] == deleted["request_id"]]
            assert len(mine) == 1 and mine[0]["kind"] == "deletion" and mine[0]["leads_erased"] == SOLD
            answered = str(logged).lower()
            assert canary not in answered and phone not in answered

            assert await rows(url, money) == money_before
            left = await rows(url, f"SELECT lead_id, key_wrapped, data, email_hash, phone_hash, erased_at "
                                   f"FROM lead_data WHERE lead_id IN ({everything})")
            erased = {row[0]: row for row in left if row[0] in erased_ids}
            assert all(row[1:5] == (None,) * 4 and row[5] is not None for row in erased.values())
            assert [row[1] is not None for row in left if row[0] == kept_id] == [True]

            values = {"email": email.encode(), "phone": phone.encode(), "posted phone": posted_phone.encode(),
                      "address": f"{canary} Canary Lane".encode(), "name": f"Canary{canary}".encode(),
                      "certificate": f"cert.example.com/{canary}".encode()}
            keys = {f"wrapped key of {lead_id}": sealed[lead_id][0] for lead_id in erased_ids}

            def scan() -> None:
                """Everything written so far: the files, and every line the exchange logged."""
                written = files_under(tmp_path, redis_on_disk.folder)
                logs = {"the exchange's stderr": "\n".join(served.stderr),
                        "the exchange's stdout": "\n".join(served.stdout)}
                assert found_in(values, written + files_under(*pg_data), logs) == []
                assert found_in(keys, written, {}) == []

            cli(redis_on_disk.port, "SAVE")
            scan()  # while the exchange runs: its write-ahead logs were emptied by the erasure
        cli(redis_on_disk.port, "BGREWRITEAOF")
    finally:
        served.signal()
        assert await served.wait() == 0
    await asyncio.sleep(0.5)  # the AOF rewrite finishes
    assert any(path.suffix == ".aof" or "appendonly" in path.name for path in files_under(redis_on_disk.folder))
    scan()

    books = await ledger.open(url, journal=tmp_path / "journal-after.db", key=TEST_KEY)
    try:
        assert [await books.get_lead(lead_id) for lead_id in erased_ids] == [None] * SOLD
        assert books.vault is not None
        for lead_id in erased_ids:
            with pytest.raises(Unreadable):  # the sealed bytes, wherever a copy is, without their key
                books.vault.open(lead_id, None, sealed[lead_id][1])
        kept = await books.get_lead(kept_id)
        assert kept is not None and kept.email == other["email"]
    finally:
        await books.close()

