"""A post that could not be sent is tried again; one that may have reached the buyer never is.

"Could not be sent" is a connection that was never opened: refused, or a host name that
does not resolve. The buyer here is a real server on a socket that is bound but not yet
listening (so connecting to it is refused) and starts listening when the first try has
been refused; every try is in the trace.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from pingpost import buyers as buyer_client
from tests.helpers_raw import closed_port_url
from tests.support.buyers import BuyerServer, Reply, accept
from tests.support.exchange import LEAD, PING, base_config


def watch_connects(monkeypatch: pytest.MonkeyPatch, port: int,
                   refused: Callable[[int], Awaitable[None]] | None = None) -> list[int]:
    """Every connection the event loop opens to ``port`` (the real connect, recorded);
    ``refused(n)`` runs when the n-th is refused."""
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    seen: list[int] = []

    async def create_connection(*args: Any, **kwargs: Any) -> Any:
        if (args[2] if len(args) > 2 else kwargs.get("port")) != port:
            return await real(*args, **kwargs)
        seen.append(port)
        try:
            return await real(*args, **kwargs)
        except ConnectionRefusedError:
            if refused is not None:
                await refused(len(seen))
            raise

    monkeypatch.setattr(loop, "create_connection", create_connection)
    return seen


@pytest.fixture
async def late_buyer(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[BuyerServer, list[int]]]:
    """A buyer whose port refuses connections until the exchange's first try is refused,
    and the connections the exchange opened to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = BuyerServer()
    server.url = f"http://127.0.0.1:{port}"

    async def listen(n: int) -> None:
        if n == 1:
            await server.start(sock=sock)

    connects = watch_connects(monkeypatch, port, listen)
    yield server, connects
    await server.stop()
    sock.close()


async def test_a_refused_post_is_tried_again_and_sold(buyers, exchange, late_buyer) -> None:
    late, tries = late_buyer
    late.script("late", post=accept("late-lead-1"))
    config = base_config(buyers, {"id": "late", "ping_url": None, "fixed_price": 9.0, "post_url": late.post_url("late")})
    ex = await exchange(config)
    status, answered = await ex.ping(PING)
    assert status == 200 and answered["price"] == 9.0

    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["attempts"] == 1, sold
    assert len(late.posts["late"]) == 1 and len(tries) == 2
    _, trace = await ex.trace(answered["ping_id"])
    (offer,) = trace["post"]["offers"]
    assert offer["outcome"] == "accepted"
    assert [t["outcome"] for t in offer["tries"]] == ["rejected:error:connection", "accepted"]


async def test_an_unreachable_buyer_is_tried_a_few_times_then_the_cascade_moves_on(buyers, exchange) -> None:
    dead = closed_port_url("/post")
    buyers.script("good", post=accept())
    config = base_config(buyers, {"id": "dead", "ping_url": None, "fixed_price": 9.0, "post_url": dead},
                         {"id": "good", "buyer": "b2", "ping_url": None, "fixed_price": 5.0}, post_timeout_ms=10000)
    ex = await exchange(config)
    _, answered = await ex.ping(PING)
    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 5.0 and sold["attempts"] == 2
    _, trace = await ex.trace(answered["ping_id"])
    dead_offer, good_offer = trace["post"]["offers"]
    assert dead_offer["outcome"] == "rejected:error:connection"
    assert [t["outcome"] for t in dead_offer["tries"]] == ["rejected:error:connection"] * buyer_client.POST_TRIES
    assert good_offer["outcome"] == "accepted" and "tries" not in good_offer


@pytest.mark.parametrize(("reply", "outcome"), [
    (Reply(reset=True), "rejected:error:reset"),
    (Reply(status=500, json={"error": "down"}), "rejected:error:http_500"),
    (Reply(status=503, json={"error": "busy"}), "rejected:error:http_503"),
    (Reply(delay=1.0, json={"accepted": True}), "rejected:timeout"),
], ids=["reset_after_reading", "http_500", "http_503", "timeout"])
async def test_a_post_that_reached_the_buyer_is_sent_once(buyers, exchange, reply: Reply, outcome: str) -> None:
    """Whatever happens once the buyer has the request (it resets, fails, or is slow), the
    lead is not sent to it again: the cascade moves on."""
    buyers.script("once", post=reply)
    buyers.script("next", post=accept())
    config = base_config(buyers, {"id": "once", "ping_url": None, "fixed_price": 9.0, "post_timeout_ms": 300},
                         {"id": "next", "buyer": "b2", "ping_url": None, "fixed_price": 5.0})
    ex = await exchange(config)
    _, answered = await ex.ping(PING)
    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 5.0
    assert len(buyers.posts["once"]) == 1
    _, trace = await ex.trace(answered["ping_id"])
    first = trace["post"]["offers"][0]
    assert first["outcome"] == outcome and "tries" not in first


async def test_a_ping_is_not_tried_again(buyers, exchange, monkeypatch) -> None:
    """Only posts are retried: a ping's deadline is the seller's, and the next ping comes soon."""
    dead = closed_port_url("/ping")
    port = int(dead.rsplit(":", 1)[1].split("/")[0])
    connects = watch_connects(monkeypatch, port)
    buyers.script("good", ping=Reply(json={"bid": 1.0}))
    config = base_config(buyers, {"id": "dead", "ping_url": dead, "post_url": dead}, {"id": "good", "buyer": "b2"})
    ex = await exchange(config)
    _, answered = await ex.ping(PING)
    _, trace = await ex.trace(answered["ping_id"])
    (dead_outcome,) = [c for c in trace["campaigns"] if c["campaign_id"] == "dead"]
    assert dead_outcome["outcome"] == "error:connection" and connects == [port]
