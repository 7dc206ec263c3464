"""Privacy operations over HTTP: real exchanges, real buyer servers, real books (SQLite, and
PostgreSQL behind each host's journal).

Opt-outs: a consumer's post and direct post are refused before any buyer hears of them, a
ping carrying their hash is answered no_bid with no buyer pinged, and another worker (or
host) refuses them within about a second. Deletions: every lead of the consumer erased, the
money and the sales untouched, the request in the log without the consumer. Retention: leads
past keep_lead_days erased by the exchange's own job. Refusals: bad bodies and other roles.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from typing import Any

import pytest

from pingpost import ledger, server
from pingpost.ledger import NullLedger
from pingpost.ledger.privacy import CHUNK
from pingpost.privacy.identifiers import EMAIL, PHONE, Identifiers
from tests.helpers_contract import assert_error, lead, parse_rfc3339_utc
from tests.ledger_support import LEAD, ping, read_rows, sold
from tests.pg_support import PostgresServer
from tests.support.ledgers import drained
from tests.support.buyers import BuyerServer, accept, bid, reject
from tests.support.clock import ManualClock
from tests.support.exchange import SELLER_KEY, RunningExchange
from tests.support.keys import TEST_KEY
from tests.test_access import B1_KEY, OPS_KEY, roles_config

PHONE_SHA = hashlib.sha256(b"4155550134").hexdigest()  # the standard lead's phone, normalized
PING = {"vertical": "auto", "zip": "90210", "state": "CA"}


def config(buyers: BuyerServer, **privacy: Any) -> dict[str, Any]:
    """c1 (b1) bids 4.00 on auto leads and buys them; an operator's key."""
    buyers.script("c1", ping=bid(4.0), post=accept("b1-lead"))
    made = roles_config(buyers, {"id": "c1"})
    if privacy:
        made["privacy"] = privacy
    return made


def sent(buyers: BuyerServer) -> tuple[int, int]:
    """(pings, posts) the buyer has received."""
    return len(buyers.pings.get("c1", [])), len(buyers.posts.get("c1", []))


async def opt_out(ex: RunningExchange, key: str | None = OPS_KEY, **body: Any) -> tuple[int, Any]:
    return await ex.call("POST", "/v1/privacy/opt-outs", body, key=key)


async def delete(ex: RunningExchange, key: str | None = OPS_KEY, **body: Any) -> tuple[int, Any]:
    return await ex.call("POST", "/v1/privacy/deletions", body, key=key)


async def requests(ex: RunningExchange, query: str = "", key: str | None = OPS_KEY) -> tuple[int, Any]:
    return await ex.call("GET", f"/v1/privacy/requests{query}", key=key)


async def sell(ex: RunningExchange, **changes: Any) -> str:
    status, pinged = await ex.ping(PING)
    assert status == 200 and pinged["status"] == "bid", pinged
    status, posted = await ex.post(pinged["ping_id"], lead(**changes))
    assert status == 200 and posted["status"] == "sold", posted
    return str(posted["lead_id"])


# Opt-outs ----------------------------------------------------------------------------------


async def test_an_opted_out_consumer_is_offered_to_no_buyer(buyers, exchange, open_books):
    ex = await exchange(config(buyers), ledger=await open_books(0))
    status, pinged = await ex.ping(PING)  # priced before the opt-out: the post is what is refused
    assert status == 200 and pinged["status"] == "bid"
    status, answer = await opt_out(ex, phone="+1 415.555.0134")  # the standard lead's phone, written otherwise
    assert status == 200 and set(answer) == {"request_id"}, answer
    before = sent(buyers)

    assert_error(*(await ex.post(pinged["ping_id"], lead())), "opted_out")
    assert_error(*(await ex.direct({**PING, "lead": lead(email="someone.else@example.com")})), "opted_out")
    assert sent(buyers) == before  # neither pinged nor offered the lead

    status, answer = await ex.ping({**PING, "phone_sha256": PHONE_SHA.upper()})
    assert status == 200 and answer["status"] == "no_bid" and "price" not in answer, answer
    assert sent(buyers) == before
    status, trace = await ex.trace(answer["ping_id"])
    assert status == 200 and trace["campaigns"] == [] and trace["not_pinged"] == {"opted_out": 1}, trace

    # Someone else's lead, and this ping once it is posted with someone else's phone, still sell.
    assert (await ex.post(pinged["ping_id"], lead(phone="415 555 0199")))[1]["status"] == "sold"
    assert (await ex.ping({**PING, "phone_sha256": hashlib.sha256(b"4155550199").hexdigest()}))[1]["status"] == "bid"

    # By email alone: its normalized form (trimmed, lower-case) is what is kept and matched.
    assert (await opt_out(ex, email="  Grace@Example.COM "))[0] == 200
    grace = hashlib.sha256(b"grace@example.com").hexdigest()
    assert (await ex.ping({**PING, "email_sha256": grace}))[1]["status"] == "no_bid"
    assert_error(*(await ex.direct({**PING, "lead": lead(email="grace@example.com", phone="415 555 0177")})),
                 "opted_out")
    await drained(ex)
    rows = await read_rows(ex.ledger, "SELECT hash FROM suppressions ORDER BY seq")
    assert len(rows) == 2 and all(len(bytes(row[0])) == 16 for row in rows)  # keyed hashes, never the values


async def test_an_opt_out_reaches_another_worker_within_about_a_second(buyers, exchange, open_books):
    """Two workers on one SQLite file, or two hosts (each its own journal) on one PostgreSQL:
    an opt-out taken by one, and the other refuses the consumer's leads soon after."""
    first = await exchange(config(buyers), ledger=await open_books(0))
    second = await exchange(config(buyers), ledger=await open_books(1))
    buyers.script("c1", post=reject())  # nothing is sold while the second worker waits
    assert (await second.direct({**PING, "lead": lead()}))[1]["status"] == "unsold"
    assert (await opt_out(first, phone="4155550134"))[0] == 200

    deadline = time.monotonic() + 10
    while True:
        status, answer = await second.direct({**PING, "lead": lead()})
        if status == 409:
            break
        assert status == 200 and answer["status"] == "unsold", answer
        assert time.monotonic() < deadline, "the second worker never saw the opt-out"
        await asyncio.sleep(0.05)
    assert_error(status, answer, "opted_out")
    assert (await second.ping({**PING, "phone_sha256": PHONE_SHA}))[1]["status"] == "no_bid"
    for worker in (first, second):  # each holds the one entry, and says so
        assert "\npingpost_opt_outs_held 1.0\n" in (await worker.call("GET", "/metrics", key=None))[1]


async def test_a_worker_that_starts_without_the_shared_books_sells_no_lead_until_it_has_the_list(
        buyers, exchange, tmp_path):
    """PostgreSQL down as a host starts: pings go on, but a post cannot be checked against
    the opt-out list, so it is 503 ledger_unavailable and no buyer is offered it; once
    PostgreSQL is back the worker reads the list, refuses the opted-out consumer and sells
    the rest."""
    database = PostgresServer().start()
    try:
        url = database.create_database("privacy_outage")
        up = await exchange(config(buyers), ledger=await ledger.open(url, journal=tmp_path / "first.db", key=TEST_KEY))
        assert (await opt_out(up, phone="4155550134"))[0] == 200
        await asyncio.to_thread(database.stop)

        down = await exchange(config(buyers), ledger=await ledger.open(url, journal=tmp_path / "second.db",
                                                                      key=TEST_KEY))
        before = sent(buyers)
        status, pinged = await down.ping(PING)
        assert status == 200 and pinged["status"] == "bid"
        assert_error(*(await down.post(pinged["ping_id"], lead(phone="415 555 0199"))), "ledger_unavailable")
        assert_error(*(await down.direct({**PING, "lead": lead()})), "ledger_unavailable")
        assert sent(buyers)[1] == before[1]  # no lead offered to anyone

        await asyncio.to_thread(database.start)
        deadline = time.monotonic() + 30
        while (answer := await down.direct({**PING, "lead": lead()}))[0] == 503:
            assert time.monotonic() < deadline, "the worker never read the list"
            await asyncio.sleep(0.1)
        assert_error(*answer, "opted_out")
        assert (await down.post(pinged["ping_id"], lead(phone="415 555 0199")))[1]["status"] == "sold"
    finally:
        database.remove()


# Deletions ---------------------------------------------------------------------------------


async def test_a_deletion_erases_every_lead_of_the_consumer_and_keeps_the_money(buyers, exchange, open_books, caplog):
    caplog.set_level(logging.DEBUG)
    ex = await exchange(config(buyers), ledger=await open_books(0))
    canary = "canary.deleted@example.com"
    by_email = [await sell(ex, email=canary, phone=f"415 555 01{n:02}") for n in range(3)]
    by_phone = await sell(ex, email="canary.other@example.com", phone="415 555 0166")
    kept = await sell(ex, email="keep.me@example.com", phone="415 555 0155")
    await drained(ex)
    books = ex.ledger
    sales = "SELECT * FROM sales ORDER BY lead_id"
    cents = "SELECT sum(buyer_price_cents), sum(seller_price_cents) FROM sales"
    sales_before, cents_before = await read_rows(books, sales), await read_rows(books, cents)

    status, answer = await delete(ex, email=canary.upper())
    assert status == 200 and answer["leads_erased"] == 3 and set(answer) == {"request_id", "leads_erased"}, answer
    status, second = await delete(ex, phone="(415) 555-0166")
    assert status == 200 and second["leads_erased"] == 1, second

    for lead_id in (*by_email, by_phone):
        assert await books.get_lead(lead_id) is None
    assert (await books.get_lead(kept)) is not None and (await books.get_lead(kept)).email == "keep.me@example.com"
    erased = await read_rows(books, "SELECT lead_id, key_wrapped, data, email_hash, phone_hash FROM lead_data "
                                    "WHERE key_wrapped IS NULL AND data IS NULL AND email_hash IS NULL "
                                    "AND phone_hash IS NULL ORDER BY lead_id")
    assert [row[0] for row in erased] == sorted([*by_email, by_phone])
    assert await read_rows(books, sales) == sales_before and await read_rows(books, cents) == cents_before
    assert cents_before[0][0] == 5 * 400

    status, page = await ex.call("GET", "/v1/buyer/leads", key=B1_KEY)  # the buyer keeps its purchases, not the data
    assert status == 200 and {item["lead_id"] for item in page["leads"] if item.get("erased")} == {*by_email, by_phone}

    status, log = await requests(ex)
    assert status == 200 and log["next_cursor"] is None, log
    assert [(r["request_id"], r["kind"], r["leads_erased"]) for r in log["requests"]] == [
        (answer["request_id"], "deletion", 3), (second["request_id"], "deletion", 1)]
    for item in log["requests"]:
        assert set(item) == {"request_id", "kind", "received_at", "completed_at", "leads_erased"}
        assert parse_rfc3339_utc(item["completed_at"]) >= parse_rfc3339_utc(item["received_at"])
    logged = [(record.getMessage(), getattr(record, "event", None)) for record in caplog.records
              if record.name.startswith("pingpost")]
    assert any(event and event.get("request_id") == answer["request_id"] for _, event in logged)
    text = (json.dumps(log) + json.dumps(logged, default=str)).lower()  # the answer, and every log line
    suppressed = await read_rows(books, "SELECT hash FROM suppressions")
    for secret in (canary, "canary.other", "4155550166", "555-0166", hashlib.sha256(canary.encode()).hexdigest(),
                   *(bytes(row[0]).hex() for row in suppressed)):
        assert secret not in text

    assert_error(*(await ex.direct({**PING, "lead": lead(email=canary)})), "opted_out")  # deleted: opted out too


async def test_the_request_log_pages_oldest_first_and_reads_days(buyers, exchange, clock: ManualClock):
    ex = await exchange(config(buyers), clock=clock)
    clock.now = parse_rfc3339_utc("2026-12-01T10:00:00Z").timestamp()
    made = []
    for n in range(3):
        made.append((await opt_out(ex, phone=f"415 555 01{n:02}"))[1]["request_id"])
        clock.advance(1)
    clock.advance(86_400 - 3)
    made.append((await delete(ex, email="late@example.com"))[1]["request_id"])
    seen, cursor = [], ""
    while True:
        status, page = await requests(ex, f"?limit=2&tz=UTC{cursor}")
        assert status == 200, page
        seen += [item["request_id"] for item in page["requests"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == made
    status, day = await requests(ex, "?from=2026-12-02&to=2026-12-02&tz=UTC")
    assert [(item["request_id"], item["kind"]) for item in day["requests"]] == [(made[3], "deletion")]
    assert day["requests"][0]["received_at"] == "2026-12-02T10:00:00.000Z"
    assert (await requests(ex, "?to=2026-11-30&tz=UTC"))[1]["requests"] == []


# Retention ---------------------------------------------------------------------------------


async def test_leads_past_keep_lead_days_are_erased_by_the_exchange(buyers, exchange, open_books, clock, monkeypatch):
    monkeypatch.setattr(server, "RETENTION_EVERY_S", 0.05)
    ex = await exchange(config(buyers, keep_lead_days=30), clock=clock, ledger=await open_books(0))
    old = await sell(ex, email="old@example.com", phone="415 555 0111")
    clock.advance(20 * 86_400)
    recent = await sell(ex, email="recent@example.com", phone="415 555 0122")
    await drained(ex)
    clock.advance(10 * 86_400 + 1)  # the first lead is 30 days and a second old, the second 10 days

    deadline = time.monotonic() + 10
    while await ex.ledger.get_lead(old) is not None:
        assert time.monotonic() < deadline, "retention did not erase the lead"
        await asyncio.sleep(0.05)
    assert (await ex.ledger.get_lead(recent)) is not None
    status, log = await requests(ex)
    assert status == 200 and [(r["kind"], r["leads_erased"]) for r in log["requests"]] == [("retention", 1)], log
    assert await ex.ledger.get_sale(old) is not None  # the sale stays


async def test_retention_of_more_leads_than_one_transaction_takes(open_books):
    """Retention erases a chunk of leads a transaction; one pass is one request in the log,
    counting every chunk."""
    books = await open_books(0)
    try:
        records = [ping(f"p{n:04}") for n in range(CHUNK + 20)]
        await asyncio.gather(*(books.record_post(record, sold(record), LEAD, at=1_700_000_000.0)
                               for record in records))
        deadline = time.monotonic() + 30
        while books.backlog():
            assert time.monotonic() < deadline, "the journal did not drain"
            await asyncio.sleep(0.02)
        assert await books.erase_leads_before("pass-1", 1_700_000_001.0, 1_700_000_002.0) == CHUNK + 20
        assert [(r.request_id, r.kind, r.leads_erased, r.completed_at)
                for r in await books.privacy_requests(0.0, math.inf, 10)] == [
            ("pass-1", "retention", CHUNK + 20, 1_700_000_002.0)]
        assert await books.get_lead(f"L-{records[-1].ping_id}") is None
        assert await books.erase_leads_before("pass-2", 1_700_000_001.0, 1_700_000_003.0) == 0
        assert len(await books.privacy_requests(0.0, math.inf, 10)) == 1  # a pass that erased nothing is not logged
    finally:
        await books.close()


def test_the_keyed_hashes_are_hmac_sha256_of_the_values_digest():
    """The keyed hash is computed from a key set up once; it must stay the HMAC-SHA256 that
    books already hold entries of, truncated to its first 16 bytes."""
    for n in range(200):
        key = hashlib.sha256(f"key {n}".encode()).digest()
        value = f"lead{n}@example.com"
        digest = hashlib.sha256(value.encode()).digest()
        expected = hmac.digest(key, EMAIL + digest, "sha256")[:16]
        assert Identifiers(key).of_value(EMAIL, value) == expected
        assert Identifiers(key).of_digest(PHONE, digest) == hmac.digest(key, PHONE + digest, "sha256")[:16] != expected


# Refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body,path", [
    ({}, "$"),
    ({"email": "not an email"}, "email"),
    ({"phone": "555 0134"}, "phone"),
    ({"phone": "(015) 555-0134"}, "phone"),
    ({"email": 5}, "email"),
    ({"phone": None}, "phone"),
    ({"email": "a@example.com", "name": "Ada"}, "name"),
], ids=["empty", "bad_email", "short_phone", "bad_area_code", "number", "null", "unknown_field"])
@pytest.mark.parametrize("route", ["opt-outs", "deletions"])
async def test_a_request_that_names_no_consumer_is_422(buyers, exchange, route, body, path):
    ex = await exchange(config(buyers))
    status, answer = await ex.call("POST", f"/v1/privacy/{route}", body, key=OPS_KEY)
    assert_error(status, answer, "validation_error", path)
    assert "Ada" not in json.dumps(answer) and "not an email" not in json.dumps(answer)


async def test_only_an_operator_makes_or_reads_privacy_requests(buyers, exchange):
    ex = await exchange(config(buyers))
    for method, path, body in (("POST", "/v1/privacy/opt-outs", {"phone": "4155550134"}),
                               ("POST", "/v1/privacy/deletions", {"phone": "4155550134"}),
                               ("GET", "/v1/privacy/requests", None)):
        for key, code in ((SELLER_KEY, "forbidden"), (B1_KEY, "forbidden"), (None, "unauthorized"),
                          ("no-such-key-at-all", "unauthorized")):
            assert_error(*(await ex.call(method, path, body, key=key)), code)
    assert (await requests(ex))[1]["requests"] == []  # nothing was taken
    assert (await ex.direct({**PING, "lead": lead()}))[1]["status"] == "sold"
    assert_error(*(await ex.call("POST", "/v1/privacy/opt-outs", data=b"{", key=OPS_KEY)), "malformed_json")
    assert_error(*(await ex.call("POST", "/v1/privacy/opt-outs", data=b"{}", key=OPS_KEY,
                                 headers={"Content-Type": "text/plain"})), "unsupported_media_type")
    for query, name in (("?from=yesterday", "from"), ("?limit=0", "limit"), ("?cursor=zz", "cursor"),
                        ("?kind=deletion", "kind"), ("?tz=Mars/Olympus", "tz"),
                        ("?from=2026-12-02&to=2026-12-01", "to")):
        assert_error(*(await requests(ex, query)), "validation_error", name)


async def test_without_books_there_is_no_list_and_no_request_is_taken(buyers, exchange):
    ex = await exchange(config(buyers), ledger=NullLedger())
    assert_error(*(await opt_out(ex, phone="4155550134")), "ledger_unavailable")
    assert_error(*(await delete(ex, email="a@example.com")), "ledger_unavailable")
    assert_error(*(await requests(ex)), "ledger_unavailable")
    assert (await ex.direct({**PING, "lead": lead()}))[1]["status"] == "sold"
    assert (await ex.ping({**PING, "phone_sha256": PHONE_SHA}))[1]["status"] == "bid"
