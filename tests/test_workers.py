"""``pingpost serve --workers N --redis URL`` as an operator runs it: real processes on
real ports, a real redis-server, buyers on a real port in the test.

"sup" is a supervisor with two workers sharing one port (SO_REUSEPORT); "host" is a separate
``pingpost serve --redis`` process standing for another host on the same Redis. Requests go
out on a new connection each (``force_close``), so the kernel spreads them over the workers.
Which worker served a connection is read from the kernel: the worker process that holds the
server side of that TCP connection.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import psutil
import pytest

from pingpost.launch import free_port
from tests.helpers_process import Served, run_cli, write_config
from tests.redis_support import RedisServer
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, PING, SELLER_KEY, base_config

VIEW_DELAY_S = 0.25 + 0.35
"""How soon another process must see a bench: the documented 250 ms, plus slack for processes."""

SLACK_S = 1.0
"""What an answer may take beyond its deadline on a loaded two-core machine (a hang takes far longer)."""


# Processes ----------------------------------------------------------------------------------


@pytest.fixture
async def launch(tmp_path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """``await launch(config, redis_url, workers=1)``: ``pingpost serve --port 0``; all stopped after."""
    started: list[Served] = []

    async def start(config: dict[str, Any], redis_url: str, workers: int = 1) -> Served:
        flags = ["--redis", redis_url, "--port", "0", "--workers", str(workers)]  # the last --port wins
        served = await Served.start(tmp_path, config, *flags)
        served.port = int(served.listening.rsplit(":", 1)[1])
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.returncode is None:
            children = workers_of(served)
            served.signal(signal.SIGTERM)
            try:
                await served.wait(10)
            except asyncio.TimeoutError:
                await served.kill()
            for child in children:
                if child.is_running():
                    child.kill()
        await served.kill()  # stops its output readers


def workers_of(served: Served) -> list[psutil.Process]:
    return psutil.Process(served.process.pid).children()


def listens(worker: psutil.Process, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in worker.net_connections("tcp"))
    except psutil.NoSuchProcess:
        return False


async def served_by(served: Served, connections: int = 16) -> Counter[int]:
    """Open ``connections`` at once, GET /healthz on each (all must be 200), and count, per
    worker pid, the connections whose server side that worker holds."""
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", served.port) for _ in range(connections)))
    try:
        for _, writer in opened:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: exchange\r\n\r\n")
        heads = await asyncio.wait_for(asyncio.gather(*(r.readuntil(b"\r\n\r\n") for r, _ in opened)), 10)
        assert all(h.startswith(b"HTTP/1.1 200 ") for h in heads), heads
        clients = {w.get_extra_info("sockname")[1] for _, w in opened}
        held: Counter[int] = Counter()
        for worker in workers_of(served):
            held.update(worker.pid for c in worker.net_connections("tcp")
                        if c.raddr and c.laddr.port == served.port and c.raddr.port in clients)
        assert sum(held.values()) == connections, held
        return held
    finally:
        for _, writer in opened:
            writer.close()


async def until(check: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# Seller calls -------------------------------------------------------------------------------


@dataclass
class Call:
    port: int
    path: str
    started: float
    elapsed: float
    status: int | None  # None: no HTTP answer at all (refused, reset, or past the client's limit)
    body: Any


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     headers={"Authorization": f"Bearer {SELLER_KEY}"}) as s:
        yield s


async def call(session: aiohttp.ClientSession, port: int, path: str, payload: Any = None,
               limit_s: float = 10.0) -> Call:
    started = time.monotonic()
    try:
        async with session.request("POST" if payload is not None else "GET", f"http://127.0.0.1:{port}{path}",
                                   json=payload, timeout=aiohttp.ClientTimeout(total=limit_s)) as response:
            status, body = response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        status, body = None, repr(exc)
    return Call(port, path, started, time.monotonic() - started, status, body)


async def ping(session: aiohttp.ClientSession, port: int, **fields: Any) -> dict[str, Any]:
    done = await call(session, port, "/v1/ping", {**PING, **fields})
    assert done.status == 200, done
    return done.body


async def post(session: aiohttp.ClientSession, port: int, ping_id: str) -> dict[str, Any]:
    done = await call(session, port, "/v1/post", {"ping_id": ping_id, "lead": LEAD})
    assert done.status == 200, done
    return done.body


async def outcome(session: aiohttp.ClientSession, port: int, ping_id: str, campaign_id: str) -> str:
    done = await call(session, port, f"/v1/pings/{ping_id}")
    assert done.status == 200, done
    return next(c["outcome"] for c in done.body["campaigns"] if c["campaign_id"] == campaign_id)


# Tests ----------------------------------------------------------------------------------------


async def test_workers_share_the_port_and_a_killed_worker_is_replaced(buyers, launch, redis_server):
    redis_server.flush()
    sup = await launch(base_config(buyers, {"id": "c1", "ping_url": None, "fixed_price": 2}), redis_server.url,
                       workers=2)
    assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+", sup.listening) and sup.port != 0
    first = workers_of(sup)
    assert len(first) == 2 and all(listens(w, sup.port) for w in first)
    assert set(await served_by(sup)) == {w.pid for w in first}, "both workers answer on the one port"

    victim, survivor = first
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait, 10)
    assert set(await served_by(sup, 8)) == {survivor.pid}, "the other worker goes on alone meanwhile"

    await until(lambda: len(workers_of(sup)) == 2 and all(listens(w, sup.port) for w in workers_of(sup)),
                "the supervisor to start a new worker")
    second = {w.pid for w in workers_of(sup)}
    assert survivor.pid in second and victim.pid not in second
    assert set(await served_by(sup)) == second
    exits = [e for e in sup.log_events() if e.get("event") == "worker_exit"]
    assert [e["code"] for e in exits] == [-signal.SIGKILL]

    sup.signal(signal.SIGTERM)
    assert await sup.wait() == 0
    assert [line for line in sup.stdout if line.startswith("listening on")] == [sup.listening], \
        "the supervisor announces the port once, not again for a restarted worker"


async def test_another_host_shares_pings_caps_and_benches(buyers, launch, session, redis_server):
    redis_server.flush()
    buyers.script("c1", ping=bid(2.5), post=accept())
    buyers.script("capped", ping=bid(2), post=accept(delay=0.05))
    buyers.script("slow", ping=bid(5, delay=0.5))
    config = base_config(buyers, {"id": "c1"}, {"id": "capped", "vertical": "capped", "caps": {"daily": 5}},
                         {"id": "slow", "vertical": "slow", "timeout_ms": 100},
                         {"id": "fast", "vertical": "slow", "buyer": "b2", "ping_url": None, "fixed_price": 1},
                         bench_after_timeouts=2, bench_window_s=60, bench_duration_s=30)
    sup, host = await asyncio.gather(launch(config, redis_server.url, workers=2), launch(config, redis_server.url))

    # A ping answered by one is posted to the other, either way; a re-post anywhere gives the first body.
    for pinged, posted in ((sup, host), (host, sup)):
        answer = await ping(session, pinged.port)
        sold = await post(session, posted.port, answer["ping_id"])
        assert sold["status"] == "sold" and sold["price"] == 2.5
        for again in (sup, host):
            assert await post(session, again.port, answer["ping_id"]) == sold
        trace = await call(session, pinged.port, f"/v1/pings/{answer['ping_id']}")
        assert trace.body["post"]["lead_id"] == sold["lead_id"]
    assert len(buyers.posts["c1"]) == 2

    # Concurrent posts through both processes (and both workers) never pass the cap.
    pings = await asyncio.gather(*(ping(session, p.port, vertical="capped") for p in (sup, host) * 10))
    assert all(p["status"] == "bid" for p in pings)
    results = await asyncio.gather(*(post(session, p.port, answer["ping_id"])
                                     for p, answer in zip((host, sup) * 10, pings)))
    assert Counter(r["status"] for r in results) == {"sold": 5, "unsold": 15}
    assert len(buyers.posts["capped"]) == 5, "no buyer is offered a lead past its cap"

    # Two timeouts through the supervisor bench the campaign; the other host stops pinging it.
    for _ in range(2):
        await ping(session, sup.port, vertical="slow")
    benched = time.monotonic()
    while await outcome(session, host.port, (await ping(session, host.port, vertical="slow"))["ping_id"],
                        "slow") != "benched":
        assert time.monotonic() - benched < VIEW_DELAY_S, "the other host did not see the bench in time"
    await asyncio.sleep(max(0.0, benched + VIEW_DELAY_S - time.monotonic()))  # every worker has refreshed
    seen = len(buyers.pings["slow"])
    answers = await asyncio.gather(*(ping(session, p.port, vertical="slow") for p in (sup, host) * 4))
    assert all(a["price"] == 1 for a in answers)
    assert len(buyers.pings["slow"]) == seen, "no worker of either process pings a benched campaign"


async def test_sigterm_drains_every_worker_and_exits_zero(buyers, launch, session, redis_server):
    redis_server.flush()
    buyers.script("c1", ping=bid(2), post=accept(delay=1.0))
    sup = await launch(base_config(buyers, {"id": "c1"}), redis_server.url, workers=2)
    pids = [w.pid for w in workers_of(sup)]
    answer = await ping(session, sup.port)
    in_flight = asyncio.ensure_future(post(session, sup.port, answer["ping_id"]))
    await until(lambda: bool(buyers.posts.get("c1")), "the post to reach the buyer")
    sup.signal(signal.SIGTERM)
    stopped = time.monotonic()
    while (await call(session, sup.port, "/v1/ping", PING)).status == 200:  # refused or 503 once it drains
        assert time.monotonic() - stopped < 2, "new pings still get a 200 long after SIGTERM"
    sold = await in_flight
    assert sold["status"] == "sold", "the post in flight finished"
    assert await sup.wait() == 0
    assert not any(psutil.pid_exists(pid) for pid in pids)


@pytest.mark.parametrize("workers", [1, 2])
async def test_unreachable_redis_is_a_clear_error(tmp_path, buyers, workers):
    path = write_config(tmp_path, base_config(buyers, {"id": "c1"}))
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    code, out, err = await run_cli("serve", "--config", str(path), "--port", "0", "--workers", str(workers),
                                   "--redis", url)
    assert code != 0 and "listening" not in out
    assert "cannot reach" in err and url in err and "Traceback" not in err, err
    assert time.monotonic() - started < 5


async def test_redis_killed_and_restarted_mid_traffic(buyers, launch, session):
    cap, auction_s, post_s = 15, 1.0, 2.0
    buyers.script("c1", ping=bid(2), post=accept(delay=0.02))
    config = base_config(buyers, {"id": "c1", "timeout_ms": 300, "post_timeout_ms": 1000, "caps": {"daily": cap}},
                         auction_timeout_ms=int(auction_s * 1000), post_timeout_ms=int(post_s * 1000))
    # Persisted on every write, so a restart loses no count: what the test checks is the exchange.
    redis = RedisServer(extra=("--appendonly", "yes", "--appendfsync", "always"))
    await asyncio.to_thread(redis.start)
    try:
        sup, host = await asyncio.gather(launch(config, redis.url, workers=2), launch(config, redis.url))
        calls: list[Call] = []
        stop = asyncio.Event()

        async def seller(turn: int) -> None:
            """Ping on one process, post on the other, for ever; pause a moment after a refusal."""
            while not stop.is_set():
                turn += 1
                pinged, posted = (sup, host) if turn % 2 else (host, sup)
                done = await call(session, pinged.port, "/v1/ping", PING, auction_s + 5)
                calls.append(done)
                if done.status == 200 and done.body["status"] == "bid":
                    calls.append(await call(session, posted.port, "/v1/post",
                                            {"ping_id": done.body["ping_id"], "lead": LEAD}, post_s + 5))
                elif done.status != 200:
                    await asyncio.sleep(0.02)

        def answered(after: float, status: str) -> list[Call]:
            """200s started after ``after`` whose body says ``status`` (sold, no_bid...)."""
            return [c for c in calls if c.started > after and c.status == 200 and c.body["status"] == status]

        def refused(after: float) -> list[Call]:
            return [c for c in calls if c.started > after and c.status == 503]

        sellers = [asyncio.create_task(seller(n)) for n in range(4)]
        try:
            await until(lambda: len(answered(0, "sold")) >= 3, "sales before the outage")
            await asyncio.to_thread(redis.stop)
            killed = time.monotonic()
            # Long enough for several failed view refreshes in every worker, and 503s from both processes.
            await until(lambda: {c.port for c in refused(killed + 0.6)} == {sup.port, host.port},
                        "503s from both processes")
            await asyncio.to_thread(redis.start)
            back = time.monotonic()
            await until(lambda: bool(answered(back, "sold")), "sales after Redis returned")
            await until(lambda: bool(answered(back, "no_bid")), "the cap to be reached")
        finally:
            stop.set()
            await asyncio.gather(*sellers)
    finally:
        await asyncio.to_thread(redis.remove)

    assert [c for c in calls if c.status is None] == [], "every request got an answer"
    assert {c.status for c in calls} <= {200, 503}
    refusals = [c for c in calls if c.status == 503]
    assert {c.body["error"]["code"] for c in refusals} == {"store_unavailable"}
    assert all(c.started > killed - 0.1 for c in refusals), "no refusal before the outage"
    for c in calls:
        deadline = auction_s if c.path == "/v1/ping" else post_s
        assert c.elapsed < deadline + SLACK_S, c
    sold = [c for c in calls if c.status == 200 and c.body.get("status") == "sold"]
    assert len(sold) <= cap
    accepted = buyers.posts["c1"]
    assert len(accepted) <= cap, f"{len(accepted)} leads delivered past a daily cap of {cap}"


async def test_sigterm_while_a_worker_restarts_still_drains_and_exits_zero(buyers, launch, redis_server):
    """The new worker is signalled even if it is still starting, and one stopped before its
    handlers exist (nothing in flight) is not a failure."""
    redis_server.flush()
    sup = await launch(base_config(buyers, {"id": "c1", "ping_url": None, "fixed_price": 2}), redis_server.url,
                       workers=2)
    victim = workers_of(sup)[0]
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait, 10)
    await until(lambda: len(workers_of(sup)) == 2, "the supervisor to start a new worker")
    sup.signal(signal.SIGTERM)  # the new worker is still importing, before its handlers
    assert await asyncio.wait_for(sup.wait(), 20) == 0
