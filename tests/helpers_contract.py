"""Shared helpers for the contract tests (test_ping, test_post, test_caps, ...).

Everything here drives the real exchange over HTTP; nothing is mocked. Kept apart from
``tests/support/`` (which other suites share) so the contract suite can grow its own tools.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from pingpost.errors import Code
from tests.support.buyers import BuyerServer
from tests.support.exchange import LEAD, PING, SELLER_KEY, base_config

#: Every error code with its documented status, from the exchange's one table of them.
ERROR_STATUSES = {code.value: code.status for code in Code}


def make_config(buyers: BuyerServer, *campaigns: dict[str, Any], acme: dict[str, Any] | None = None,
                other: dict[str, Any] | None = None, buyer_settings: dict[str, dict[str, Any]] | None = None,
                **exchange: Any) -> dict[str, Any]:
    """``base_config`` plus per-seller and per-buyer settings (revenue_share, min_bid, dedupe_days...)."""
    config = base_config(buyers, *campaigns, **exchange)
    sellers = {s["id"]: s for s in config["sellers"]}
    sellers["acme"].update(acme or {})
    sellers["other"].update(other or {})
    for b in config["buyers"]:
        b.update((buyer_settings or {}).get(b["id"], {}))
    return config


def assert_error_shape(body: Any) -> None:
    """The contract's error shape, exactly: one ``error`` key with code, message and fields."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str), error
    assert isinstance(error["fields"], list), error
    for item in error["fields"]:
        assert set(item) == {"path", "message"}, item
        assert isinstance(item["path"], str) and isinstance(item["message"], str), item


def assert_error(status: int, body: Any, code: str, path: str | None = None,
                 expect_status: int | None = None) -> None:
    """A contract error with this code and its documented status (and this field path, if given)."""
    assert_error_shape(body)
    assert body["error"]["code"] == code, body
    assert status == (expect_status if expect_status is not None else ERROR_STATUSES[code]), (status, body)
    if path is not None:
        paths = [f["path"] for f in body["error"]["fields"]]
        assert path in paths, (path, body)


def parse_rfc3339_utc(value: str) -> datetime.datetime:
    """An RFC 3339 timestamp in UTC (``Z`` or ``+00:00``) as an aware datetime."""
    assert isinstance(value, str) and "T" in value, value
    assert value.endswith("Z") or value.endswith("+00:00"), value
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == datetime.timedelta(0), value
    return parsed


async def raw(ex: Any, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None,
              key: str | None = SELLER_KEY) -> tuple[int, str, bytes]:
    """One request with full control of the body and headers; returns (status, content type, raw body)."""
    h = {"Authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    async with ex.session.request(method, ex.url + path, data=data, headers=h) as response:
        return response.status, response.content_type, await response.read()


async def chunks(payload: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    """An async body: aiohttp sends it with ``Transfer-Encoding: chunked`` and no Content-Length."""
    for start in range(0, len(payload), size):
        yield payload[start:start + size]


async def ping_ok(ex: Any, body: dict[str, Any] | None = None, key: str = SELLER_KEY) -> dict[str, Any]:
    status, answer = await ex.ping(body if body is not None else PING, key)
    assert status == 200, answer
    return answer


async def sold_ping(ex: Any, lead: dict[str, Any] | None = None, ping: dict[str, Any] | None = None,
                    key: str = SELLER_KEY) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ping (expecting a bid) then post; returns (ping answer, post answer)."""
    answer = await ping_ok(ex, ping, key)
    assert answer["status"] == "bid", answer
    status, result = await ex.post(answer["ping_id"], lead if lead is not None else LEAD, key)
    assert status == 200, result
    return answer, result


async def outcomes(ex: Any, ping_id: str, key: str = SELLER_KEY) -> dict[str, str]:
    """campaign_id -> outcome of the ping phase, from the trace endpoint."""
    status, trace = await ex.trace(ping_id, key)
    assert status == 200, trace
    return {c["campaign_id"]: c["outcome"] for c in trace["campaigns"]}


async def offers(ex: Any, ping_id: str, key: str = SELLER_KEY) -> list[tuple[str, str]]:
    """(campaign_id, outcome) of every post offer in cascade order, from the trace endpoint."""
    status, trace = await ex.trace(ping_id, key)
    assert status == 200, trace
    return [(o["campaign_id"], o["outcome"]) for o in trace["post"]["offers"]]


async def eventually(check: Callable[[], Awaitable[bool]], deadline_s: float = 5.0, step_s: float = 0.05) -> None:
    """Poll ``check`` until it holds; fail after a generous deadline."""
    end = time.monotonic() + deadline_s
    while True:
        if await check():
            return
        assert time.monotonic() < end, "condition not reached before the deadline"
        await asyncio.sleep(step_s)


def lead(**changes: Any) -> dict[str, Any]:
    """The standard LEAD with some fields changed (a value of None removes the field)."""
    out = {**LEAD, **changes}
    return {k: v for k, v in out.items() if v is not None}


def ping(**changes: Any) -> dict[str, Any]:
    """The standard PING with some fields changed (a value of None removes the field)."""
    out = {**PING, **changes}
    return {k: v for k, v in out.items() if v is not None}
