"""A buyer that speaks raw bytes, for answers a well-behaved HTTP server cannot give.

``RawBuyer`` is an asyncio TCP server on 127.0.0.1. Each path (``/<name>``) has a script:
an async function that gets the reader and writer after the request was read and writes
whatever it likes (a chunked body that never ends, a trickle, a reset, garbage). The server
keeps connections alive between requests, records every request body, and counts the
connections that are open right now, so a test can see that the exchange closed the ones
it gave up on.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Writes an answer; returns True to keep the connection open for the next request."""


def answer(status: int = 200, body: bytes | str | dict[str, Any] | list[Any] | None = None,
           content_type: str | None = "application/json", headers: dict[str, str] | None = None,
           delay: float = 0.0, length: bool = True) -> Script:
    """A plain answer; ``length=False`` sends the body chunked instead of with Content-Length."""
    if isinstance(body, (dict, list)):
        raw = json.dumps(body).encode()
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body or b""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if delay:
            await asyncio.sleep(delay)
        head = [f"HTTP/1.1 {status} X"]
        if content_type is not None:
            head.append(f"Content-Type: {content_type}")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if length:
            head.append(f"Content-Length: {len(raw)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + raw)
        else:
            head.append("Transfer-Encoding: chunked")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            for start in range(0, len(raw), 8192):
                piece = raw[start:start + 8192]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
    return script


def trickle(body: bytes, every: float) -> Script:
    """Headers at once, then the body a byte at a time: each byte is on time, the whole is not."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for byte in body:
            await writer.drain()
            await asyncio.sleep(every)
            writer.write(bytes([byte]))
        await writer.drain()
        return True
    return script


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Drop the connection with a TCP reset, no answer."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        import socket
        import struct
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return False


async def close_midway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Promise 100 bytes, send 10, close."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"bid\": 1.")
    await writer.drain()
    writer.close()
    return False


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Something that is not HTTP at all."""
    writer.write(b"SMTP READY\r\n\r\n\x00\x01\x02")
    await writer.drain()
    writer.close()
    return False


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Never answer; return when the client closes its side (or after a minute)."""
    try:
        await asyncio.wait_for(reader.read(), 60)
    except TimeoutError:
        pass
    return False


@dataclass
class RawBuyer:
    scripts: dict[str, Script] = field(default_factory=dict)
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    open_connections: int = 0
    total_connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None

    def script(self, name: str, script: Script) -> str:
        """Serve ``script`` at ``/<name>``; returns its URL."""
        self.scripts["/" + name] = script
        return f"{self.url}/{name}"

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on 127.0.0.1; with ``ssl_context`` over TLS, at ``https://localhost:P``."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://localhost:{port}" if ssl_context else f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Connections still open (hanging scripts) are closed by the server's close.
            if hasattr(self._server, "close_clients"):
                self._server.close_clients()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except TimeoutError:
                pass

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.total_connections += 1
        try:
            while True:
                path = await self._read_request(reader)
                if path is None:
                    break
                script = self.scripts.get(path, answer(204, content_type=None))
                if not await script(reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            if not writer.transport.is_closing():
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> str | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await reader.readexactly(length) if length else b""
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {"_unparsed": body.decode("latin-1")}
        self.requests.setdefault(path, []).append(parsed)
        return path


def closed_port_url(path: str = "/ping") -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just freed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture
async def raw_buyer() -> AsyncIterator[RawBuyer]:
    """Import this fixture into a test module to use it."""
    server = RawBuyer()
    await server.start()
    yield server
    await server.stop()
