"""The buyers' own API over HTTP: real exchanges, real buyer servers, real books (SQLite, and
PostgreSQL behind each host's journal for everything the books decide).

Purchases and their pages under concurrent sales; returns: the window's edges in the
exchange's time zone, reasons, one return per lead, the month's limit with returns racing
on two workers (or two hosts), the operator's decisions; the money each step moves in every
role's reports, the money entries in the books, the seller's view of a returned lead; and
outcomes in reports.
"""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import time
import zoneinfo
from typing import Any

import aiohttp
import asyncpg
import pytest

from pingpost import ledger
from pingpost.config import ConfigError, from_dict
from pingpost.ledger import Ledger
from tests.helpers_contract import assert_error, lead, parse_rfc3339_utc
from tests.helpers_process import Served
from tests.pg_support import postgres_server, postgres_url  # noqa: F401
from tests.support.buyers import BuyerServer, accept, bid
from tests.support.ledgers import drained
from tests.support.clock import ManualClock
from tests.support.exchange import OTHER_KEY, SELLER_KEY, SELLER_TEST_KEY, RunningExchange
from tests.test_access import B1_KEY, B2_KEY, OPS_KEY, roles_config
from tests.support.keys import TEST_KEY
from tests.ledger_support import UNDO_PRIVACY, read_rows

LA = zoneinfo.ZoneInfo("America/Los_Angeles")
KEYS = {"ops": OPS_KEY, "acme": SELLER_KEY, "other": OTHER_KEY, "b1": B1_KEY, "b2": B2_KEY}
#: The exchange's clock for most tests: 10 December 2026, noon in Los Angeles.
NOON = datetime.datetime(2026, 12, 10, 12, 0, tzinfo=LA).timestamp()


def local(*args: int) -> float:
    return datetime.datetime(*args, tzinfo=LA).timestamp()


def config(buyers: BuyerServer, b1: dict[str, Any] | None = None, b2: dict[str, Any] | None = None) -> dict[str, Any]:
    """c1 (b1) buys auto leads at 4.00, c2 (b2) home leads at 3.00; acme keeps 80% of a sale,
    other all of it and keeps its payout when a lead is returned; the exchange runs on Los
    Angeles time; b2 has reasons of its own."""
    buyers.script("c1", ping=bid(4.0), post=accept("b1-lead"))
    buyers.script("c2", ping=bid(3.0), post=accept("b2-lead"))
    # Generous timeouts: the buyers answer at once, and a loaded machine must not make a no_bid.
    made = roles_config(buyers, {"id": "c1", "timeout_ms": 2000},
                        {"id": "c2", "buyer": "b2", "vertical": "home", "timeout_ms": 2000},
                        timezone="America/Los_Angeles", auction_timeout_ms=2500)
    made["sellers"][0]["revenue_share"] = 0.8
    made["sellers"][1]["returns_reverse_payout"] = False
    made["buyers"][0].update(b1 or {})
    made["buyers"][1].update({"return_reasons": ["wrong_number", "other"], **(b2 or {})})
    return made


async def sell(ex: RunningExchange, vertical: str = "auto", key: str = SELLER_KEY) -> str:
    """A ping and its post, sold; the lead_id."""
    status, pinged = await ex.ping({"vertical": vertical, "zip": "90210", "state": "CA", "source_id": "s1",
                                    "attributes": {"age": 40}}, key=key)
    assert status == 200 and pinged["status"] == "bid", pinged
    status, posted = await ex.post(pinged["ping_id"], lead(attributes={"plan": "gold"}), key=key)
    assert status == 200 and posted["status"] == "sold", posted
    return str(posted["lead_id"])


async def leads(ex: RunningExchange, key: str = B1_KEY, query: str = "") -> tuple[int, Any]:
    return await ex.call("GET", f"/v1/buyer/leads{query}", key=key)


async def file(ex: RunningExchange, lead_id: str, reason: str = "invalid_contact", key: str = B1_KEY,
               **extra: Any) -> tuple[int, Any]:
    return await ex.call("POST", "/v1/buyer/returns", {"lead_id": lead_id, "reason": reason, **extra}, key=key)


async def filed(ex: RunningExchange, lead_id: str, **extra: Any) -> dict[str, Any]:
    status, answer = await file(ex, lead_id, **extra)
    assert status == 200, answer
    return dict(answer)


async def decide(ex: RunningExchange, return_id: str, verb: str, key: str = OPS_KEY,
                 body: Any = None) -> tuple[int, Any]:
    return await ex.call("POST", f"/v1/returns/{return_id}/{verb}", body, key=key)


async def totals(ex: RunningExchange, who: str, day: str = "2026-12-10") -> dict[str, Any]:
    status, report = await ex.call("GET", f"/v1/reports?from={day}&to={day}", key=KEYS[who])
    assert status == 200, report
    return dict(report["totals"])


async def start(exchange: Any, buyers: BuyerServer, books: Ledger, clock: ManualClock, **settings: Any) -> Any:
    return await exchange(config(buyers, **settings), clock=clock, ledger=books)


# Purchases --------------------------------------------------------------------------------


async def test_a_buyers_purchases_newest_first_each_lead_as_it_was_posted(buyers, exchange, open_books):
    clock = ManualClock()
    clock.now = NOON
    ex = await start(exchange, buyers, await open_books(0), clock)
    bought = []
    for _ in range(3):
        bought.append(await sell(ex))
        clock.advance(60)
    home = await sell(ex, "home")
    tested = await sell(ex, key=SELLER_TEST_KEY)
    await drained(ex)

    status, page = await leads(ex)
    assert status == 200 and page["next_cursor"] is None
    assert [item["lead_id"] for item in page["leads"]] == bought[::-1]  # newest first; b2's and the test lead apart
    posted = {r.body["ping_id"]: r.body["lead"] for r in buyers.posts["c1"]}
    for item in page["leads"]:
        assert item["lead"] == posted[item["ping_id"]]  # exactly what its post carried: the ping's fields merged
        assert item["lead"]["attributes"] == {"age": 40, "plan": "gold"} and item["lead"]["phone"] == "4155550134"
        assert (item["campaign_id"], item["price"], item["status"], item["test"]) == ("c1", 4.0, "sold", False)
        assert "erased" not in item and "returned_at" not in item
    assert parse_rfc3339_utc(page["leads"][-1]["sold_at"]).timestamp() == pytest.approx(NOON, abs=0.001)

    status, with_test = await leads(ex, query="?test=true")
    assert [item["lead_id"] for item in with_test["leads"]] == [tested, *bought[::-1]]
    assert with_test["leads"][0]["test"] is True
    status, theirs = await leads(ex, key=B2_KEY)
    assert [item["lead_id"] for item in theirs["leads"]] == [home]
    assert theirs["leads"][0]["price"] == 3.0

    # Days in the exchange's zone (or the one asked for): 10 December in Los Angeles holds them all.
    assert len((await leads(ex, query="?from=2026-12-10&to=2026-12-10"))[1]["leads"]) == 3
    assert (await leads(ex, query="?from=2026-12-11"))[1]["leads"] == []
    assert (await leads(ex, query="?to=2026-12-09"))[1]["leads"] == []
    assert (await leads(ex, query="?from=2026-12-10&to=2026-12-10&tz=Asia/Tokyo"))[1]["leads"] == []  # 11 Dec there

    for key, code in ((SELLER_KEY, "forbidden"), (OPS_KEY, "forbidden"), (None, "unauthorized")):
        assert_error(*(await leads(ex, key=key)), code)


async def test_pages_never_repeat_or_skip_a_lead_while_others_are_sold(buyers, exchange, open_books):
    """Thirty leads sold in one instant (their sold_at ties: the lead_id breaks it), then read
    seven at a time while more are sold between pages: each of the thirty comes exactly once,
    no lead twice, and the last page says there is no next one."""
    clock = ManualClock()
    clock.now = NOON
    ex = await start(exchange, buyers, await open_books(0), clock)
    before = set(await asyncio.gather(*(sell(ex) for _ in range(30))))
    await drained(ex)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=7" + (f"&cursor={cursor}" if cursor else "")
        (status, page), _, _ = await asyncio.gather(leads(ex, query=query), sell(ex), sell(ex))
        assert status == 200, page
        assert len(page["leads"]) <= 7
        seen += [item["lead_id"] for item in page["leads"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        clock.advance(0.001 if pages % 2 else 0)  # later sales sort before the first page, or among the ties
    assert len(seen) == len(set(seen)), "a lead came twice"
    assert before <= set(seen)
    assert pages >= 5
    sold_at = [(item["sold_at"], item["lead_id"]) for item in (await leads(ex, query="?limit=1000"))[1]["leads"]]
    assert sold_at == sorted(sold_at, reverse=True)


@pytest.mark.parametrize("query,path", [
    ("?limit=0", "limit"), ("?limit=1001", "limit"), ("?limit=ten", "limit"), ("?cursor=not-a-cursor", "cursor"),
    ("?cursor=" + "A" * 12, "cursor"), ("?from=2026-13-01", "from"), ("?from=2026-12-02&to=2026-12-01", "to"),
    ("?tz=Mars/Olympus", "tz"), ("?test=yes", "test"), ("?page=2", "page"), ("?limit=5&limit=6", "limit"),
])
async def test_bad_parameters_of_the_list_are_422_with_their_name(buyers, exchange, query, path):
    ex = await exchange(config(buyers))
    assert_error(*(await leads(ex, query=query)), "validation_error", path)


async def test_an_erased_lead_is_listed_without_its_data(buyers, exchange, tmp_path):
    books = await ledger.open(f"sqlite:///{tmp_path / 'books.db'}", key=TEST_KEY)
    ex = await exchange(config(buyers), ledger=books)
    kept, erased = await sell(ex), await sell(ex)
    with sqlite3.connect(tmp_path / "books.db") as conn:  # what erasing a lead's personal data leaves
        conn.execute("UPDATE lead_data SET data = NULL WHERE lead_id = ?", (erased,))
    items = {item["lead_id"]: item for item in (await leads(ex))[1]["leads"]}
    assert items[erased]["lead"] is None and items[erased]["erased"] is True
    assert items[erased]["price"] == 4.0 and items[erased]["status"] == "sold"
    assert items[kept]["lead"]["email"] == "ada@example.com" and "erased" not in items[kept]


# Returns: the rules ----------------------------------------------------------------------


async def test_the_window_is_counted_in_days_of_the_exchanges_time_zone(buyers, exchange, open_books):
    """Sold at 23:30 on 30 October in Los Angeles with a 7-day window: returnable through 6
    November, local time, though the clocks went back on 1 November (seven times 24 hours
    would have closed at 22:30); closed from midnight on."""
    clock = ManualClock()
    clock.now = local(2026, 10, 30, 23, 30)
    ex = await start(exchange, buyers, await open_books(0), clock, b1={"max_return_rate": 1.0})
    early, late, later = await sell(ex), await sell(ex), await sell(ex)
    await drained(ex)
    clock.now = local(2026, 11, 6, 23, 59, 59)
    assert clock.now > local(2026, 10, 30, 23, 30) + 7 * 86400
    answer = await filed(ex, early)
    assert answer["status"] == "approved" and answer["lead_id"] == early
    clock.now = local(2026, 11, 7, 0, 0, 0)
    status, refused = await file(ex, late)
    assert_error(status, refused, "return_window_closed")
    assert "2026-11-07T08:00:00.000Z" in refused["error"]["message"]
    clock.advance(86400 * 30)
    assert_error(*(await file(ex, later)), "return_window_closed")
    assert (await file(ex, early))[1]["return_id"] == answer["return_id"]  # the first return stands, closed or not


async def test_a_buyer_without_returns_and_another_buyers_lead(buyers, exchange):
    clock = ManualClock()
    clock.now = NOON
    ex = await exchange(config(buyers, b2={"return_window_days": 0}), clock=clock)
    mine, theirs = await sell(ex), await sell(ex, "home")
    assert_error(*(await file(ex, theirs, key=B2_KEY, reason="other")), "return_window_closed")
    assert_error(*(await file(ex, theirs)), "not_found")  # b2's lead, asked by b1
    assert_error(*(await file(ex, mine, key=B2_KEY, reason="other")), "not_found")
    assert_error(*(await file(ex, "0" * 24)), "not_found")
    assert_error(*(await ex.call("POST", "/v1/buyer/outcomes", {"lead_id": theirs, "outcome": "converted"},
                                 key=B1_KEY)), "not_found")
    for key, code in ((SELLER_KEY, "forbidden"), (OPS_KEY, "forbidden"), (None, "unauthorized")):
        assert_error(*(await file(ex, mine, key=key)), code)


@pytest.mark.parametrize("body,path", [
    ({"reason": "invalid_contact"}, "lead_id"), ({"lead_id": "x"}, "reason"),
    ({"lead_id": "x", "reason": "invalid_contact", "colour": "red"}, "colour"),
    ({"lead_id": "x", "reason": "invalid_contact", "note": "n" * 1001}, "note"),
    ({"lead_id": "", "reason": "invalid_contact"}, "lead_id"), ({"lead_id": 7, "reason": "invalid_contact"}, "lead_id"),
])
async def test_a_misshapen_return_is_422_with_its_field(buyers, exchange, body, path):
    ex = await exchange(config(buyers))
    assert_error(*(await ex.call("POST", "/v1/buyer/returns", body, key=B1_KEY)), "validation_error", path)


async def test_a_reason_not_the_buyers_own_is_422(buyers, exchange):
    clock = ManualClock()
    clock.now = NOON
    ex = await exchange(config(buyers), clock=clock)
    mine, theirs = await sell(ex), await sell(ex, "home")
    status, refused = await file(ex, mine, reason="wrong_number")  # b2's reason, not b1's
    assert_error(status, refused, "validation_error", "reason")
    assert "invalid_contact, duplicate, did_not_request, out_of_area, fraud, other" in refused["error"]["message"]
    assert_error(*(await file(ex, theirs, key=B2_KEY, reason="invalid_contact")), "validation_error", "reason")
    assert (await file(ex, theirs, key=B2_KEY, reason="wrong_number"))[0] == 200
    assert_error(*(await ex.call("POST", "/v1/buyer/returns", data=b"{", key=B1_KEY)), "malformed_json")
    assert_error(*(await ex.call("POST", "/v1/buyer/returns", data=b"x", key=B1_KEY,
                                 headers={"Content-Type": "text/plain"})), "unsupported_media_type")


async def test_one_return_per_lead_even_asked_many_times_at_once(buyers, exchange, open_books, backend):
    """Ten returns of one lead at once, half through each of two workers (or hosts): one
    return, every answer naming it, one credit in the books, one return in the reports."""
    clock = ManualClock()
    clock.now = NOON
    first = await start(exchange, buyers, await open_books(0), clock, b1={"max_return_rate": 1.0})
    second = await start(exchange, buyers, await open_books(1), clock, b1={"max_return_rate": 1.0})
    lead_id = await sell(first)
    await drained(first)
    answers = await asyncio.gather(*(file(ex, lead_id, reason=reason, note=f"try {i}")
                                     for i, (ex, reason) in enumerate([(first, "fraud"), (second, "duplicate")] * 5)))
    assert {status for status, _ in answers} == {200}
    assert len({answer["return_id"] for _, answer in answers}) == 1
    assert len({(answer["reason"], answer["note"], answer["status"]) for _, answer in answers}) == 1
    assert answers[0][1]["status"] == "approved"
    again = await filed(second, lead_id, reason="other")
    assert again == answers[0][1]
    assert (await totals(first, "ops"))["returns"] == 1
    assert (await totals(second, "b1"))["spend"] == 0.0
    assert await money_rows(first, backend) == [(lead_id, "buyer_credit", "b1", 400), (lead_id, "seller_debit",
                                                                                         "acme", 320)]


async def money_rows(ex: RunningExchange, backend: str) -> list[tuple[Any, ...]]:
    """The books' money entries, read straight from the database: (lead, kind, party, cents)."""
    return await read_rows(ex.ledger, "SELECT lead_id, kind, party_id, cents FROM money ORDER BY lead_id, kind")


async def test_returns_racing_the_months_limit_never_pass_it(buyers, exchange, open_books):
    """b1 may have 20% of a month's purchases returned at once. Ten leads sold on 30 November,
    ten on 1 December; on 3 December three November returns and ten December ones race
    through two workers (or hosts): two of each month are approved, the rest pend; an
    operator's approval counts against the month too."""
    clock = ManualClock()
    settings = {"max_return_rate": 0.2}
    first = await start(exchange, buyers, await open_books(0), clock, b1=settings)
    second = await start(exchange, buyers, await open_books(1), clock, b1=settings)
    clock.now = local(2026, 11, 30, 22, 0)
    november = [await sell(first) for _ in range(10)]
    clock.now = local(2026, 12, 1, 1, 0)
    december = [await sell(first) for _ in range(10)]
    await drained(first)
    clock.now = local(2026, 12, 3, 9, 0)
    racing = [(first if i % 2 else second, lead_id) for i, lead_id in enumerate(november[:3] + december)]
    answers = await asyncio.gather(*(file(ex, lead_id) for ex, lead_id in racing))
    assert {status for status, _ in answers} == {200}
    status_of = {answer["lead_id"]: answer["status"] for _, answer in answers}
    assert sorted(status_of[x] for x in november[:3]) == ["approved", "approved", "pending"]
    assert sorted(status_of[x] for x in december) == ["approved"] * 2 + ["pending"] * 8

    # The operator approves one December return: the month is at three of ten; a new one pends.
    pending = [x for x in december if status_of[x] == "pending"]
    returns = {answer["lead_id"]: answer["return_id"] for _, answer in answers}
    assert (await decide(first, returns[pending[0]], "approve"))[1]["status"] == "approved"
    clock.now = local(2026, 12, 1, 2, 0)  # one more December sale: four returns would pass 20% of eleven
    extra = await sell(first)
    await drained(first)
    clock.now = local(2026, 12, 3, 10, 0)
    assert (await filed(second, extra))["status"] == "pending"


async def test_counters_stay_exact_while_returns_and_sales_are_recorded_at_once(buyers, exchange, open_books):
    """Ten leads sold an hour ago on one host; then twenty more sold on it while the ten are
    returned through another host: the returns add to an hour behind the campaign's latest
    running row while that host's forwarder adds new hours. Every way of reading b1's numbers
    (running totals, hourly and daily counters) agrees, exactly."""
    clock = ManualClock()
    clock.now = NOON - 3600
    first = await start(exchange, buyers, await open_books(0), clock, b1={"max_return_rate": 1.0})
    second = await start(exchange, buyers, await open_books(1), clock, b1={"max_return_rate": 1.0})
    early = [await sell(first) for _ in range(10)]
    await drained(first)
    clock.now = NOON

    async def returning() -> None:
        for lead_id in early:
            assert (await filed(second, lead_id))["status"] == "approved"

    await asyncio.gather(returning(), *(sell(first) for _ in range(20)))
    await drained(first)
    expected = {"sold": 30, "returns": 10, "spend": 80.0}
    for query in ("", "&group_by=day", "&group_by=campaign", "&group_by=hour", "&group_by=day,campaign"):
        status, report = await first.call("GET", f"/v1/reports?from=2026-12-10{query}", key=B1_KEY)
        assert status == 200, report
        rows = report["rows"]
        assert {k: sum(row[k] for row in rows) for k in expected} == expected, (query, rows)
    status, report = await second.call("GET", "/v1/reports?from=2026-12-10&group_by=hour", key=B1_KEY)
    assert [(row["sold"], row["returns"], row["spend"]) for row in report["rows"]] == [(10, 10, 0.0), (20, 0, 80.0)]


async def test_returns_racing_the_limit_through_worker_processes_and_hosts(buyers, backend, tmp_path, redis_server,
                                                                          request):
    """Real ``pingpost serve`` processes: SQLite, one host of two workers; PostgreSQL, two hosts
    of two workers each, every host its own journal. Twenty leads are returned at once, each
    request on a new connection (the kernel spreads them over the workers), half to each host:
    a fifth of each month's purchases is approved, not one more."""
    redis_server.flush()
    made = config(buyers, b1={"max_return_rate": 0.2})
    url = (f"sqlite:///{tmp_path / 'books.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("postgres_url")))
    hosts = []
    try:
        for host in range(1 if backend == "sqlite" else 2):
            hosts.append(await Served.start(tmp_path, made, "--workers", "2", "--redis", redis_server.url,
                                            "--ledger", url, "--ledger-journal", str(tmp_path / f"journal-{host}.db")))
        bases = [served.listening.removeprefix("listening on ") for served in hosts]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async def call(base: str, method: str, path: str, body: Any, key: str) -> Any:
                async with session.request(method, base + path, json=body,
                                           headers={"Authorization": f"Bearer {key}"}) as answer:
                    assert answer.status == 200, await answer.text()
                    return await answer.json()

            for _ in range(20):
                pinged = await call(bases[0], "POST", "/v1/ping", {"vertical": "auto", "zip": "90210"}, SELLER_KEY)
                posted = await call(bases[0], "POST", "/v1/post", {"ping_id": pinged["ping_id"], "lead": lead()},
                                    SELLER_KEY)
                assert posted["status"] == "sold"
            deadline = time.monotonic() + 30
            while len(bought := (await call(bases[-1], "GET", "/v1/buyer/leads", None, B1_KEY))["leads"]) < 20:
                assert time.monotonic() < deadline, "the sales did not reach the other host's books"
                await asyncio.sleep(0.05)
            answers = await asyncio.gather(*(
                call(bases[i % len(bases)], "POST", "/v1/buyer/returns", {"lead_id": item["lead_id"],
                                                                          "reason": "fraud"}, B1_KEY)
                for i, item in enumerate(bought)))
    finally:
        for served in hosts:
            served.signal()
        for served in hosts:
            assert await served.wait(20) == 0
    months: dict[str, list[str]] = {}
    for item in bought:  # the month of each sale in Los Angeles (twenty sales may straddle a month's end)
        sold = parse_rfc3339_utc(item["sold_at"]).astimezone(LA)
        months.setdefault(f"{sold:%Y-%m}", []).append(item["lead_id"])
    status_of = {answer["lead_id"]: answer["status"] for answer in answers}
    for month, lead_ids in months.items():
        approved = sum(status_of[lead_id] == "approved" for lead_id in lead_ids)
        assert approved == len(lead_ids) // 5, (month, approved, len(lead_ids))
    assert set(status_of.values()) == {"approved", "pending"}


# Returns: the operator's queue ------------------------------------------------------------


async def test_only_an_operator_decides_and_decisions_are_final(buyers, exchange):
    clock = ManualClock()
    clock.now = NOON
    ex = await exchange(config(buyers, b1={"max_return_rate": 0}), clock=clock)  # nothing approved at once
    one, two, three, home = await sell(ex), await sell(ex), await sell(ex), await sell(ex, "home")
    r1 = (await filed(ex, one, note="wrong number"))["return_id"]
    clock.advance(1)  # the queue is in the order returns were filed
    r2 = (await filed(ex, two))["return_id"]
    clock.advance(1)
    theirs = (await filed(ex, home, key=B2_KEY, reason="other"))["return_id"]

    status, queue = await ex.call("GET", "/v1/returns?status=pending", key=OPS_KEY)
    assert status == 200 and queue["next_cursor"] is None
    assert [r["return_id"] for r in queue["returns"]] == [r1, r2, theirs]
    assert queue["returns"][0] == {"return_id": r1, "lead_id": one, "status": "pending", "reason": "invalid_contact",
                                   "buyer_id": "b1", "seller_id": "acme", "campaign_id": "c1", "price": 4.0,
                                   "sold_at": queue["returns"][0]["sold_at"],
                                   "requested_at": queue["returns"][0]["requested_at"], "note": "wrong number"}
    status, own = await ex.call("GET", "/v1/returns", key=B1_KEY)  # a buyer sees its own returns
    assert [r["return_id"] for r in own["returns"]] == [r1, r2]
    assert_error(*(await ex.call("GET", "/v1/returns", key=SELLER_KEY)), "forbidden")
    assert_error(*(await ex.call("GET", "/v1/returns?status=open", key=OPS_KEY)), "validation_error", "status")

    for verb in ("approve", "deny"):
        for key, code in ((B1_KEY, "forbidden"), (SELLER_KEY, "forbidden"), (None, "unauthorized")):
            assert_error(*(await decide(ex, r1, verb, key=key)), code)
        assert_error(*(await decide(ex, "0" * 24, verb)), "not_found")
    clock.advance(60)
    status, approved = await decide(ex, r1, "approve")
    assert status == 200 and approved["status"] == "approved" and approved["decided_by"] == "ops"
    assert parse_rfc3339_utc(approved["decided_at"]).timestamp() == pytest.approx(NOON + 62, abs=0.001)
    status, denied = await decide(ex, r2, "deny", body={"note": "the number works"})
    assert status == 200 and denied["status"] == "denied" and denied["decision_note"] == "the number works"
    assert (await decide(ex, r1, "deny"))[1] == approved  # final: answered as it stands
    assert (await decide(ex, r2, "approve"))[1] == denied
    assert (await filed(ex, two, reason="fraud"))["status"] == "denied"  # asking again answers the first return
    assert_error(*(await decide(ex, r2, "deny", body={"note": 5})), "validation_error", "note")
    assert [r["return_id"] for r in (await ex.call("GET", "/v1/returns?status=pending", key=OPS_KEY))[1]["returns"]] \
        == [theirs]
    by_status = {s: [r["return_id"] for r in (await ex.call("GET", f"/v1/returns?status={s}", key=OPS_KEY))[1]["returns"]]
                 for s in ("approved", "denied")}
    assert by_status == {"approved": [r1], "denied": [r2]}
    assert three  # sold, never returned: in no list
    status, paged = await ex.call("GET", "/v1/returns?limit=2", key=OPS_KEY)
    assert [r["return_id"] for r in paged["returns"]] == [r1, r2] and paged["next_cursor"]
    status, rest = await ex.call("GET", f"/v1/returns?limit=2&cursor={paged['next_cursor']}", key=OPS_KEY)
    assert [r["return_id"] for r in rest["returns"]] == [theirs] and rest["next_cursor"] is None


# Money in reports, step by step ----------------------------------------------------------


async def test_every_step_of_a_return_in_every_roles_report_and_the_books(buyers, exchange, open_books, backend):
    """Three leads bought by b1 at 4.00: from acme (paid 3.20, its payout reversed by a return)
    and from other (paid 4.00, which keeps its payout). Filing pends (b1 has no automatic
    returns), approving moves the money, denying moves none; the sales stay as they were."""
    clock = ManualClock()
    clock.now = NOON
    ex = await start(exchange, buyers, await open_books(0), clock, b1={"max_return_rate": 0})
    from_acme, from_other, denied = await sell(ex), await sell(ex, key=OTHER_KEY), await sell(ex, key=OTHER_KEY)
    await drained(ex)
    before = {who: await totals(ex, who) for who in KEYS}
    assert (before["ops"]["sold"], before["ops"]["revenue"], before["ops"]["payout"], before["ops"]["margin"]) == \
        (3, 12.0, 11.2, 0.8)

    async def changed() -> dict[str, dict[str, Any]]:
        now = {who: await totals(ex, who) for who in KEYS}
        return {who: {k: v for k, v in now[who].items() if before[who][k] != v} for who in KEYS}

    r_acme = (await filed(ex, from_acme))["return_id"]
    r_other = (await filed(ex, from_other))["return_id"]
    r_denied = (await filed(ex, denied))["return_id"]
    assert await changed() == dict.fromkeys(KEYS, {})  # pending: no money has moved
    assert (await ex.call("GET", f"/v1/leads/{from_acme}"))[1]["status"] == "sold"

    await decide(ex, r_acme, "approve")
    assert await changed() == {
        "ops": {"returns": 1, "returned_amount": 4.0, "revenue": 8.0, "spend": 8.0, "cost_per_lead": 2.67,
                "payout": 8.0, "margin": 0.0, "revenue_per_post": 2.67, "payout_per_post": 2.67},
        "acme": {"returns": 1, "payout": 0.0, "payout_per_post": 0.0},
        "other": {},
        "b1": {"returns": 1, "spend": 8.0, "cost_per_lead": 2.67},
        "b2": {},
    }
    status, seen = await ex.call("GET", f"/v1/leads/{from_acme}")
    assert status == 200 and seen["status"] == "returned" and seen["price"] == 3.2
    assert parse_rfc3339_utc(seen["returned_at"]).timestamp() == pytest.approx(NOON, abs=0.001)

    await decide(ex, r_other, "approve")
    await decide(ex, r_denied, "deny")
    after = await changed()
    assert after["ops"] == {"returns": 2, "returned_amount": 8.0, "revenue": 4.0, "spend": 4.0, "cost_per_lead": 1.33,
                            "payout": 8.0, "margin": -4.0, "revenue_per_post": 1.33, "payout_per_post": 2.67}
    assert after["other"] == {"returns": 1}  # its payout stays: the exchange bears the credit
    assert after["b1"] == {"returns": 2, "spend": 4.0, "cost_per_lead": 1.33}
    assert (await ex.call("GET", f"/v1/leads/{from_other}", key=OTHER_KEY))[1]["status"] == "returned"
    assert (await ex.call("GET", f"/v1/leads/{denied}", key=OTHER_KEY))[1]["status"] == "sold"
    statuses = {item["lead_id"]: item["status"] for item in (await leads(ex))[1]["leads"]}
    assert statuses == {from_acme: "returned", from_other: "returned", denied: "sold"}
    assert await money_rows(ex, backend) == sorted([(from_acme, "buyer_credit", "b1", 400),
                                                    (from_acme, "seller_debit", "acme", 320),
                                                    (from_other, "buyer_credit", "b1", 400)])
    # The sales are as sold: a return is entries of its own, never an edit.
    assert all(item["price"] == 4.0 for item in (await leads(ex))[1]["leads"])
    # Grouped, from the hourly and daily counters and from the running totals alike.
    for who, group_by, key, expected in (("b1", "day", "day", {"2026-12-10": (2, 4.0)}),
                                         ("b1", "campaign", "campaign", {"c1": (2, 4.0)}),
                                         ("ops", "seller", "seller", {"acme": (1, 0.0), "other": (1, 8.0)}),
                                         ("ops", "buyer", "buyer", {"b1": (2, 4.0)})):
        status, report = await ex.call("GET", f"/v1/reports?from=2026-12-10&group_by={group_by}", key=KEYS[who])
        money = "revenue" if group_by == "buyer" else "payout" if who == "ops" else "spend"
        assert {row[key]: (row["returns"], row[money]) for row in report["rows"]} == expected, report


# Outcomes ---------------------------------------------------------------------------------


async def test_the_latest_outcome_of_a_lead_counts_in_reports(buyers, exchange, open_books):
    clock = ManualClock()
    clock.now = NOON
    ex = await start(exchange, buyers, await open_books(0), clock)
    one, two = await sell(ex), await sell(ex)
    await drained(ex)

    async def tell(lead_id: str, outcome: str, **extra: Any) -> Any:
        status, answer = await ex.call("POST", "/v1/buyer/outcomes", {"lead_id": lead_id, "outcome": outcome, **extra},
                                       key=B1_KEY)
        assert status == 200, answer
        return answer

    async def converted() -> tuple[Any, ...]:
        b1, ops, acme = await totals(ex, "b1"), await totals(ex, "ops"), await totals(ex, "acme")
        return b1["conversions"], b1["conversion_rate"], ops["conversions"], acme["conversions"]

    assert await tell(one, "converted", value=120.509) == {"lead_id": one, "outcome": "converted", "value": 120.5}
    assert await converted() == (1, 0.5, 1, 1)
    await tell(one, "converted")
    assert await converted() == (1, 0.5, 1, 1)  # told twice: still one conversion
    await tell(two, "contacted")
    assert await converted() == (1, 0.5, 1, 1)
    await tell(two, "converted")
    assert await converted() == (2, 1.0, 2, 2)
    await tell(one, "bad_data")  # the latest counts: no longer converted
    assert await converted() == (1, 0.5, 1, 1)
    assert (await totals(ex, "b2"))["conversions"] == 0
    await asyncio.gather(*(tell(one, "converted" if i % 2 else "no_contact") for i in range(10)))
    last = await tell(one, "converted")
    assert last == {"lead_id": one, "outcome": "converted"} and await converted() == (2, 1.0, 2, 2)


@pytest.mark.parametrize("body,path", [
    ({"lead_id": "x", "outcome": "sold"}, "outcome"), ({"lead_id": "x", "outcome": "converted", "value": -1}, "value"),
    ({"lead_id": "x", "outcome": "converted", "value": "12"}, "value"), ({"outcome": "converted"}, "lead_id"),
])
async def test_a_misshapen_outcome_is_422(buyers, exchange, body, path):
    ex = await exchange(config(buyers))
    assert_error(*(await ex.call("POST", "/v1/buyer/outcomes", body, key=B1_KEY)), "validation_error", path)
    assert_error(*(await ex.call("POST", "/v1/buyer/outcomes", body, key=SELLER_KEY)), "forbidden")



# The settings -----------------------------------------------------------------------------


def test_return_settings_have_their_defaults_and_bad_ones_are_refused_with_their_path(buyers):
    loaded = from_dict(config(buyers))
    b1, b2 = loaded.buyers[0], loaded.buyers[1]
    assert (b1.return_window_days, b1.max_return_rate) == (7, 0.1)
    assert b1.return_reasons == ["invalid_contact", "duplicate", "did_not_request", "out_of_area", "fraud", "other"]
    assert b2.return_reasons == ["wrong_number", "other"]
    assert [s.returns_reverse_payout for s in loaded.sellers] == [True, False]
    bad = config(buyers, b1={"return_window_days": -1, "max_return_rate": 1.5, "return_reasons": ["Bad Reason"]},
                 b2={"return_reasons": ["other", "other"]})
    bad["buyers"][2]["return_reasons"] = []
    bad["sellers"][0]["returns_reverse_payout"] = "yes"
    with pytest.raises(ConfigError) as refused:
        from_dict(bad)
    paths = {path for path, _ in refused.value.errors}
    assert paths == {"buyers[0].return_window_days", "buyers[0].max_return_rate", "buyers[0].return_reasons[0]",
                     "buyers[1].return_reasons[1]", "buyers[2].return_reasons", "sellers[0].returns_reverse_payout"}
    assert ("buyers[1].return_reasons[1]", "reason 'other' is listed twice") in refused.value.errors


async def test_books_from_before_returns_are_upgraded_and_their_sales_can_be_returned(buyers, exchange, open_books,
                                                                                      backend):
    """Books at schema version 3 (rollups, ranking, no returns) holding a sale: opening them adds the
    returns, money and outcomes tables, and the old sale is listed, returned and counted."""
    clock = ManualClock()
    clock.now = NOON
    books = await open_books(0)
    ex = await start(exchange, buyers, books, clock, b1={"max_return_rate": 1.0})
    old = await sell(ex)
    await drained(ex)
    undo = ["DROP TABLE returns", "DROP TABLE money", "DROP TABLE outcomes", "DROP INDEX sales_buyer",
            *UNDO_PRIVACY,
            "DELETE FROM schema_version WHERE version > 3"]
    if backend == "sqlite":
        undo.append("DROP TABLE rollup_marks")  # version 5's, which counts behind the rows
        with sqlite3.connect(books.url.removeprefix("sqlite:///")) as conn:
            for statement in undo:
                conn.execute(statement)
    else:
        conn = await asyncpg.connect(books._dsn)  # type: ignore[attr-defined]
        for statement in undo:
            await conn.execute(statement)
        await conn.close()
    again = await start(exchange, buyers, await open_books(1), clock, b1={"max_return_rate": 1.0})
    assert [item["lead_id"] for item in (await leads(again))[1]["leads"]] == [old]
    assert (await filed(again, old))["status"] == "approved"
    assert (await totals(again, "b1"))["returns"] == 1
