"""The simulated buyers answer per the buyer protocol, and the seller traffic is valid.

Real servers on 127.0.0.1: the simulator runs in the test's loop, clients are aiohttp or
raw sockets (to see pipelining and keep-alive as they are on the wire).
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from pingpost import normalize, schema
from pingpost.launch import Child
from pingpost.sim import buyers, traffic

Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_sim() -> AsyncIterator[Start]:
    """Start a simulator from a profile's ``default`` and ``campaigns``; gives its base URL."""
    servers: list[Any] = []

    async def start(default: dict[str, Any] | None = None, campaigns: list[dict[str, Any]] = (),
                    seed: int = 7, **options: Any) -> str:
        instant = {"latency_ms": 0, "post_latency_ms": 0, "jitter_ms": 0}
        profile = buyers.build_profile(instant | (default or {}), list(campaigns), **options)
        server = await buyers.start("127.0.0.1", 0, profile, seed=seed)
        servers.append(server)
        return "http://127.0.0.1:%d" % server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def call(session: aiohttp.ClientSession, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.read()


async def stats(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/stats") as response:
        return await response.json()


async def test_ping_answers_a_bid_in_dollars_and_cents(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim({"no_bid_rate": 0, "bid_min": 2.5, "bid_max": 9.99})
    for _ in range(50):
        status, body = await call(session, base + "/c1/ping")
        assert status == 200
        assert re.fullmatch(rb'\{"bid":\d+\.\d\d,"bid_id":"c1-\d+"\}', body), body
        answer = msgspec.json.decode(body, type=schema.BidAnswer)
        assert 2.5 <= answer.bid <= 9.99


async def test_no_bid_is_204_or_bid_zero(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim({"no_bid_rate": 1})
    seen = Counter()
    for _ in range(40):
        status, body = await call(session, base + "/c1/ping")
        seen[(status, body)] += 1
    assert set(seen) == {(204, b""), (200, b'{"bid":0}')}


async def test_rates_are_roughly_honoured(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim({"no_bid_rate": 0.3, "error_rate": 0.1, "reject_rate": 0.25, "post_error_rate": 0.05})
    n = 2000
    kinds = Counter()
    for _ in range(n):
        status, body = await call(session, base + "/c1/ping")
        if status == 204 or body == b'{"bid":0}':
            kinds["no_bid"] += 1
        elif status != 200 or not body.endswith(b"}"):
            kinds["error"] += 1
        else:
            kinds["bid"] += 1
    for _ in range(n):
        status, body = await call(session, base + "/c1/post")
        kinds["accepted" if body.startswith(b'{"accepted":true') else
              "rejected" if body.startswith(b'{"accepted":false') else "post_error"] += 1
    assert kinds["no_bid"] == pytest.approx(0.3 * n, rel=0.12)
    assert kinds["error"] == pytest.approx(0.1 * n, rel=0.2)
    assert kinds["rejected"] == pytest.approx(0.25 * n, rel=0.12)
    assert kinds["post_error"] == pytest.approx(0.05 * n, rel=0.3)
    counted = (await stats(session, base))["campaigns"]["c1"]
    assert (counted["pings"], counted["bids"], counted["no_bids"], counted["errors"]) == (
        n, kinds["bid"], kinds["no_bid"], kinds["error"])
    assert (counted["posts"], counted["accepted"], counted["rejected"]) == (n, kinds["accepted"], kinds["rejected"])


async def test_latency_is_applied(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim({"latency_ms": 80, "jitter_ms": 10, "no_bid_rate": 0})
    started = time.perf_counter()
    await asyncio.gather(*(call(session, base + "/c1/ping") for _ in range(20)))
    elapsed = time.perf_counter() - started
    assert 0.07 <= elapsed < 0.5  # in parallel: one latency, not twenty


async def test_timeouts_do_not_block_other_requests(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim(campaigns=[{"id": "slow", "timeout_rate": 1, "no_bid_rate": 0},
                                      {"id": "fast", "latency_ms": 5}])
    held = [asyncio.create_task(call(session, base + "/slow/ping")) for _ in range(10)]
    started = time.perf_counter()
    answers = await asyncio.gather(*(call(session, base + "/fast/ping") for _ in range(50)))
    assert time.perf_counter() - started < 1
    assert {status for status, _ in answers} <= {200, 204}
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in held)
    for task in held:
        task.cancel()
    counted = (await stats(session, base))["campaigns"]
    assert counted["slow"]["timeouts"] == 10


async def test_held_request_is_answered_after_hold(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim({"timeout_rate": 1, "no_bid_rate": 0, "post_timeout_rate": 1, "reject_rate": 0,
                            "hold_s": 0.3})
    started = time.perf_counter()
    (ping_status, _), (post_status, post) = await asyncio.gather(
        call(session, base + "/c1/ping"), call(session, base + "/c1/post"))
    assert time.perf_counter() - started >= 0.3
    assert (ping_status, post_status) == (200, 200) and post.startswith(b'{"accepted":true')


async def test_keep_alive_reuses_one_connection(start_sim: Start) -> None:
    base = await start_sim()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        for _ in range(30):
            await call(client, base + "/c1/ping")
        assert (await stats(client, base))["connections"] == 1


async def test_pipelined_answers_keep_request_order(start_sim: Start) -> None:
    base = await start_sim(campaigns=[{"id": "slow", "latency_ms": 150, "no_bid_rate": 0},
                                      {"id": "fast", "no_bid_rate": 0, "reject_rate": 0}])
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = "POST /{} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    writer.write("".join(request.format(p) for p in ("slow/ping", "fast/post", "fast/ping", "nope/x")).encode())
    bodies = []
    for _ in range(4):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        bodies.append(await reader.readexactly(length))
    writer.close()
    assert bodies[0].startswith(b'{"bid":') and b'"slow-' in bodies[0]
    assert bodies[1].startswith(b'{"accepted":true,"lead_id":"fast-')
    assert bodies[2].startswith(b'{"bid":') and b'"fast-' in bodies[2]
    assert bodies[3] == b'{"error":"unknown campaign"}'


async def test_unknown_campaign_is_404_when_campaigns_are_listed(start_sim: Start,
                                                                 session: aiohttp.ClientSession) -> None:
    listed = await start_sim(campaigns=[{"id": "c1"}])
    assert (await call(session, listed + "/c1/ping"))[0] in (200, 204)
    assert (await call(session, listed + "/c2/ping"))[0] == 404
    assert (await call(session, listed + "/c1/bid"))[0] == 404
    async with session.get(listed + "/c1/ping") as response:
        assert response.status == 405
    anything = await start_sim()
    assert (await call(session, anything + "/whatever/ping"))[0] in (200, 204)
    strict = await start_sim(any_campaign=False)
    assert (await call(session, strict + "/whatever/ping"))[0] == 404


async def test_post_accepts_and_rejects(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim(campaigns=[{"id": "yes", "reject_rate": 0}, {"id": "no", "reject_rate": 1}])
    status, body = await call(session, base + "/yes/post")
    assert status == 200
    assert msgspec.json.decode(body, type=schema.PostAnswer).accepted
    status, body = await call(session, base + "/no/post")
    answer = msgspec.json.decode(body, type=schema.PostAnswer)
    assert status == 200 and not answer.accepted and answer.reason


async def test_same_seed_gives_same_answers(start_sim: Start, session: aiohttp.ClientSession) -> None:
    first, second = await start_sim(seed=3), await start_sim(seed=3)
    answers = [[await call(session, base + "/c1/ping") for _ in range(20)] for base in (first, second)]
    assert answers[0] == answers[1]


def test_profile_file_overrides_inherit_defaults(tmp_path: Any) -> None:
    path = tmp_path / "profile.toml"
    path.write_text('[default]\nlatency_ms = 40\nbid_max = 30\n\n'
                    '[[campaigns]]\nid = "c1"\nno_bid_rate = 0.5\n')
    profile = buyers.load_profile(path, {"bid_max": 50.0})
    assert profile.default.latency_ms == 40 and profile.default.bid_max == 50
    (c1,) = profile.campaigns
    assert (c1.id, c1.latency_ms, c1.bid_max, c1.no_bid_rate) == ("c1", 40, 50, 0.5)
    assert not profile.any_campaign


@pytest.mark.parametrize("text, where", [
    ('[default]\nno_bid_rate = 2\n', "default.no_bid_rate"),
    ('[[campaigns]]\nid = "a"\nlatency = 1\n', "campaigns[0]"),
    ('[[campaigns]]\nid = "a"\nbid_min = 5\nbid_max = 1\n', "campaigns[0]"),
    ('[[campaigns]]\nid = "a"\n[[campaigns]]\nid = "a"\n', "campaigns"),
    ('[defaults]\n', "defaults"),
])
def test_bad_profile_names_the_place(tmp_path: Any, text: str, where: str) -> None:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    with pytest.raises(buyers.ProfileError, match=re.escape(where)):
        buyers.load_profile(path)


# Seller traffic ---------------------------------------------------------------------------


def test_pings_never_carry_personal_data() -> None:
    generator = traffic.Generator(seed=1)
    for _ in range(500):
        ping = generator.sample().ping
        assert not normalize.PII_KEYS & ping.keys()
        assert not normalize.PII_KEYS & ping["attributes"].keys()
        msgspec.convert(ping, schema.PingRequest)


def test_leads_are_valid_and_match_their_ping() -> None:
    generator = traffic.Generator(seed=2)
    for _ in range(500):
        sample = generator.sample()
        ping, lead = sample.ping, sample.lead
        msgspec.convert(sample.direct(), schema.DirectPostRequest)
        msgspec.convert({"ping_id": "p1", "lead": lead}, schema.PostRequest)
        assert (lead["zip"], lead["state"]) == (ping["zip"], ping["state"])
        assert normalize.state(lead["state"]) == lead["state"]
        assert normalize.name(lead["first_name"]) and normalize.name(lead["last_name"])
        assert normalize.email(lead["email"]) == lead["email"]
        digits = normalize.phone(lead["phone"])
        assert digits and digits[3:8] == "55501"
        assert normalize.ip_address(lead["ip_address"])
        if "phone_sha256" in ping:
            assert ping["phone_sha256"] == traffic._sha256(digits)


def test_generator_is_repeatable_and_keeps_to_its_verticals() -> None:
    one, two = traffic.Generator(seed=5, verticals=["solar"]), traffic.Generator(seed=5, verticals=["solar"])
    samples = [one.sample() for _ in range(20)]
    assert samples == [two.sample() for _ in range(20)]
    assert {s.ping["vertical"] for s in samples} == {"solar"}
    with pytest.raises(ValueError):
        traffic.Generator(verticals=["pets"])


def test_summary_counts_and_percentiles() -> None:
    calls = [traffic.Call(kind="ping", http_status=200, ms=float(i), outcome="bid" if i % 2 else "no_bid",
                          ping_id=str(i), auction_ms=float(i)) for i in range(1, 101)]
    calls += [traffic.Call(kind="post", http_status=200, ms=1, outcome="sold", price=2.1),
              traffic.Call(kind="direct", http_status=200, ms=1, outcome="sold", price=0.29),
              traffic.Call(kind="post", http_status=410, ms=1, outcome="410:ping_expired")]
    summary = traffic.summarize(calls)
    assert (summary.pings, summary.bids, summary.posts, summary.sold) == (100, 50, 3, 2)
    assert summary.failures == {"410:ping_expired": 1}
    assert summary.revenue == 2.39 and summary.bid_rate == 0.5
    assert (summary.auction_p50_ms, summary.auction_p99_ms) == (50, 99)
    assert traffic.percentile([], 50) is None


# The command --------------------------------------------------------------------------------


def test_buyers_command_serves_until_sigterm(tmp_path: Any) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{"default": {"latency_ms": 1}, "campaigns": [{"id": "c9", "no_bid_rate": 0}]}')
    process = Child.start([sys.executable, "-m", "pingpost.cli", "buyers", "--port", "0", "--profile", str(profile),
                           "--bid-min", "3", "--bid-max", "3"], timeout=20)
    try:
        line = process.stdout[0]
        found = re.fullmatch(r"buyers listening on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        request = urllib.request.Request(found.group(1) + "/c9/ping", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read().startswith(b'{"bid":3.00,')
        process.signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()


def test_buyers_command_refuses_a_bad_profile(tmp_path: Any) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text('[default]\nreject_rate = -1\n')
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", "buyers", "--profile", str(profile)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "default.reject_rate" in done.stderr


XML_ANSWERS = {"content_type": "text/xml",
               "bid": "<response><status>Matched</status><lead_id>{id}</lead_id><price>{price}</price></response>",
               "no_bid": "<response><status>Unmatched</status><error>No buyer</error></response>",
               "accept": "<result><outcome>success</outcome><lead_id>{id}</lead_id></result>",
               "reject": "<result><outcome>failure</outcome><reason><![CDATA[{reason}]]></reason></result>"}


async def test_a_campaign_answers_in_its_own_format(start_sim: Start, session: aiohttp.ClientSession) -> None:
    base = await start_sim(campaigns=[
        {"id": "xml", "answers": XML_ANSWERS, "no_bid_rate": 0, "reject_rate": 0, "bid_min": 5, "bid_max": 5},
        {"id": "xml_no", "answers": XML_ANSWERS, "no_bid_rate": 1, "reject_rate": 1},
        {"id": "text", "answers": {"content_type": "text/plain", "accept": "OK|id={id}"}, "reject_rate": 0,
         "no_bid_rate": 0, "bid_min": 3, "bid_max": 3}])
    async with session.get(base + "/xml/ping?zip=33101") as response:  # a query-string buyer's GET
        assert response.status == 200 and response.headers["Content-Type"] == "text/xml"
        assert re.fullmatch(rb"<response><status>Matched</status><lead_id>xml-\d+</lead_id><price>5.00</price>"
                            rb"</response>", await response.read())
    status, body = await call(session, base + "/xml/post")
    assert status == 200 and re.fullmatch(rb"<result><outcome>success</outcome><lead_id>xml-L\d+</lead_id></result>", body)
    assert await call(session, base + "/xml_no/ping") == (
        200, b"<response><status>Unmatched</status><error>No buyer</error></response>")
    status, body = await call(session, base + "/xml_no/post")
    assert re.fullmatch(rb"<result><outcome>failure</outcome><reason><!\[CDATA\[(duplicate|outside_service_area|"
                        rb"invalid_phone|cap_reached)\]\]></reason></result>", body)
    # a kind without a template is answered as the exchange's protocol answers it
    status, body = await call(session, base + "/text/ping")
    assert status == 200 and re.fullmatch(rb'\{"bid":3.00,"bid_id":"text-\d+"\}', body)
    status, body = await call(session, base + "/text/post")
    assert status == 200 and re.fullmatch(rb"OK\|id=text-L\d+", body)
    async with session.put(base + "/text/post", data=b"x") as response:
        assert response.status == 200
    async with session.get(base + "/c1/ping") as response:
        assert response.status == 404


def test_an_answer_template_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(buyers.ProfileError, match=r"campaigns\[0\]\.answers: Object contains unknown field `bod`"):
        buyers.build_profile({}, [{"id": "x", "answers": {"bod": "x"}}])
