"""Every way a buyer can misbehave, on ping and on post, one table row each.

A misbehaving campaign sits next to a well-behaved one. Whatever the bad one does, the
seller gets its answer in time, the trace records the exact reason, the bad campaign never
wins, and on post the cascade moves on to the next bidder. The reasons are the ones listed
in docs/buyer-protocol.md.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trustme

from pingpost import http1
from tests.helpers_raw import (RawBuyer, Script, answer, close_midway, closed_port_url, garbage, hang, reset,
                               trickle)
from tests.support.buyers import accept, bid
from tests.support.exchange import LEAD, PING, base_config

TIMEOUT_MS = 200        # the bad campaign's ping timeout
POST_TIMEOUT_MS = 300   # its post timeout
AUCTION_MS = 1000
SLACK_S = 0.3           # the exchange's own overhead, generously
#: the campaign timeout when every fault shares one auction: a stall of the one event loop
#: that runs the exchange, the buyers and the seller (a full garbage collection on a loaded
#: machine) lets every timer fire before any answer is read, so it is far from the work
ALL_AT_ONCE_TIMEOUT_MS = 1000
SLOW_S = 2.0            # a slow buyer's delay: past every timeout in this file

BIG = b'{"bid": 9.99, "pad": "' + b"x" * (70 * 1024) + b'"}'
BIG_ACCEPT = b'{"accepted": true, "pad": "' + b"x" * (70 * 1024) + b'"}'


def until_close(body: bytes, version: str = "1.1") -> Script:
    """An answer whose head gives no length: HTTP/1.0, or HTTP/1.1 with ``Connection: close``.
    Its body is whatever comes before the buyer closes the connection."""
    close = "" if version == "1.0" else "Connection: close\r\n"
    head = f"HTTP/{version} 200 OK\r\nContent-Type: application/json\r\n{close}\r\n".encode()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.01)  # the body arrives apart from the head
        writer.write(body)
        await writer.drain()
        return False  # the buyer closes: that ends the body
    return script


def framed(body: bytes) -> bytes:
    """A whole 200 JSON answer with its Content-Length."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def with_leftover(body: bytes, extra: bytes) -> Script:
    """A complete answer and, in the same write, bytes no request asked for."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(framed(body) + extra)
        await writer.drain()
        return True  # and keeps the connection open
    return script


def rows(*items: tuple[str, Script, str]) -> list[Any]:
    return [pytest.param(script, reason, id=name) for name, script, reason in items]


PING_FAULTS = rows(
    ("http_500", answer(500, {"bid": 9.99}), "error:http_500"),
    ("http_404", answer(404, "no such page", "text/plain"), "error:http_404"),
    ("redirect_302", answer(302, b"", None, {"Location": "/elsewhere"}), "error:http_302"),
    ("http_201", answer(201, {"bid": 9.99}), "error:http_201"),
    ("bad_json", answer(200, '{"bid": 9.99'), "error:bad_json"),
    ("nested_too_deep", answer(200, '{"bid": 9.99, "x": ' + "[" * 20000 + "]" * 20000 + "}"), "error:bad_json"),
    ("empty_200", answer(200, b""), "error:bad_json"),
    ("non_object_json", answer(200, [9.99]), "error:bad_answer"),
    ("json_string", answer(200, '"9.99"'), "error:bad_answer"),
    ("bid_id_not_string", answer(200, {"bid": 9.99, "bid_id": 5}), "error:bad_answer"),
    ("string_bid", answer(200, {"bid": "9.99"}), "error:bad_bid"),
    ("negative_bid", answer(200, {"bid": -9.99}), "error:bad_bid"),
    ("huge_exponent", answer(200, '{"bid": 1e999}'), "error:bad_bid"),
    ("nan_literal", answer(200, '{"bid": NaN}'), "error:bad_json"),
    ("infinity_literal", answer(200, '{"bid": Infinity}'), "error:bad_json"),
    ("nan_string", answer(200, {"bid": "NaN"}), "error:bad_bid"),
    ("bool_bid", answer(200, {"bid": True}), "error:bad_bid"),
    ("too_large", answer(200, BIG), "error:too_large"),
    ("too_large_chunked", answer(200, BIG, length=False), "error:too_large"),
    ("reset", reset, "error:reset"),
    ("closed_midway", close_midway, "error:reset"),
    ("not_http", garbage, "error:protocol"),
    ("silent", hang, "timeout"),
    ("slow_headers", answer(200, {"bid": 9.99}, delay=SLOW_S), "timeout"),
    ("slow_trickle", trickle(b'{"bid": 9.99}', SLOW_S / 10), "timeout"),
    ("wrong_content_type", answer(200, {"bid": 9.99}, "text/html"), "error:content_type"),
    ("no_content_type", answer(200, {"bid": 9.99}, None), "error:content_type"),
    ("no_content_204", answer(204, None, None), "no_bid"),
    ("bid_zero", answer(200, {"bid": 0}), "no_bid"),
    ("bid_null", answer(200, {"bid": None, "bid_id": "n1"}), "no_bid"),
    ("bid_missing", answer(200, {}), "no_bid"),
    ("bid_below_a_cent", answer(200, {"bid": 0.004}), "no_bid"),
    ("until_close_http10", until_close(b'{"bid": 0}', "1.0"), "no_bid"),
    ("until_close_connection_close", until_close(b'{"bid": 0}'), "no_bid"),
    ("until_close_empty", until_close(b""), "error:bad_json"),
    ("until_close_too_large", until_close(BIG), "error:too_large"),
    ("leftover_garbage", with_leftover(b'{"bid": 0}', b"garbage"), "no_bid"),
    ("leftover_partial_head", with_leftover(b'{"bid": 0}', b"HTTP/1.1 200 OK\r\nContent-Le"), "no_bid"),
    ("leftover_second_answer", with_leftover(b'{"bid": 0}', framed(b'{"bid": 50}')), "no_bid"),
)

POST_FAULTS = rows(
    ("http_500", answer(500, {"accepted": True}), "rejected:error:http_500"),
    ("http_404", answer(404, "no such page", "text/plain"), "rejected:error:http_404"),
    ("redirect_302", answer(302, b"", None, {"Location": "/elsewhere"}), "rejected:error:http_302"),
    ("http_201", answer(201, {"accepted": True}), "rejected:error:http_201"),
    ("no_content_204", answer(204, None, None), "rejected:error:http_204"),
    ("bad_json", answer(200, '{"accepted": tru'), "rejected:error:bad_json"),
    ("nested_too_deep", answer(200, '{"accepted": true, "x": ' + "[" * 20000 + "]" * 20000 + "}"), "rejected:error:bad_json"),
    ("empty_200", answer(200, b""), "rejected:error:bad_json"),
    ("non_object_json", answer(200, [True]), "rejected:error:bad_answer"),
    ("accepted_string", answer(200, {"accepted": "true"}), "rejected:error:bad_answer"),
    ("accepted_missing", answer(200, {"lead_id": "x"}), "rejected:error:bad_answer"),
    ("too_large", answer(200, BIG_ACCEPT), "rejected:error:too_large"),
    ("too_large_chunked", answer(200, BIG_ACCEPT, length=False), "rejected:error:too_large"),
    ("reset", reset, "rejected:error:reset"),
    ("closed_midway", close_midway, "rejected:error:reset"),
    ("not_http", garbage, "rejected:error:protocol"),
    ("silent", hang, "rejected:timeout"),
    ("slow_trickle", trickle(b'{"accepted": true}', SLOW_S / 10), "rejected:timeout"),
    ("wrong_content_type", answer(200, {"accepted": True}, "text/plain"), "rejected:error:content_type"),
    ("reject_with_reason", answer(200, {"accepted": False, "reason": "dup lead!"}), "rejected:dup_lead"),
    ("reject_without_reason", answer(200, {"accepted": False}), "rejected:unspecified"),
    ("until_close_http10", until_close(b'{"accepted": false, "reason": "read to the end"}', "1.0"),
     "rejected:read_to_the_end"),
    ("until_close_connection_close", until_close(b'{"accepted": false, "reason": "read to the end"}'),
     "rejected:read_to_the_end"),
    ("until_close_empty", until_close(b""), "rejected:error:bad_json"),
    ("leftover_garbage", with_leftover(b'{"accepted": false, "reason": "x"}', b"garbage"), "rejected:x"),
    ("leftover_partial_head", with_leftover(b'{"accepted": false, "reason": "x"}', b"HTTP/1.1 200 OK\r\nContent-Le"),
     "rejected:x"),
)


def two_campaigns(buyers: Any, raw: RawBuyer, bad_ping: str, bad_post: str) -> dict[str, Any]:
    return base_config(
        buyers,
        {"id": "bad", "buyer": "b1", "ping_url": bad_ping, "post_url": bad_post, "timeout_ms": TIMEOUT_MS,
         "post_timeout_ms": POST_TIMEOUT_MS},
        {"id": "good", "buyer": "b2", "timeout_ms": TIMEOUT_MS, "post_timeout_ms": POST_TIMEOUT_MS},
        auction_timeout_ms=AUCTION_MS, bench_after_timeouts=0,
    )


async def timed_ping(ex: Any) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, body = await ex.ping(PING)
    return status, body, time.monotonic() - started


def outcome_of(trace: dict[str, Any], campaign_id: str) -> dict[str, Any]:
    return next(c for c in trace["campaigns"] if c["campaign_id"] == campaign_id)


@pytest.mark.parametrize("script, reason", PING_FAULTS)
async def test_ping_fault(buyers, exchange, raw_buyer, script, reason):
    """Two auctions in a row: the second shows that nothing of the first answer stayed on a
    pooled connection to spoil the next call."""
    buyers.script("good", ping=bid(1.00, "g1"), post=accept("g-lead"))
    bad_ping = raw_buyer.script("ping", script)
    bad_post = raw_buyer.script("post", answer(200, {"accepted": True}))
    ex = await exchange(two_campaigns(buyers, raw_buyer, bad_ping, bad_post))

    for auction in (1, 2):
        status, answered, elapsed = await timed_ping(ex)
        assert status == 200, answered
        assert elapsed < AUCTION_MS / 1000 + SLACK_S
        assert answered["status"] == "bid" and answered["price"] == 1.0, "the good campaign wins, the bad never"

        status, trace = await ex.trace(answered["ping_id"])
        assert status == 200
        bad = outcome_of(trace, "bad")
        assert bad["outcome"] == reason, f"auction {auction}"
        assert "bid" not in bad
        assert outcome_of(trace, "good")["outcome"] == "bid"
        assert len(raw_buyer.requests["/ping"]) == auction

        status, sold = await ex.post(answered["ping_id"], LEAD)
        assert status == 200 and sold["status"] == "sold" and sold["attempts"] == 1 and sold["price"] == 1.0
        assert "/post" not in raw_buyer.requests, "a campaign without a valid bid is never offered the lead"


@pytest.mark.parametrize("script, reason", POST_FAULTS)
async def test_post_fault(buyers, exchange, raw_buyer, script, reason):
    """Two ping-post rounds in a row, for the same reason as in ``test_ping_fault``."""
    buyers.script("good", ping=bid(3.00, "g1"), post=accept("g-lead"))
    bad_ping = raw_buyer.script("ping", answer(200, {"bid": 5.00, "bid_id": "b1"}))
    bad_post = raw_buyer.script("post", script)
    ex = await exchange(two_campaigns(buyers, raw_buyer, bad_ping, bad_post))

    for round_ in (1, 2):
        status, answered, _ = await timed_ping(ex)
        assert status == 200 and answered["price"] == 5.0, f"round {round_}: {answered}"

        started = time.monotonic()
        status, sold = await ex.post(answered["ping_id"], LEAD)
        assert status == 200, sold
        assert time.monotonic() - started < POST_TIMEOUT_MS / 1000 + 1.0
        assert sold["status"] == "sold" and sold["price"] == 3.0 and sold["attempts"] == 2, "the cascade moves on"
        assert len(raw_buyer.requests["/post"]) == round_

        status, trace = await ex.trace(answered["ping_id"])
        offers = trace["post"]["offers"]
        assert [o["campaign_id"] for o in offers] == ["bad", "good"]
        assert offers[0]["outcome"] == reason, f"round {round_}"
        assert offers[1]["outcome"] == "accepted"


async def test_unreachable_buyer(buyers, exchange):
    """Nothing listens at the campaign's URLs: error:connection on ping and on post."""
    dead = closed_port_url()
    buyers.script("good", ping=bid(1.00), post=accept())
    buyers.script("fixed", post=accept())
    config = base_config(
        buyers,
        {"id": "dead", "ping_url": dead, "post_url": dead, "timeout_ms": TIMEOUT_MS},
        {"id": "dead_fixed", "buyer": "b3", "ping_url": None, "fixed_price": 9.0, "post_url": dead},
        {"id": "good", "buyer": "b2", "timeout_ms": TIMEOUT_MS},
        auction_timeout_ms=AUCTION_MS)
    ex = await exchange(config)
    status, answered, elapsed = await timed_ping(ex)
    assert status == 200 and answered["price"] == 9.0 and elapsed < 1.0
    _, trace = await ex.trace(answered["ping_id"])
    assert outcome_of(trace, "dead")["outcome"] == "error:connection"

    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 1.0 and sold["attempts"] == 2
    _, trace = await ex.trace(answered["ping_id"])
    assert [o["outcome"] for o in trace["post"]["offers"]] == ["rejected:error:connection", "accepted"]


async def test_every_campaign_misbehaves_at_once(buyers, exchange, raw_buyer):
    """All the faults in one auction: the seller still gets a no_bid within the deadline."""
    campaigns = []
    expected = {}
    for i, param in enumerate(PING_FAULTS):
        script, reason = param.values
        cid = f"c{i}"
        url = raw_buyer.script(cid, script)
        campaigns.append({"id": cid, "ping_url": url, "post_url": url, "timeout_ms": ALL_AT_ONCE_TIMEOUT_MS})
        expected[cid] = reason
    ex = await exchange(base_config(buyers, *campaigns, auction_timeout_ms=2 * ALL_AT_ONCE_TIMEOUT_MS,
                                    bench_after_timeouts=0))
    status, answered, elapsed = await timed_ping(ex)
    assert status == 200 and answered["status"] == "no_bid", answered
    assert elapsed < ALL_AT_ONCE_TIMEOUT_MS / 1000 + SLACK_S + 0.2
    _, trace = await ex.trace(answered["ping_id"])
    assert {c["campaign_id"]: c["outcome"] for c in trace["campaigns"]} == expected


def count_lookups(monkeypatch: pytest.MonkeyPatch, host: str) -> list[str]:
    """Records the event loop's lookups of ``host``; each still goes to the system's resolver."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    seen: list[str] = []

    async def getaddrinfo(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            seen.append(name)
        return await real(name, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return seen


async def test_unresolvable_buyer(buyers, exchange, monkeypatch):
    """A host name that does not resolve (``.invalid`` never does): error:dns on ping and on
    post. The failed lookup stands for a moment only, then the name is looked up again."""
    host = "no-such-buyer.invalid"
    lookups = count_lookups(monkeypatch, host)
    dead = f"http://{host}/ping"
    buyers.script("good", ping=bid(1.00), post=accept())
    config = base_config(
        buyers,
        {"id": "dead", "ping_url": dead, "post_url": dead, "timeout_ms": TIMEOUT_MS},
        {"id": "dead_fixed", "buyer": "b3", "ping_url": None, "fixed_price": 9.0, "post_url": dead},
        {"id": "good", "buyer": "b2", "timeout_ms": TIMEOUT_MS},
        auction_timeout_ms=AUCTION_MS)
    ex = await exchange(config)
    status, answered, elapsed = await timed_ping(ex)
    assert status == 200 and answered["price"] == 9.0 and elapsed < 1.0
    _, trace = await ex.trace(answered["ping_id"])
    assert outcome_of(trace, "dead")["outcome"] == "error:dns"

    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 1.0 and sold["attempts"] == 2
    _, trace = await ex.trace(answered["ping_id"])
    assert [o["outcome"] for o in trace["post"]["offers"]] == ["rejected:error:dns", "accepted"]
    assert len(lookups) == 1, "the post, right after the ping, met the failed lookup"

    await asyncio.sleep(http1.DNS_FAILURE_TTL_S + 0.1)
    status, answered, _ = await timed_ping(ex)
    _, trace = await ex.trace(answered["ping_id"])
    assert outcome_of(trace, "dead")["outcome"] == "error:dns"
    assert len(lookups) == 2, "a failed lookup is tried again after a moment"


async def test_a_buyer_host_name_is_looked_up_once(buyers, exchange, raw_buyer, monkeypatch):
    """``localhost`` in the URL: looked up once, then each new connection goes to its address."""
    lookups = count_lookups(monkeypatch, "localhost")
    port = raw_buyer.url.rsplit(":", 1)[1]
    raw_buyer.script("ping", answer(200, {"bid": 2.5}, headers={"Connection": "close"}))  # a new connection each
    ex = await exchange(base_config(buyers, {"id": "named", "ping_url": f"http://localhost:{port}/ping",
                                             "timeout_ms": 500}))
    for _ in range(3):
        status, answered = await ex.ping(PING)
        assert status == 200 and answered["price"] == 2.5, answered
    assert raw_buyer.total_connections == 3
    assert lookups == ["localhost"]


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_an_answer_ended_by_close_is_read_whole(buyers, exchange, raw_buyer, version):
    """A bid and an acceptance that end where the buyer closes the connection are read like
    any other answer, and such a connection is never reused."""
    buyers.script("good", ping=bid(1.00), post=accept())
    ping = raw_buyer.script("ping", until_close(b'{"bid": 7.5, "bid_id": "b-eof"}', version))
    post = raw_buyer.script("post", until_close(b'{"accepted": true, "lead_id": "eof-lead"}', version))
    ex = await exchange(base_config(buyers, {"id": "eof", "ping_url": ping, "post_url": post},
                                    {"id": "good", "buyer": "b2"}))
    for _ in (1, 2):
        status, answered = await ex.ping(PING)
        assert status == 200 and answered["price"] == 7.5, answered
        status, sold = await ex.post(answered["ping_id"], LEAD)
        assert status == 200 and sold["status"] == "sold" and sold["price"] == 7.5 and sold["attempts"] == 1
        assert raw_buyer.requests["/post"][-1]["bid_id"] == "b-eof"
    assert raw_buyer.total_connections == 4, "one connection per call"
    assert len(raw_buyer.requests["/ping"]) == 2 and len(raw_buyer.requests["/post"]) == 2


async def test_buyers_are_asked_for_no_compression(buyers, exchange):
    """Answers are read as they come: every request says ``Accept-Encoding: identity``."""
    buyers.script("c1", ping=bid(1.00), post=accept())
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    status, answered = await ex.ping(PING)
    assert status == 200 and answered["price"] == 1.0
    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold"
    assert buyers.pings["c1"][0].headers["Accept-Encoding"] == "identity"
    assert buyers.posts["c1"][0].headers["Accept-Encoding"] == "identity"


@pytest.fixture
async def tls_raw_buyer(tmp_path: Path) -> AsyncIterator[tuple[RawBuyer, str]]:
    """A raw buyer at ``https://localhost:P`` whose certificate names ``localhost`` only (no
    IP address), and the file of the CA that signed it."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = RawBuyer()
    await server.start(context)
    yield server, str(ca_file)
    await server.stop()


async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Half a bid without length, then the TCP connection dropped without a TLS close."""
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"bid\": 6")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()
    return False


@pytest.mark.parametrize("script, reason", [
    pytest.param(until_close(b'{"bid": 4.25}'), "bid", id="ended_by_a_tls_close"),
    pytest.param(cut, "error:bad_json", id="cut_without_a_tls_close"),
])
async def test_tls_buyer_by_name(buyers, exchange, tls_raw_buyer, script, reason):
    """Over TLS the exchange connects to localhost's address but checks the certificate
    against the name (and sends it as SNI). An answer without length ends where the
    connection does; asyncio's TLS does not tell a TLS close from a bare TCP close, but an
    answer cut short is a JSON object without its closing brace, never a bid."""
    raw, ca_file = tls_raw_buyer
    ping = raw.script("ping", script)
    ex = await exchange(base_config(buyers, {"id": "tls", "ping_url": ping, "timeout_ms": TIMEOUT_MS}), ca_file=ca_file)
    status, answered = await ex.ping(PING)
    assert status == 200
    _, trace = await ex.trace(answered["ping_id"])
    assert outcome_of(trace, "tls")["outcome"] == reason
