"""The exchange and its books: what the seller was told is what the ledger holds.

The real app over a real SQLite ledger (and, where the store matters, a real redis-server):
every answer is checked against the rows read back from the ledger file, a store that forgot
or cannot answer is made to happen for real, and a full disk is a small tmpfs filled up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pingpost import ledger, money
from pingpost.schema import CampaignOutcome, Lead
from pingpost.trace import PostRecord
from pingpost.store.memory import MemoryStore
from pingpost.store.redis import RedisStore
from tests.helpers_contract import assert_error, ping_ok, sold_ping
from tests.helpers_process import write_config
from tests.redis_support import RedisServer, cli
from tests.support.buyers import BuyerServer, accept, bid, reject
from tests.support.clock import ManualClock
from tests.support.exchange import LEAD, OTHER_KEY, PING, SELLER_TEST_KEY, ExchangeFactory, base_config
from tests.test_ledger import fill, small_fs  # noqa: F401
from tests.support.keys import TEST_KEY

DAY_S = 86_400


def rows(path: Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the ledger file, past the exchange's own connections."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(statement, params))
    finally:
        conn.close()


def selling(buyers: BuyerServer, **exchange: Any) -> dict[str, Any]:
    buyers.script("c1", ping=bid(3.0), post=accept("buyer-9"))
    buyers.script("c2", ping=bid(2.0), post=accept())
    return base_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}, **exchange)


async def test_every_answer_is_in_the_books_with_the_price_told(buyers: BuyerServer, exchange: ExchangeFactory,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ex = await exchange(selling(buyers), ledger=await ledger.open(f"sqlite:///{path}", key=TEST_KEY))
    answer, sold = await sold_ping(ex)
    status, direct = await ex.direct({**PING, "lead": LEAD})
    assert status == 200 and direct["status"] == "sold", direct
    test_ping = await ping_ok(ex, key=SELLER_TEST_KEY)

    pings = {ping_id: (seller, test, status, cents) for ping_id, seller, test, status, cents in rows(
        path, "SELECT ping_id, seller_id, test, status, price_cents FROM pings")}
    assert pings == {answer["ping_id"]: ("acme", 0, "bid", money.to_cents(answer["price"])),
                     direct["ping_id"]: ("acme", 0, "bid", money.to_cents(direct["price"])),
                     test_ping["ping_id"]: ("acme", 1, "bid", money.to_cents(test_ping["price"]))}
    sales = {lead_id: rest for lead_id, *rest in rows(
        path, "SELECT lead_id, ping_id, campaign_id, buyer_id, buyer_price_cents, seller_price_cents, buyer_lead_id "
              "FROM sales")}
    assert sales == {sold["lead_id"]: [answer["ping_id"], "c1", "b1", 300, money.to_cents(sold["price"]), "buyer-9"],
                     direct["lead_id"]: [direct["ping_id"], "c1", "b1", 300, money.to_cents(direct["price"]),
                                         "buyer-9"]}
    # The lead's personal data is in its own table, and nowhere else in the books.
    assert sorted(lead_id for (lead_id,) in rows(path, "SELECT lead_id FROM lead_data")) == sorted(sales)
    for table in ("pings", "posts", "sales"):
        for row in rows(path, f"SELECT * FROM {table}"):
            text = repr(row).lower()
            assert "lovelace" not in text and "ada@example.com" not in text and "5550134" not in text, (table, row)


async def test_the_trace_and_a_re_post_come_from_the_books_once_the_store_forgot(
        buyers: BuyerServer, exchange: ExchangeFactory, tmp_path: Path) -> None:
    path = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = await exchange(selling(buyers), ledger=await ledger.open(path, key=TEST_KEY))
    answer, sold = await sold_ping(first)
    unsold_ping = await ping_ok(first, {**PING, "zip": "10001"})
    buyers.script("c1", post=reject())
    buyers.script("c2", post=reject())
    status, unsold = await first.post(unsold_ping["ping_id"], {**LEAD, "zip": "10001"})
    assert status == 200 and unsold["status"] == "unsold"
    traces = {ping_id: (await first.trace(ping_id))[1] for ping_id in (answer["ping_id"], unsold_ping["ping_id"])}
    await first.app.shutdown()
    await first.app.cleanup()

    # A new exchange on a fresh store: only the books remember.
    posts_before = sum(len(v) for v in buyers.posts.values())
    second = await exchange(selling(buyers), store=MemoryStore(), ledger=await ledger.open(path, key=TEST_KEY))
    for ping_id, trace in traces.items():
        assert await second.trace(ping_id) == (200, trace)
        status, body = await second.trace(ping_id, key=OTHER_KEY)
        assert_error(status, body, "not_found")
    assert await second.post(answer["ping_id"], LEAD) == (200, sold)
    assert await second.post(unsold_ping["ping_id"], {**LEAD, "zip": "10001"}) == (200, unsold)
    status, body = await second.post(answer["ping_id"], LEAD, key=OTHER_KEY)
    assert_error(status, body, "not_found")
    assert sum(len(v) for v in buyers.posts.values()) == posts_before, "no lead was offered again"


async def test_a_sold_lead_answers_its_seller_from_the_books(buyers: BuyerServer, exchange: ExchangeFactory) -> None:
    ex = await exchange(selling(buyers))
    answer, sold = await sold_ping(ex)
    status, lead = await ex.call("GET", f"/v1/leads/{sold['lead_id']}")
    assert status == 200, lead
    assert set(lead) == {"lead_id", "ping_id", "status", "price", "sold_at"}
    assert lead["lead_id"] == sold["lead_id"] and lead["ping_id"] == answer["ping_id"]
    assert lead["status"] == "sold" and lead["price"] == sold["price"]
    assert abs(time.time() - time.mktime(time.strptime(lead["sold_at"][:19], "%Y-%m-%dT%H:%M:%S"))
               + time.timezone) < 60
    for key, lead_id in ((OTHER_KEY, sold["lead_id"]), (None, "nope")):
        status, body = await ex.call("GET", f"/v1/leads/{lead_id}", key=key or "acme-live-key")
        assert_error(status, body, "not_found")
    status, body = await ex.call("GET", f"/v1/leads/{sold['lead_id']}", key=None)
    assert_error(status, body, "unauthorized")


async def test_retention_drops_old_traffic_and_keeps_every_sale(buyers: BuyerServer, exchange: ExchangeFactory,
                                                               tmp_path: Path) -> None:
    path = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = ManualClock()
    first = await exchange(selling(buyers, ping_ttl_s=60), clock=clock, ledger=await ledger.open(path, key=TEST_KEY))
    answer, sold = await sold_ping(first)
    unposted = await ping_ok(first)
    await first.app.shutdown()
    await first.app.cleanup()

    clock.advance(3 * DAY_S)  # past keep_days = 2; the retention pass runs as the exchange starts
    config = {**selling(buyers, ping_ttl_s=60), "ledger": {"keep_days": 2}}
    second = await exchange(config, store=MemoryStore(clock), clock=clock, ledger=await ledger.open(path, key=TEST_KEY))
    deadline = time.monotonic() + 10
    while (await second.trace(unposted["ping_id"]))[0] != 404:
        assert time.monotonic() < deadline, "the unposted ping was never dropped"
        await asyncio.sleep(0.05)
    status, trace = await second.trace(answer["ping_id"])
    assert status == 200 and trace["post"]["lead_id"] == sold["lead_id"], trace
    status, lead = await second.call("GET", f"/v1/leads/{sold['lead_id']}")
    assert status == 200 and lead["price"] == sold["price"]


async def test_with_the_store_down_a_re_post_is_answered_from_the_books(buyers: BuyerServer,
                                                                       exchange: ExchangeFactory) -> None:
    server = RedisServer().start()
    try:
        ex = await exchange(selling(buyers), store=RedisStore(server.url))
        answer, sold = await sold_ping(ex)
        server.stop()
        assert await ex.post(answer["ping_id"], LEAD) == (200, sold)
        status, trace = await ex.trace(answer["ping_id"])
        assert status == 200 and trace["post"]["lead_id"] == sold["lead_id"]
        pending = await ex.ping(PING)
        assert_error(*pending, "store_unavailable")
        assert len(buyers.posts["c1"]) == 1
    finally:
        server.remove()


async def test_a_sale_another_worker_could_not_store_never_sells_twice(buyers: BuyerServer,
                                                                      exchange: ExchangeFactory,
                                                                      tmp_path: Path) -> None:
    """Worker A sells while Redis is killed under it, and Redis comes back empty: worker B,
    on the same Redis and the same books, answers the re-post with A's sale and offers the
    lead to nobody."""
    server = RedisServer().start()
    path = f"sqlite:///{tmp_path / 'ledger.db'}"
    try:
        def accept_then_lose_redis(_: dict[str, Any]) -> Any:
            server.stop()
            return accept("buyer-1")

        buyers.script("c1", ping=bid(3.0), post=accept_then_lose_redis)
        config = base_config(buyers, {"id": "c1"}, post_timeout_ms=2000)
        a = await exchange(config, store=RedisStore(server.url), ledger=await ledger.open(path, key=TEST_KEY))
        b = await exchange(config, store=RedisStore(server.url), ledger=await ledger.open(path, key=TEST_KEY))
        answer = await ping_ok(a)
        status, sold = await a.post(answer["ping_id"], LEAD)
        assert status == 200 and sold["status"] == "sold", sold
        assert await b.post(answer["ping_id"], LEAD) == (200, sold)  # Redis down: the books answer
        server.start()  # back, empty
        assert await b.post(answer["ping_id"], LEAD) == (200, sold)  # the store forgot: the books answer
        assert len(buyers.posts["c1"]) == 1, "the lead was offered once"
    finally:
        server.remove()


async def test_a_cascade_whose_result_never_reached_the_store_never_runs_again(
        buyers: BuyerServer, exchange: ExchangeFactory, clock: ManualClock) -> None:
    """A worker took the post lock, sold and booked the sale, and died before the store got
    the result; once its lock expires, the next post is answered from the books."""
    ex = await exchange(selling(buyers), clock=clock)
    answer = await ping_ok(ex)
    record = await ex.store.get_ping(answer["ping_id"])
    assert (await ex.store.open_post(answer["ping_id"], 1.0)).acquired  # the worker that died
    sold = PostRecord(status="sold", attempts=1, price_cents=money.to_cents(answer["price"]), lead_id="L-dead",
                      offers=[CampaignOutcome(campaign_id="c1", buyer_id="b1", outcome="accepted", bid=3.0)])
    await ex.ledger.record_post(record, sold, Lead(**LEAD))
    status, body = await ex.post(answer["ping_id"], LEAD)
    assert_error(status, body, "post_in_progress")  # its lock still holds
    clock.advance(2.0)
    assert await ex.post(answer["ping_id"], LEAD) == (200, {
        "ping_id": answer["ping_id"], "status": "sold", "attempts": 1, "price": answer["price"], "lead_id": "L-dead"})
    assert not buyers.posts, "the lead was not offered again"
    assert (await ex.trace(answer["ping_id"]))[1]["post"]["lead_id"] == "L-dead"


async def test_a_full_disk_answers_ledger_unavailable_and_sells_nothing(buyers: BuyerServer,
                                                                       exchange: ExchangeFactory,
                                                                       small_fs: Path) -> None:  # noqa: F811
    ex = await exchange(selling(buyers), ledger=await ledger.open(f"sqlite:///{small_fs / 'ledger.db'}", key=TEST_KEY))
    before = await ping_ok(ex)
    filler = fill(small_fs)
    refused: tuple[int, Any] = (200, None)
    for _ in range(5000):  # what still fits in pages the file already holds is written
        refused = await ex.ping(PING)
        if refused[0] != 200:
            break
    assert_error(*refused, "ledger_unavailable")
    assert_error(*(await ex.post(before["ping_id"], LEAD)), "ledger_unavailable")
    assert_error(*(await ex.direct({**PING, "lead": LEAD})), "ledger_unavailable")
    assert not buyers.posts, "no lead was offered while the books could not hold its sale"
    filler.unlink()
    answer, sold = await sold_ping(ex)  # room again: selling resumes
    assert sold["status"] == "sold"
    status, metrics = await ex.call("GET", "/metrics", key=None)
    assert 'pingpost_refused_requests_total{code="ledger_unavailable"}' in metrics


async def test_the_backlog_gauge_is_on_the_metrics(buyers: BuyerServer, exchange: ExchangeFactory) -> None:
    ex = await exchange(selling(buyers))
    await sold_ping(ex)
    status, metrics = await ex.call("GET", "/metrics", key=None)
    assert status == 200 and "\npingpost_ledger_backlog 0.0\n" in metrics


def test_serve_refuses_a_ledger_it_cannot_open(tmp_path: Path) -> None:
    """A URL that is no ledger is one line and exit 1, before anything listens."""
    path = write_config(tmp_path, {"sellers": [{"id": "s", "api_keys": ["12345678"]}]})
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", "serve", "--config", str(path), "--port", "0",
                           "--ledger", "mysql://nowhere"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines() == [
        "pingpost: cannot open the ledger: not a ledger URL: 'mysql://nowhere' "
        "(sqlite:///PATH, postgresql://USER@HOST:PORT/DB or none)"]


async def test_redis_restarted_empty_under_post_traffic_passes_no_cap(buyers: BuyerServer, exchange: ExchangeFactory,
                                                                       tmp_path: Path) -> None:
    """Sellers ping and post from 8 connections while Redis is killed and started again
    without its data, twice: offers are in flight at each loss, the two workers recount from
    the books, and the campaigns sell exactly their caps, never more."""
    server = RedisServer().start()
    path = tmp_path / "ledger.db"
    try:
        buyers.script("c1", ping=bid(3.0), post=accept(delay=0.02))
        buyers.script("c2", ping=bid(2.0), post=accept(delay=0.02))
        config = base_config(buyers, {"id": "c1", "caps": {"daily": 25}}, {"id": "c2", "caps": {"hourly": 15}},
                             post_timeout_ms=3000)
        workers = [await exchange(config, store=RedisStore(server.url), ledger=await ledger.open(f"sqlite:///{path}", key=TEST_KEY))
                   for _ in range(2)]
        statuses: list[int] = []

        async def seller(n: int) -> None:
            for i in range(12):
                ex = workers[(n + i) % 2]
                status, answer = await ex.ping(PING)
                statuses.append(status)
                if status == 200 and answer["status"] == "bid":
                    statuses.append((await workers[(n + i + 1) % 2].post(answer["ping_id"], LEAD))[0])

        async def lose_redis() -> None:
            for _ in range(2):
                await asyncio.sleep(0.3)
                server.stop()
                server.start()

        await asyncio.gather(*(seller(n) for n in range(8)), lose_redis())
        sold = dict(rows(path, "SELECT campaign_id, count(*) FROM sales GROUP BY campaign_id"))
        assert sold == {"c1": 25, "c2": 15}, (sold, sorted(set(statuses)))
        assert set(statuses) <= {200, 404, 503}, statuses
    finally:
        server.remove()


async def test_a_post_that_waits_for_refilled_counts_keeps_its_deadline(buyers: BuyerServer, exchange: ExchangeFactory,
                                                                        tmp_path: Path) -> None:
    """Redis lost a capped campaign's counts (a Cluster node back empty): the refill's counts
    settle for 0.75 s before a new reservation counts. A post whose deadline is sooner offers
    the lead to no one and answers by its deadline; once they settled, the lead sells."""
    server = RedisServer().start()
    try:
        buyers.script("c1", ping=bid(3.0), post=accept())
        config = base_config(buyers, {"id": "c1", "caps": {"daily": 25}}, post_timeout_ms=300)
        ex = await exchange(config, store=RedisStore(server.url),
                            ledger=await ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", key=TEST_KEY))
        first, second = await ping_ok(ex), await ping_ok(ex)
        await ex.store.refresh()  # a worker that has seen the counts
        cli(server.port, "DEL", "pp:{camp:c1}:primed")
        started = time.perf_counter()
        status, result = await ex.post(first["ping_id"], LEAD)
        waited = time.perf_counter() - started
        assert (status, result["status"], result["attempts"]) == (200, "unsold", 0), result
        assert waited < 0.7, "answered by the post's deadline, not after the counts settled"
        assert (await ex.trace(first["ping_id"]))[1]["post"]["offers"][0]["outcome"] == "skipped:post_deadline"
        assert not buyers.posts
        await asyncio.sleep(0.8)
        status, result = await ex.post(second["ping_id"], LEAD)
        assert (status, result["status"]) == (200, "sold"), result
    finally:
        server.remove()
