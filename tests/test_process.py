"""``pingpost serve`` as an operator runs it: a real process, its output, its exit code."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from tests.helpers_process import Served, run_cli, write_config
from tests.support.buyers import accept, bid
from tests.support.exchange import PING, SELLER_KEY, base_config

#: A lead whose every personal value is easy to spot in a log (no hex-looking names).
PERSONAL = {"first_name": "Zelda", "last_name": "Quimby", "email": "Zelda.Quimby@Example.com",
            "phone": "+1 (415) 555-0134", "zip": "90210", "address": "77 Sycamore Lane", "city": "Springfield",
            "dob": "1971-07-19", "ip_address": "203.0.113.77"}
PERSONAL_NEEDLES = ["zelda", "quimby", "4155550134", "555-0134", "sycamore", "springfield", "1971-07-19",
                    "203.0.113.77"]


async def seller_call(port: int, path: str, payload: Any = None, method: str = "POST") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", json=payload,
                                   headers={"Authorization": f"Bearer {SELLER_KEY}"}) as response:
            return response.status, await response.json(content_type=None)


async def not_http(port: int, data: bytes) -> None:
    """Send bytes that are not a valid HTTP request; the server answers 400 and goes on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]


def one_campaign(buyers: Any, **exchange: Any) -> dict[str, Any]:
    return base_config(buyers, {"id": "c1", "timeout_ms": 300, "post_timeout_ms": 3000},
                       auction_timeout_ms=500, post_timeout_ms=4000, **exchange)


async def test_serve_prints_where_it_listens_and_is_healthy(tmp_path, buyers):
    served = await Served.start(tmp_path, one_campaign(buyers))
    try:
        assert served.listening == f"listening on http://127.0.0.1:{served.port}"
        status, body = await seller_call(served.port, "/healthz", method="GET")
        assert status == 200 and body == {"status": "ok"}
    finally:
        served.signal()
        assert await served.wait() == 0


async def test_bad_config_lists_every_error_with_its_path(tmp_path, buyers):
    config = one_campaign(buyers)
    config["exchange"]["auction_timeout_ms"] = 0
    config["sellers"][0]["revenue_share"] = 2
    config["buyers"][1]["dedupe_days"] = -1
    config["campaigns"][0]["timeout_ms"] = "fast"
    config["campaigns"][0]["colour"] = "blue"
    config["campaigns"].append({"id": "c2", "buyer": "b1", "vertical": "auto"})
    path = write_config(tmp_path, config)
    code, out, err = await run_cli("serve", "--config", str(path), "--port", "1")
    assert code != 0
    assert "listening" not in out
    for where in ("exchange.auction_timeout_ms", "sellers[0].revenue_share", "buyers[1].dedupe_days",
                  "campaigns[0].timeout_ms", "campaigns[0].colour", "campaigns[1].post_url"):
        assert re.search(rf"^\s*{re.escape(where)}: \S", err, re.M), f"{where} not reported in:\n{err}"


async def test_bad_references_are_all_listed_too(tmp_path, buyers):
    """Errors that types cannot catch (references, zones, duplicates), in a TOML file."""
    (tmp_path / "bad.toml").write_text("""
[exchange]
timezone = "Mars/Olympus_Mons"

[[sellers]]
id = "s1"
api_keys = ["key-one-123"]

[[sellers]]
id = "s1"
api_keys = ["key-one-123"]

[[buyers]]
id = "b1"

[[campaigns]]
id = "c1"
buyer = "nobody"
vertical = "auto"
post_url = "http://127.0.0.1:9/post"
""")
    code, out, err = await run_cli("serve", "--config", str(tmp_path / "bad.toml"))
    assert code != 0
    for where in ("exchange.timezone", "sellers[1].id", "sellers[1].api_keys[0]", "campaigns[0].buyer",
                  "campaigns[0].fixed_price"):
        assert re.search(rf"^\s*{re.escape(where)}: \S", err, re.M), f"{where} not reported in:\n{err}"


async def test_missing_config_file_is_refused(tmp_path):
    code, _, err = await run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert code != 0 and "nope.toml" in err


async def test_workers_without_redis_is_refused(tmp_path, buyers):
    path = write_config(tmp_path, one_campaign(buyers))
    code, out, err = await run_cli("serve", "--config", str(path), "--workers", "2")
    assert code != 0 and "listening" not in out
    assert "--redis" in err


@pytest.mark.parametrize("level, logged", [("warning", False), ("info", True), ("debug", True)])
async def test_log_level(tmp_path, buyers, level, logged):
    buyers.script("c1", ping=bid(2.0))
    served = await Served.start(tmp_path, one_campaign(buyers), "--log-level", level)
    try:
        status, _ = await seller_call(served.port, "/v1/ping", PING)
        assert status == 200
    finally:
        served.signal()
        assert await served.wait() == 0
    events = [e.get("event") for e in served.log_events()]
    assert ("ping" in events) is logged


async def test_bad_log_level_is_refused(tmp_path, buyers):
    path = write_config(tmp_path, one_campaign(buyers))
    code, _, err = await run_cli("serve", "--config", str(path), "--log-level", "chatty")
    assert code != 0 and "--log-level" in err


async def test_logs_are_json_lines_without_personal_data(tmp_path, buyers):
    buyers.script("c1", ping=bid(2.5, "bid-1"), post=accept("lead-1"))
    served = await Served.start(tmp_path, one_campaign(buyers))
    try:
        status, answered = await seller_call(served.port, "/v1/ping", {**PING, "source_id": "src-9"})
        assert status == 200 and answered["status"] == "bid"
        status, sold = await seller_call(served.port, "/v1/post", {"ping_id": answered["ping_id"], "lead": PERSONAL})
        assert status == 200 and sold["status"] == "sold"
        status, _ = await seller_call(served.port, "/v1/leads", {**PING, "lead": PERSONAL})
        assert status == 200
        status, _ = await seller_call(served.port, "/v1/ping", {**PING, "attributes": {"email": "zelda@x.org"}})
        assert status == 422
        assert buyers.posts["c1"][0].body["lead"]["last_name"] == "Quimby"  # the buyer does get it
        await not_http(served.port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"z" * 9000 + b"\r\n\r\n")
        await not_http(served.port, b"GARBAGE Zelda\r\n\r\n")
    finally:
        served.signal()
        assert await served.wait() == 0

    events = served.log_events()  # every line parses as JSON
    pings = [e for e in events if e.get("event") == "ping"]
    posts = [e for e in events if e.get("event") == "post"]
    assert len(pings) == 2 and len(posts) == 2, events
    first = next(e for e in pings if e["ping_id"] == answered["ping_id"])
    assert first["seller"] == "acme" and first["status"] == "bid" and isinstance(first["auction_ms"], float)
    post = next(e for e in posts if e["ping_id"] == answered["ping_id"])
    assert post["seller"] == "acme" and post["status"] == "sold" and isinstance(post["post_ms"], float)
    text = "\n".join(served.stderr).lower()
    for needle in PERSONAL_NEEDLES:
        assert needle not in text, f"personal data {needle!r} in the logs"


async def test_sigterm_finishes_the_post_in_flight(tmp_path, buyers):
    buyers.script("c1", ping=bid(2.0), post=accept("slow-lead", delay=1.0))
    served = await Served.start(tmp_path, one_campaign(buyers))
    try:
        status, answered = await seller_call(served.port, "/v1/ping", PING)
        assert status == 200 and answered["status"] == "bid"
        post = asyncio.ensure_future(seller_call(served.port, "/v1/post",
                                                 {"ping_id": answered["ping_id"], "lead": PERSONAL}))
        for _ in range(100):
            if buyers.posts.get("c1"):
                break
            await asyncio.sleep(0.01)
        assert buyers.posts.get("c1"), "the post reached the buyer"
        served.signal()
        await asyncio.sleep(0.1)

        # After SIGTERM no new ping gets a 200: refused, or a 503.
        try:
            status, body = await seller_call(served.port, "/v1/ping", PING)
        except aiohttp.ClientConnectionError:
            pass
        else:
            assert status == 503, body

        status, sold = await post
        assert status == 200 and sold["status"] == "sold" and sold["price"] == 2.0
        assert await served.wait() == 0
    finally:
        await served.kill()
    posts = [e for e in served.log_events() if e.get("event") == "post"]
    assert [p["status"] for p in posts] == ["sold"]


async def test_sigterm_when_idle_exits_zero_at_once(tmp_path, buyers):
    served = await Served.start(tmp_path, one_campaign(buyers))
    served.signal()
    started = asyncio.get_running_loop().time()
    assert await served.wait() == 0
    assert asyncio.get_running_loop().time() - started < 3



@pytest.mark.parametrize("flags, says", [
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "--tls-cert"),
    (["--tls-cert", "/nonexistent/cert.pem"], "--tls-key"),
    (["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
])
async def test_bad_tls_files_are_refused_clearly(tmp_path, buyers, flags, says):
    path = write_config(tmp_path, one_campaign(buyers))
    code, out, err = await run_cli("serve", "--config", str(path), "--port", "0", *flags)
    assert code != 0 and "listening" not in out
    assert says in err and "Traceback" not in err


async def test_port_in_use_is_refused_clearly(tmp_path, buyers):
    served = await Served.start(tmp_path, one_campaign(buyers))
    try:
        path = write_config(tmp_path, one_campaign(buyers), "second.json")
        code, out, err = await run_cli("serve", "--config", str(path), "--port", str(served.port))
        assert code != 0 and "listening" not in out
        assert f":{served.port}" in err and "Traceback" not in err
    finally:
        served.signal()
        assert await served.wait() == 0
