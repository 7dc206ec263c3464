"""The running exchange and its books, as processes: what a seller was answered is in the books.

Real ``pingpost serve`` processes (one, or a supervisor with two workers on one Redis),
real buyers on a real port (``BuyerServer``), a real SQLite file and a real PostgreSQL.
A seller keeps 24 pings, posts and direct posts in flight while the exchange is SIGKILLed
(a worker, or the whole host) and started again, or while PostgreSQL is stopped, or
across two hosts sharing Redis and one PostgreSQL. Then the books are read straight from
the database: every ping answered 200 is in ``pings`` at the price told, every sale
answered is in ``sales`` at the price told, every answer given for a post is the one the
books hold, and nothing is there twice.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import psutil
import pytest

from pingpost import ledger, money
from tests.helpers_process import Served
from tests.pg_support import PostgresServer, postgres_server, postgres_url  # noqa: F401
from tests.redis_support import RedisServer
from tests.support.buyers import BuyerServer, Reply, accept, bid, reject
from tests.support.exchange import LEAD, PING, SELLER_KEY, base_config
from tests.test_ledger import drained
from tests.support.keys import TEST_KEY

IN_FLIGHT = 24
#: Of the seller's requests: direct posts; of the pings priced: the ones then posted.
DIRECT_SHARE = 0.15
POST_SHARE = 0.8
REVENUE_SHARE = 0.7
#: Answers that must come back between a start and the next kill, so every kill hits traffic.
ANSWERS_PER_ROUND = 40
DEADLINE_S = 30.0


# The buyers ----------------------------------------------------------------------------------


def bid_cents(campaign_id: str, ping_id: str) -> int:
    """Every ping gets its own bids (so a price told is that ping's), c1 above c2."""
    base = 150 + int(ping_id[-4:], 16) % 300
    return base if campaign_id == "c1" else base - 37


def buyer_lead_id(campaign_id: str, ping_id: str) -> str:
    """The id a buyer gives the lead it takes: a sale in the books names it, so the books
    can only hold a sale that buyer accepted, for that ping."""
    return f"bl-{campaign_id}-{ping_id}"


def buyer(campaign_id: str) -> tuple[Callable[[dict[str, Any]], Reply], Callable[[dict[str, Any]], Reply]]:
    """Its ping and post scripts: c1 turns down a quarter of the leads (the cascade goes on
    to c2), c2 a sixteenth (so some posts end unsold)."""
    refuses = "0123" if campaign_id == "c1" else "0"

    def on_ping(body: dict[str, Any]) -> Reply:
        return bid(bid_cents(campaign_id, body["ping_id"]) / 100)

    def on_post(body: dict[str, Any]) -> Reply:
        ping_id = body["ping_id"]
        return reject() if ping_id[-1] in refuses else accept(buyer_lead_id(campaign_id, ping_id))

    return on_ping, on_post


def exchange_config(buyers: BuyerServer) -> dict[str, Any]:
    for campaign_id in ("c1", "c2"):
        on_ping, on_post = buyer(campaign_id)
        buyers.script(campaign_id, ping=on_ping, post=on_post)
    config = base_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}, post_timeout_ms=2000)
    config["sellers"][0]["revenue_share"] = REVENUE_SHARE
    return config


# The hosts -----------------------------------------------------------------------------------


async def until(check: Callable[[], bool], what: str, within_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Host:
    """One ``pingpost serve`` in its own folder (with ``--workers``, a supervisor and its
    workers), SIGKILLed and started again in place. ``up`` is set while it listens; each
    start is a new ``generation`` (a memory store starts empty)."""

    def __init__(self, folder: Path, config: dict[str, Any], *flags: str) -> None:
        folder.mkdir(exist_ok=True)
        self.folder = folder
        self.config = config
        self.flags = ("--log-level", "warning", *flags)
        self.served: Served | None = None
        self.runs: list[Served] = []
        self.generation = 0
        self.up = asyncio.Event()
        self.memory_store = "--redis" not in flags

    async def start(self) -> None:
        self.served = await Served.start(self.folder, self.config, *self.flags)
        self.runs.append(self.served)
        self.generation += 1
        self.up.set()

    def events(self) -> list[dict[str, Any]]:
        """The log lines of every start so far (warnings and worse)."""
        return [event for served in self.runs for event in served.log_events()]

    @property
    def port(self) -> int:
        assert self.served is not None
        return self.served.port

    def workers(self) -> list[psutil.Process]:
        """The supervisor's live workers (a killed one is a zombie until it is reaped)."""
        assert self.served is not None
        try:
            children = psutil.Process(self.served.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        live = []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    live.append(child)
            except psutil.NoSuchProcess:
                continue
        return live

    def _listens(self, worker: psutil.Process) -> bool:
        try:
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                       for c in worker.net_connections("tcp"))
        except psutil.NoSuchProcess:
            return False

    async def kill(self) -> None:
        """SIGKILL the whole host: the supervisor first (so it restarts nothing), then its workers."""
        assert self.served is not None
        self.up.clear()
        workers = self.workers()
        self.served.signal(signal.SIGKILL)
        for worker in workers:
            try:
                worker.kill()
            except psutil.NoSuchProcess:
                pass
        await asyncio.to_thread(psutil.wait_procs, workers, DEADLINE_S)
        await self.served.kill()  # reaps it and reads its output to the end

    async def kill_worker(self) -> None:
        """SIGKILL one worker; returns once the supervisor has a new one listening beside the other."""
        workers = self.workers()
        assert len(workers) == 2, workers
        victim = random.choice(workers)
        victim.kill()

        def replaced() -> bool:
            now = self.workers()
            return len(now) == 2 and victim.pid not in {w.pid for w in now} and all(map(self._listens, now))

        await until(replaced, "the supervisor to replace the killed worker")

    async def stop(self) -> None:
        """SIGTERM: in-flight work finishes, the books are closed (PostgreSQL: a last forward)."""
        assert self.served is not None
        self.up.clear()
        self.served.signal(signal.SIGTERM)
        assert await self.served.wait(DEADLINE_S) == 0, self.served.stderr[-20:]

    async def remove(self) -> None:
        if self.served is not None and self.served.process.poll() is None:
            await self.kill()


@pytest.fixture
async def hosts() -> AsyncIterator[Callable[..., Awaitable[Host]]]:
    """``await hosts(folder, config, *flags)``: a started Host; all killed after the test."""
    started: list[Host] = []

    async def start(folder: Path, config: dict[str, Any], *flags: str) -> Host:
        host = Host(folder, config, *flags)
        started.append(host)
        await host.start()
        return host

    yield start
    for host in started:
        await host.remove()


# The seller ----------------------------------------------------------------------------------


@dataclass
class Call:
    host: int
    path: str
    status: int | None  # None: no answer (the process died under it)
    body: Any


@dataclass
class Sellers:
    """``IN_FLIGHT`` sellers at once, each pinging, posting or posting direct on a random host,
    and what they were told: the books must hold every answer given."""

    hosts: list[Host]
    session: aiohttp.ClientSession
    #: Pings answered 200: ping_id -> the price told, in cents (None: no bid).
    pings: dict[str, int | None] = field(default_factory=dict)
    #: Where and when each ping was answered: (host, generation).
    pinged_on: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Posts and direct posts answered 200: ping_id -> the answer.
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Which host answered each post first.
    posted_on: dict[str, int] = field(default_factory=dict)
    direct: set[str] = field(default_factory=set)
    #: Posts that got no answer, to be posted again.
    cut_posts: set[str] = field(default_factory=set)
    #: Every ping whose post was ever cut short (its cascade may have run in part).
    ever_cut: set[str] = field(default_factory=set)
    cut: int = 0
    statuses: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    unexpected: list[Call] = field(default_factory=list)
    answered: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._seller()) for _ in range(IN_FLIGHT)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _seller(self) -> None:
        while not self._stop.is_set():
            host = random.randrange(len(self.hosts))
            await self.hosts[host].up.wait()
            if random.random() < DIRECT_SHARE:
                await self._direct(host)
                continue
            ping_id = await self._ping(host)
            if ping_id is not None and self.pings[ping_id] is not None and random.random() < POST_SHARE:
                await self.post(random.randrange(len(self.hosts)), ping_id)

    async def _call(self, host: int, path: str, payload: dict[str, Any]) -> Call:
        url = f"http://127.0.0.1:{self.hosts[host].port}{path}"
        try:
            async with self.session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=DEADLINE_S)) as answer:
                done = Call(host, path, answer.status, await answer.json(content_type=None))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            done = Call(host, path, None, repr(exc))
            self.cut += 1
        self.statuses[(path, done.status)] += 1
        if done.status == 200:
            self.answered += 1
        elif done.status is None:
            await asyncio.sleep(0.01)  # the host is going down: do not spin
        return done

    async def _ping(self, host: int) -> str | None:
        done = await self._call(host, "/v1/ping", PING)
        if done.status == 200:
            ping_id: str = done.body["ping_id"]
            price = done.body.get("price")
            self.pings[ping_id] = None if price is None else money.to_cents(price)
            self.pinged_on[ping_id] = (host, self.hosts[host].generation)
            return ping_id
        if done.status is not None:
            self.unexpected.append(done)
        return None

    async def _direct(self, host: int) -> None:
        done = await self._call(host, "/v1/leads", {**PING, "lead": LEAD})
        if done.status == 200:
            self.direct.add(done.body["ping_id"])
            self._answered_post(host, done.body["ping_id"], done)
        elif done.status is not None:
            self.unexpected.append(done)

    async def post(self, host: int, ping_id: str, again: bool = False) -> None:
        """A post, or a post again: a post once answered must be answered the same every
        time; one cut short may find it finished (from the store or the books), still
        locked by the cascade that died (409), or, on a host that started again with an
        empty memory store and no record of it in the books, unknown (404)."""
        done = await self._call(host, "/v1/post", {"ping_id": ping_id, "lead": LEAD})
        if done.status == 200:
            self._answered_post(host, ping_id, done)
        elif done.status is None or self._allowed_refusal(host, ping_id, done, again):
            self.cut_posts.add(ping_id)
            self.ever_cut.add(ping_id)
        else:
            self.unexpected.append(done)

    def _allowed_refusal(self, host: int, ping_id: str, done: Call, again: bool) -> bool:
        code = done.body.get("error", {}).get("code") if isinstance(done.body, dict) else None
        if ping_id in self.posts:
            return False
        if code == "post_in_progress":
            return again
        pinged = self.pinged_on.get(ping_id)
        forgotten = self.hosts[host].memory_store and pinged != (host, self.hosts[host].generation)
        return code == "not_found" and forgotten

    def _answered_post(self, host: int, ping_id: str, done: Call) -> None:
        self.cut_posts.discard(ping_id)
        earlier = self.posts.setdefault(ping_id, done.body)
        self.posted_on.setdefault(ping_id, host)
        if earlier != done.body:
            self.unexpected.append(done)

    async def settle(self) -> None:
        """Post the cut ones again until none is locked any more: once a dead cascade's lock
        expires, the books answer the ones it finished, and the others are posted anew."""
        deadline = time.monotonic() + DEADLINE_S
        while self.cut_posts:
            assert time.monotonic() < deadline, f"still not answered: {sorted(self.cut_posts)[:5]}"
            await self.post_again(sample=0)
            await asyncio.sleep(0.5)

    async def post_again(self, sample: int) -> None:
        """Every post cut short, and a sample of those answered, posted again on any host."""
        answered = random.sample(sorted(self.posts), min(sample, len(self.posts)))
        await asyncio.gather(*(self.post(random.randrange(len(self.hosts)), ping_id, again=True)
                               for ping_id in [*sorted(self.cut_posts), *answered]))

    def check_answers(self, cuts_allowed: bool) -> None:
        """Nothing but what this traffic may be answered (never a 5xx), nothing logged as an
        error; no answer only where a process was killed."""
        assert not self.unexpected, self.unexpected[:5]
        errors = [event for host in self.hosts for event in host.events() if event["level"] not in ("warning", "info")]
        assert not errors, errors[:5]
        assert all(status is None or status < 500 for _, status in self.statuses), self.statuses
        if not cuts_allowed:
            assert self.cut == 0, self.statuses
        assert self.pings and any(body["status"] == "sold" for body in self.posts.values()), self.statuses
        assert any(body["status"] == "unsold" for body in self.posts.values()), self.statuses


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A new connection per request, so the kernel spreads them over a host's workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                     headers={"Authorization": f"Bearer {SELLER_KEY}"}) as s:
        yield s


# The books -----------------------------------------------------------------------------------


async def select(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Rows straight from the ledger's database, past every exchange process."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return list(conn.execute(statement))
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return [tuple(record) for record in await pg.fetch(statement)]
    finally:
        await pg.close()


async def drain(url: str, journal: Path) -> None:
    """Forward what a host's journal still holds into PostgreSQL."""
    books = await ledger.open(url, journal=journal, key=TEST_KEY)
    try:
        await drained(books, within_s=60)
    finally:
        await books.close()


def check_offers(told: Sellers, buyers: BuyerServer) -> None:
    """No cascade ran twice: a post answered and never cut short offered its lead to the
    buyers exactly ``attempts`` times, however often it was posted again (the store or the
    books answered); one cut short at least that often."""
    offered = Counter(received.body["ping_id"] for log in buyers.posts.values() for received in log)
    wrong = [(ping_id, answer["attempts"], offered[ping_id]) for ping_id, answer in told.posts.items()
             if offered[ping_id] != answer["attempts"] and (ping_id not in told.ever_cut
                                                            or offered[ping_id] < answer["attempts"])]
    assert not wrong, f"{len(wrong)} leads offered other than their answer says: {wrong[:5]}"


async def check_books(url: str, told: Sellers) -> None:
    """The books hold every answer the sellers got, at the price told, each once."""
    for table, keys in (("pings", ("ping_id",)), ("posts", ("ping_id",)), ("sales", ("lead_id", "ping_id")),
                        ("lead_data", ("lead_id",))):
        for key in keys:
            [(rows, distinct)] = await select(url, f"SELECT count(*), count(DISTINCT {key}) FROM {table}")
            assert rows == distinct, f"{table}.{key}: {rows} rows, {distinct} distinct"

    pings = {ping_id: cents for ping_id, cents in await select(url, "SELECT ping_id, price_cents FROM pings")}
    wrong = {ping_id: (cents, pings.get(ping_id, "missing")) for ping_id, cents in told.pings.items()
             if pings.get(ping_id, "missing") != cents}
    assert not wrong, f"{len(wrong)} pings answered but not in the books as told: {list(wrong.items())[:5]}"
    missing = told.direct - set(pings)
    assert not missing, f"direct posts answered, their pings not in the books: {sorted(missing)[:5]}"

    posts = {ping_id: (status, lead_id) for ping_id, status, lead_id in await select(
        url, "SELECT ping_id, status, lead_id FROM posts")}
    sales = {lead_id: (ping_id, cents) for lead_id, ping_id, cents in await select(
        url, "SELECT lead_id, ping_id, seller_price_cents FROM sales")}
    sold_pings = {ping_id for ping_id, _ in sales.values()}
    wrong_posts: list[Any] = []
    for ping_id, answer in told.posts.items():
        if answer["status"] == "sold":
            expected = (ping_id, money.to_cents(answer["price"]))
            if sales.get(answer["lead_id"]) != expected or posts.get(ping_id) != ("sold", answer["lead_id"]):
                wrong_posts.append((answer, sales.get(answer["lead_id"]), posts.get(ping_id)))
        elif posts.get(ping_id, ("missing",))[0] != "unsold" or ping_id in sold_pings:
            wrong_posts.append((answer, posts.get(ping_id)))
    assert not wrong_posts, f"{len(wrong_posts)} posts answered but not in the books as told: {wrong_posts[:5]}"

    # Every sale the books hold is one a buyer accepted, for that ping, and its post says so.
    strays = [row for row in await select(url, "SELECT s.lead_id, s.ping_id, s.campaign_id, s.buyer_lead_id, "
                                               "p.status, p.lead_id FROM sales s LEFT JOIN posts p USING (ping_id)")
              if row[3] != buyer_lead_id(row[2], row[1]) or row[4:] != ("sold", row[0])]
    assert not strays, strays[:5]


# SIGKILL under load --------------------------------------------------------------------------


@dataclass
class Books:
    """The books a host keeps: their URL, and the host's journal (used with PostgreSQL)."""

    url: str
    journal: Path

    @property
    def postgres(self) -> bool:
        return not self.url.startswith("sqlite:")

    def flags(self) -> tuple[str, ...]:
        return ("--ledger", self.url, "--ledger-journal", str(self.journal))


@pytest.fixture(params=["sqlite", "postgresql"])
def books(request: pytest.FixtureRequest, tmp_path: Path) -> Books:
    url = (f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    return Books(url, tmp_path / "journal.db")


async def traffic(told: Sellers, answers: int) -> None:
    """Until ``answers`` more answers came back (the load runs), then a random moment more."""
    target = told.answered + answers
    await until(lambda: told.answered >= target, f"{answers} answers")
    await asyncio.sleep(random.uniform(0.05, 1.0))


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_sigkill_under_load_loses_no_answer(workers: int, books: Books, buyers: BuyerServer,
                                                 redis_server: RedisServer, session: aiohttp.ClientSession,
                                                 hosts: Callable[..., Awaitable[Host]], tmp_path: Path) -> None:
    """One process (memory store) SIGKILLed three times; or two workers on Redis, a worker
    SIGKILLed three times and then the whole host. Each time at a random moment of the
    traffic, and started again; then every cut post and a sample of the answered ones are
    posted again. The books hold every answer given, as given."""
    flags = books.flags()
    if workers > 1:
        redis_server.flush()
        flags += ("--workers", str(workers), "--redis", redis_server.url)
    host = await hosts(tmp_path / "host", exchange_config(buyers), *flags)
    told = Sellers([host], session)
    told.start()
    try:
        for round_ in range(3 if workers == 1 else 4):
            await traffic(told, ANSWERS_PER_ROUND)
            if workers > 1 and round_ < 3:
                await host.kill_worker()
            else:
                await host.kill()
                await host.start()
            await told.post_again(sample=20)
        await traffic(told, ANSWERS_PER_ROUND)
    finally:
        await told.stop()
    await told.post_again(sample=50)
    if workers > 1:
        await told.settle()  # Redis kept every ping: each cut post ends answered
    await host.stop()
    told.check_answers(cuts_allowed=True)
    assert told.cut > 0, "the kills cut no request in flight"
    check_offers(told, buyers)
    if books.postgres:
        await drain(books.url, books.journal)
    await check_books(books.url, told)


# PostgreSQL stopped under traffic ------------------------------------------------------------

_BACKLOG = re.compile(r"^pingpost_ledger_backlog (\S+)$", re.MULTILINE)


async def backlog(session: aiohttp.ClientSession, host: Host) -> float:
    async with session.get(f"http://127.0.0.1:{host.port}/metrics") as answer:
        assert answer.status == 200
        found = _BACKLOG.search(await answer.text())
    assert found is not None
    return float(found.group(1))


async def test_postgresql_stopped_under_traffic_costs_no_answer(postgres_server: PostgresServer,  # noqa: F811
                                                               postgres_url: str,  # noqa: F811
                                                               buyers: BuyerServer, session: aiohttp.ClientSession,
                                                               hosts: Callable[..., Awaitable[Host]],
                                                               tmp_path: Path) -> None:
    """PostgreSQL stopped for 3 s and started again while the sellers keep going: not one
    5xx, the backlog gauge rises while it is down and is back to 0 after, and everything
    answered is in PostgreSQL once."""
    journal = tmp_path / "journal.db"
    host = await hosts(tmp_path / "host", exchange_config(buyers), "--ledger", postgres_url,
                       "--ledger-journal", str(journal))
    told = Sellers([host], session)
    told.start()
    try:
        await traffic(told, ANSWERS_PER_ROUND)
        await asyncio.to_thread(postgres_server.stop)
        try:
            before = told.answered
            seen: list[float] = []
            outage_ends = time.monotonic() + 3.0
            while time.monotonic() < outage_ends:
                seen.append(await backlog(session, host))
                await asyncio.sleep(0.1)
            assert told.answered > before, "nothing was answered while PostgreSQL was down"
            assert max(seen) > 0, seen
        finally:
            await asyncio.to_thread(postgres_server.start)
        await traffic(told, ANSWERS_PER_ROUND)
    finally:
        await told.stop()
    deadline = time.monotonic() + DEADLINE_S
    while await backlog(session, host) > 0:
        assert time.monotonic() < deadline, "the backlog never went back to 0"
        await asyncio.sleep(0.1)
    await host.stop()
    told.check_answers(cuts_allowed=False)
    check_offers(told, buyers)
    outage = [event for event in host.events() if event.get("event") == "ledger" and event["level"] == "warning"]
    assert outage and outage[0]["backlog"] > 0, host.events()  # the host saw PostgreSQL go, and kept selling
    assert (await select(f"sqlite:///{journal}", "SELECT count(*) FROM entries")) == [(0,)]
    await check_books(postgres_url, told)


# Two hosts, one PostgreSQL -------------------------------------------------------------------


async def test_two_hosts_keep_one_set_of_books(postgres_url: str, buyers: BuyerServer,  # noqa: F811
                                               redis_server: RedisServer, session: aiohttp.ClientSession,
                                               hosts: Callable[..., Awaitable[Host]], tmp_path: Path) -> None:
    """Two hosts on one Redis and one PostgreSQL, each with its own journal: a ping answered
    by one may be posted on the other, a post answered by one is answered the same by the
    other, and both hosts' records are in PostgreSQL, once."""
    redis_server.flush()
    config = exchange_config(buyers)
    two = [await hosts(tmp_path / name, config, "--redis", redis_server.url, "--ledger", postgres_url,
                       "--ledger-journal", str(tmp_path / name / "journal.db")) for name in ("a", "b")]
    told = Sellers(two, session)
    told.start()
    try:
        await traffic(told, 6 * ANSWERS_PER_ROUND)
    finally:
        await told.stop()
    await told.post_again(sample=100)
    for each in two:
        await each.stop()
    told.check_answers(cuts_allowed=False)
    check_offers(told, buyers)
    crossed = [ping_id for ping_id, host in told.posted_on.items()
               if ping_id in told.pinged_on and told.pinged_on[ping_id][0] != host]
    assert crossed, "no ping was posted on the other host"
    for number in (0, 1):
        assert any(where == number for where, _ in told.pinged_on.values()), f"host {number} answered no ping"
    for name in ("a", "b"):
        await drain(postgres_url, tmp_path / name / "journal.db")
    await check_books(postgres_url, told)
    # One ledger: what host a pinged and host b posted is one row each, side by side.
    [(joined,)] = await select(postgres_url, "SELECT count(*) FROM pings JOIN posts USING (ping_id) WHERE ping_id IN ("
                               + ",".join(f"'{ping_id}'" for ping_id in crossed) + ")")
    assert joined == len(crossed)
