"""Seller connections of a real ``pingpost serve``, over raw sockets: deadlines for heads,
bodies and idle keep-alive; a low descriptor limit; resets; requests the parser refuses;
no ``Server`` header.

Time bounds here are generous deadlines for correctness (a connection is closed by its
deadline, not by something else, and not never), never speed claims.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import trustme

from pingpost.config import ExchangeSettings
from pingpost.connections import Limits
from pingpost.metrics import Metrics
from tests.helpers_process import Served, run_cli, write_config
from tests.support.buyers import BuyerServer, bid
from tests.support.exchange import PING, SELLER_KEY, base_config

PING_BODY = json.dumps(PING).encode()
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: exchange\r\n\r\n"


def ping_head(length: int) -> bytes:
    return (f"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nAuthorization: Bearer {SELLER_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


PING_REQUEST = ping_head(len(PING_BODY)) + PING_BODY


def config(buyers: BuyerServer, timeout_ms: int = 2000, **exchange: Any) -> dict[str, Any]:
    return base_config(buyers, {"id": "c1", "timeout_ms": timeout_ms},
                       **{"auction_timeout_ms": timeout_ms + 1000, **exchange})


def fd_limit(soft: int, hard: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that starts the exchange with this descriptor limit."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft if hard is None else hard))
    return limit


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(lines[0].split(" ")[1]), headers, body)


#: Client connections a test opened; most are closed by the exchange, all are closed here.
_opened: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    for writer in _opened:
        writer.close()
    _opened.clear()


async def connect(port: int, **options: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **options)
    _opened.append(writer)
    return reader, writer


async def exchange_once(port: int, request: bytes, timeout: float = 5) -> Answer:
    """One request on a new connection."""
    reader, writer = await connect(port)
    try:
        writer.write(request)
        return await asyncio.wait_for(read_answer(reader), timeout)
    finally:
        writer.close()


async def closed_after(reader: asyncio.StreamReader, since: float, limit: float = 10) -> tuple[float, bytes]:
    """Read until the exchange closes the connection: (seconds since ``since``, what came)."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s; received {data!r}") from None
    return loop.time() - since, data


async def is_closed(reader: asyncio.StreamReader, wait: float = 1.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), wait) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """One byte at a time: each byte on time, the whole not; stops when the peer closes."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split(" ")[1]), headers, body)


def assert_error_shape(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    error = answer.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"], answer
    assert error["fields"] == [], answer


def events(served: Served, name: str) -> list[dict[str, Any]]:
    return [e for e in served.log_events() if e.get("event") == name]


async def stop(served: Served) -> None:
    served.signal()
    assert await served.wait() == 0


async def test_slow_and_silent_clients_are_closed_on_their_deadlines(tmp_path: Path, buyers: BuyerServer) -> None:
    buyers.script("c1", ping=bid(2.0))
    served = await Served.start(tmp_path, config(buyers, header_timeout_s=1, body_timeout_s=1,
                                                 keepalive_timeout_s=5))
    loop = asyncio.get_running_loop()
    port = served.port
    try:
        async def silent() -> tuple[float, bytes]:
            reader, _ = await connect(port)
            return await closed_after(reader, loop.time())

        async def sent(data: bytes) -> tuple[float, bytes]:
            reader, writer = await connect(port)
            since = loop.time()
            writer.write(data)
            return await closed_after(reader, since)

        async def trickled(data: bytes, at_once: bytes = b"") -> tuple[float, bytes]:
            reader, writer = await connect(port)
            since = loop.time()
            writer.write(at_once)
            sending = asyncio.ensure_future(trickle(writer, data, 0.1))
            try:
                return await closed_after(reader, since)
            finally:
                sending.cancel()

        async def idle_after_an_answer() -> tuple[float, bytes]:
            reader, writer = await connect(port)
            writer.write(HEALTHZ)
            assert (await read_answer(reader)).status == 200
            return await closed_after(reader, loop.time())

        async def busy_keepalive() -> list[int]:
            """Pings on one connection every 0.4 s for 6 s, some split over two writes: the
            head and body timers must never hit a client that keeps to its deadlines."""
            reader, writer = await connect(port)
            statuses = []
            for n in range(15):
                if n % 3 == 1:  # the head in two parts
                    writer.write(PING_REQUEST[:20])
                    await asyncio.sleep(0.4)
                    writer.write(PING_REQUEST[20:])
                elif n % 3 == 2:  # the body after the head
                    writer.write(PING_REQUEST[:-len(PING_BODY)])
                    await asyncio.sleep(0.4)
                    writer.write(PING_BODY)
                else:
                    writer.write(PING_REQUEST)
                answer = await asyncio.wait_for(read_answer(reader), 5)
                statuses.append(answer.status)
                assert answer.json()["status"] == "bid", answer
                await asyncio.sleep(0.4)
            writer.close()
            return statuses

        busy_client = asyncio.ensure_future(busy_keepalive())
        nothing, half_head, slow_head, half_body, slow_body, idle = await asyncio.gather(
            silent(),
            sent(b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\n"),
            trickled(HEALTHZ),
            sent(ping_head(len(PING_BODY)) + PING_BODY[:10]),
            trickled(PING_BODY, at_once=ping_head(len(PING_BODY))),
            idle_after_an_answer())
        busy = await busy_client

        # Each within its own deadline (1 s), well before the keep-alive one (5 s) that
        # aiohttp alone would apply to all of them.
        heads = {"silent": nothing, "half head": half_head, "slow head": slow_head}
        bodies = {"half body": half_body, "slow body": slow_body}
        for name, (after, data) in heads.items():
            assert 0.8 <= after <= 3.5, f"{name}: closed after {after:.2f} s"
            assert data == b"", f"{name}: {data!r}"
        for name, (after, data) in bodies.items():
            assert 0.8 <= after <= 3.5, f"{name}: closed after {after:.2f} s"
            assert_error_shape(parse_answer(data), 408, "request_timeout")
        after, data = idle
        assert 4.7 <= after <= 9, f"idle keep-alive: closed after {after:.2f} s, not by its own deadline"
        assert data == b""
        assert busy == [200] * 15
    finally:
        await stop(served)
    assert not events(served, "unhandled")


async def test_a_reload_changes_the_deadlines_of_new_connections(tmp_path: Path, buyers: BuyerServer) -> None:
    served = await Served.start(tmp_path, config(buyers, header_timeout_s=60))
    loop = asyncio.get_running_loop()
    try:
        write_config(tmp_path, config(buyers, header_timeout_s=1))
        served.signal(signal.SIGHUP)
        for _ in range(100):
            if events(served, "reload"):
                break
            await asyncio.sleep(0.05)
        assert events(served, "reload")[0]["status"] == "ok"
        reader, _ = await connect(served.port)
        after, data = await closed_after(reader, loop.time())
        assert 0.8 <= after <= 4 and data == b""
    finally:
        await stop(served)


async def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path, buyers: BuyerServer) -> None:
    served = await Served.start(tmp_path, config(buyers), preexec_fn=fd_limit(200, 400))
    try:
        limits = Path(f"/proc/{served.process.pid}/limits").read_text()
        assert re.search(r"^Max open files\s+400\s+400\s", limits, re.M), limits
        assert events(served, "fd_limit") == [{**events(served, "fd_limit")[0], "soft_before": 200, "soft": 400,
                                               "seller_connections": 300}]
    finally:
        await stop(served)


async def test_thousands_of_silent_connections_on_the_usual_soft_limit(tmp_path: Path, buyers: BuyerServer) -> None:
    """Started with the usual soft limit of 1024, the exchange raises it and holds 3,000 silent
    connections while health checks and pings are answered, then closes them at their deadline."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192:
        pytest.skip(f"the hard descriptor limit here ({hard}) is too low for 3,000 connections each side")
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))  # for this test's own clients
    buyers.script("c1", ping=bid(2.0))
    served = await Served.start(tmp_path, config(buyers, header_timeout_s=10),
                                preexec_fn=fd_limit(1024, min(8192, hard)))
    loop = asyncio.get_running_loop()
    clients = []
    try:
        since = loop.time()
        for _ in range(3000):
            clients.append(await connect(served.port))  # the writer too: a dropped one closes its connection
        readers = [reader for reader, _ in clients]
        assert (await exchange_once(served.port, HEALTHZ)).status == 200
        answer = await exchange_once(served.port, PING_REQUEST)
        assert answer.status == 200 and answer.json()["status"] == "bid", answer
        opened = loop.time() - since
        assert opened < 8, f"{opened:.1f} s to open the connections: too slow to see them open"
        assert not any(await asyncio.gather(*(is_closed(r, 0.2) for r in readers[:100])))
        closed = await asyncio.gather(*(closed_after(r, since, limit=20) for r in readers))
        assert all(data == b"" and 9.5 <= after <= opened + 13 for after, data in closed)
        assert not events(served, "connection_limit")
    finally:
        await stop(served)


async def test_past_the_descriptor_limit_waiting_connections_make_room(tmp_path: Path, buyers: BuyerServer) -> None:
    """600 silent, half-headed and half-bodied connections on 256 descriptors: the exchange
    closes the oldest of them to stay under 192 seller connections, and health checks and
    pings (with their buyer calls) keep being answered all along."""
    buyers.script("c1", ping=bid(2.0))
    served = await Served.start(tmp_path, config(buyers, header_timeout_s=120, body_timeout_s=120),
                                preexec_fn=fd_limit(256))
    port = served.port
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(8):
            for kind in range(75):
                reader, writer = await connect(port)
                if kind % 3 == 1:
                    writer.write(b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\n")
                elif kind % 3 == 2:
                    writer.write(ping_head(len(PING_BODY)) + PING_BODY[:10])
                clients.append((reader, writer))
            await asyncio.sleep(0.1)
            assert (await exchange_once(port, HEALTHZ)).status == 200
            answer = await exchange_once(port, PING_REQUEST)
            assert answer.status == 200 and answer.json()["status"] == "bid", answer
        closed = await asyncio.gather(*(is_closed(reader) for reader, _ in clients))
        assert sum(closed) >= len(clients) - 192, f"only {sum(closed)} of {len(clients)} closed"
        assert not any(closed[-50:]), "the newest connections were closed instead of the oldest"
        warnings = events(served, "connection_limit")
        assert warnings and warnings[0]["level"] == "warning" and warnings[0]["limit"] == 192, warnings
    finally:
        for _, writer in clients:
            writer.close()
        await stop(served)
    assert not events(served, "unhandled")
    assert not [e for e in served.log_events() if e["level"] == "error"]


async def test_out_of_descriptors_the_exchange_survives_and_says_so(tmp_path: Path, buyers: BuyerServer) -> None:
    """Buyer calls in flight hold descriptors no share bounds: 100 pings wait on a slow buyer
    while silent connections use up the rest. uvloop then closes every new connection at
    once and reports nothing; the exchange notices within a second, logs it, closes waiting
    connections to make room, and answers again at once without waiting on its deadlines."""
    buyers.script("c1", ping=bid(2.0, delay=4.0))
    served = await Served.start(tmp_path, config(buyers, timeout_ms=8000, header_timeout_s=120, bench_after_timeouts=0),
                                preexec_fn=fd_limit(256))
    port = served.port
    silent: list[asyncio.StreamWriter] = []
    try:
        pings = [asyncio.ensure_future(exchange_once(port, PING_REQUEST, timeout=10)) for _ in range(100)]
        await asyncio.sleep(1.0)
        for _ in range(200):
            try:
                _, writer = await connect(port)
                silent.append(writer)
            except ConnectionError:
                pass
        for _ in range(40):
            if events(served, "fd_limit_reached"):
                break
            await asyncio.sleep(0.1)
        assert events(served, "fd_limit_reached"), "running out of descriptors was not logged"
        assert (await exchange_once(port, HEALTHZ)).status == 200
        answers = await asyncio.gather(*pings, return_exceptions=True)
        answered = [a for a in answers if isinstance(a, Answer)]
        assert answered and all(a.status == 200 for a in answered), answers
        buyers.script("c1", ping=bid(2.0))
        answer = await exchange_once(port, PING_REQUEST)
        assert answer.status == 200 and answer.json()["status"] == "bid"
        assert served.process.returncode is None
    finally:
        for writer in silent:
            writer.close()
        await stop(served)
    assert not events(served, "unhandled")


async def test_resets_while_sending_the_body_are_not_unhandled_errors(tmp_path: Path, buyers: BuyerServer) -> None:
    served = await Served.start(tmp_path, config(buyers))
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(ping_head(len(PING_BODY)) + PING_BODY[:10])
            await asyncio.sleep(0.02)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, mid-body
        for _ in range(100):
            if len(events(served, "client_gone")) == 50:
                break
            await asyncio.sleep(0.05)
        assert (await exchange_once(served.port, HEALTHZ)).status == 200
    finally:
        await stop(served)
    gone = events(served, "client_gone")
    assert len(gone) == 50 and all(e["level"] in ("debug", "info") and e["path"] == "/v1/ping" for e in gone)
    assert not events(served, "unhandled")
    assert not [e for e in served.log_events() if e["level"] == "error"]


REFUSED = {
    "header over 8190 bytes": b"GET /healthz HTTP/1.1\r\nHost: exchange\r\nX-Big: " + b"z" * 9000 + b"\r\n\r\n",
    "not a request line": b"GARBAGE Zelda\r\n\r\n",
    "bad request target": b"GET /he\x01lthz HTTP/1.1\r\nHost: exchange\r\n\r\n",
    "bad Content-Length": b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nContent-Length: abc\r\n\r\n",
    "two Content-Lengths": b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length and chunked": (b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nContent-Length: 2\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n{}"),
    "bad chunk size": b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bad header name": b"GET /healthz HTTP/1.1\r\nHost: exchange\r\nBad Header: x\r\n\r\n",
    "no Host": b"GET /healthz HTTP/1.1\r\n\r\n",
}


AUTHORIZED = (f"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nAuthorization: Bearer {SELLER_KEY}\r\n"
              "Content-Type: application/json\r\n").encode()
#: Bodies that cannot be decoded, sent after the head so the handler is already reading them.
UNREADABLE = {
    "gzip that is not": (AUTHORIZED + b"Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\n", b"0123456789"),
    "deflate that is not": (AUTHORIZED + b"Content-Encoding: deflate\r\nContent-Length: 4\r\n\r\n", b"zzzz"),
    "bad chunk": (AUTHORIZED + b"Transfer-Encoding: chunked\r\n\r\n", b"5\r\n{\"ver\r\nzz\r\n"),
}


async def test_requests_the_parser_refuses_get_the_json_error_shape(tmp_path: Path, buyers: BuyerServer) -> None:
    served = await Served.start(tmp_path, config(buyers))
    try:
        for name, request in REFUSED.items():
            reader, writer = await connect(served.port)
            writer.write(request)
            _, data = await closed_after(reader, 0)
            answer = parse_answer(data)
            assert_error_shape(answer, 400, "malformed_request")
            assert "server" not in answer.headers, name
            assert b"Zelda" not in answer.body and b"zzz" not in answer.body, name
        for head, body in UNREADABLE.values():
            reader, writer = await connect(served.port)
            writer.write(head)
            await asyncio.sleep(0.2)
            writer.write(body)
            _, data = await closed_after(reader, 0)
            assert_error_shape(parse_answer(data), 400, "malformed_request")
        assert (await exchange_once(served.port, HEALTHZ)).status == 200
    finally:
        await stop(served)
    assert not [e for e in served.log_events() if e["level"] in ("warning", "error")]


async def test_no_answer_names_the_server_software(tmp_path: Path, buyers: BuyerServer) -> None:
    buyers.script("c1", ping=bid(2.0))
    served = await Served.start(tmp_path, config(buyers, body_timeout_s=0.5))
    port = served.port
    try:
        answers = {
            "healthz": await exchange_once(port, HEALTHZ),
            "ping": await exchange_once(port, PING_REQUEST),
            "metrics": await exchange_once(port, b"GET /metrics HTTP/1.1\r\nHost: exchange\r\n\r\n"),
            "not found": await exchange_once(port, b"GET /nowhere HTTP/1.1\r\nHost: exchange\r\n\r\n"),
            "wrong method": await exchange_once(port, b"DELETE /v1/ping HTTP/1.1\r\nHost: exchange\r\n\r\n"),
            "no key": await exchange_once(port, b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\n"
                                                b"Content-Length: 0\r\n\r\n"),
            "slow body": await exchange_once(port, ping_head(len(PING_BODY))),
            "refused": await exchange_once(port, b"GARBAGE\r\n\r\n"),
        }
        assert [a.status for a in answers.values()] == [200, 200, 200, 404, 405, 401, 408, 400]
        for name, answer in answers.items():
            assert "server" not in answer.headers, f"{name}: {answer.headers}"
    finally:
        await stop(served)


async def test_a_silent_tls_client_is_closed_within_the_header_timeout(tmp_path: Path, buyers: BuyerServer) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    served = await Served.start(tmp_path, config(buyers, header_timeout_s=1), "--tls-cert", str(cert_path),
                                "--tls-key", str(key_path))
    loop = asyncio.get_running_loop()
    try:
        reader, _ = await connect(served.port)  # TCP only: no TLS handshake
        after, _ = await closed_after(reader, loop.time())
        assert 0.8 <= after <= 4, f"closed after {after:.2f} s"
        client = ssl.create_default_context()
        ca.configure_trust(client)
        reader, writer = await connect(served.port, ssl=client)
        since = loop.time()
        after, _ = await closed_after(reader, since)  # handshake done, no request
        assert 0.8 <= after <= 4, f"closed after {after:.2f} s"
    finally:
        await stop(served)


async def test_a_listening_socket_closed_under_the_exchange_is_noticed() -> None:
    """uvloop closes the listening socket for good on an accept error it does not expect,
    silently; ``serve`` is told (and then drains and exits 1, like on SIGTERM but with 1)."""
    limits = Limits(ExchangeSettings(), 10, Metrics())
    listener = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    lost = asyncio.Event()
    limits.watch(listener, lost.set)
    try:
        await asyncio.sleep(1.5)
        assert not lost.is_set()
        listener.close()
        reused = socket.socket()  # likely takes the closed socket's descriptor number
        await asyncio.wait_for(lost.wait(), 3)
        reused.close()
    finally:
        limits.stop()


@pytest.mark.parametrize("setting", ["header_timeout_s", "body_timeout_s", "keepalive_timeout_s"])
async def test_deadlines_must_be_positive(tmp_path: Path, buyers: BuyerServer, setting: str) -> None:
    path = write_config(tmp_path, config(buyers, **{setting: 0}))
    code, _, err = await run_cli("serve", "--config", str(path))
    assert code == 2 and f"exchange.{setting}" in err
