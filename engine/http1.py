"""A lean HTTP/1.1 keep-alive client for buyer calls, on asyncio protocols.

Buyer calls dominate the exchange's CPU: aiohttp's client spends most of its time in
per-request machinery a buyer POST does not need (cookie jars, redirects, multidict
headers, tracing hooks, stream readers). Here a request is one pre-built head, one
``transport.write`` and httptools parsing the answer into a future; connections are
pooled per origin and reused while the buyer keeps them alive.

Errors are exceptions the caller classifies (``buyers.BuyerClient``): ``TooLarge``,
``ssl.SSLError``, ``ConnectionError``/``OSError`` and ``ProtocolError``. A call that is
cancelled or times out aborts its connection, so a late answer can never be read as the
answer to the next request on that connection; so does anything after a complete answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools


class TooLarge(Exception):
    """The answer is larger than the caller's limit."""


class ProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.1 answer, or closed mid-answer."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes and the head bytes it always starts with."""

    origin: tuple[str, str, int]
    path: str
    head: bytes

    @classmethod
    def of(cls, url: str, headers: dict[str, str]) -> "Target":
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}", "Connection: keep-alive",
                 "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        return cls((scheme, host, port), path, head)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.limit = limit
        self.loop = loop  # kept: asking for the running loop costs a getpid() per request
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0  # of the final answer, once its head is complete
        self.content_type = b""
        self.open = False
        self.received = False
        self.done = False  # the answer to the request in flight is complete
        self.framed = False  # its end is known from its head (Content-Length or chunked)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("upgrade"))
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raises: on_body's TooLarge arrives as a parser error.
            # Bytes that do not parse after a complete answer only close the connection.
            self._fail(TooLarge() if self.size > self.limit else ProtocolError(str(exc)))

    def eof_received(self) -> None:
        """The buyer closed its side: that is the end of an answer whose head gave no length
        (HTTP/1.0, or ``Connection: close`` without Content-Length); the transport closes
        itself after this. asyncio's TLS gets here on a bare TCP close as on a TLS close, so
        a cut answer is read as ended there too: a buyer's JSON object cut short fails to
        decode (``error:bad_json``). A reset (``connection_lost`` with an error) stays one."""
        if self.status and not self.framed and not self.done:
            self.open = False
            self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("connection closed before the answer"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.done:  # more after a complete answer: a connection out of step is never reused
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)
        if size == 12 and name.lower() == b"content-type":
            self.content_type = value
        elif size == 14 and name.lower() == b"content-length":
            self.framed = True
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.framed = value.rstrip().lower().endswith(b"chunked")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            raise TooLarge
        self.chunks.append(body)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if self.status < 200:  # 1xx interim answers are skipped
            self.chunks.clear()
            self.size = 0
            self.status = 0
            self.content_type = b""
            self.framed = False
            return
        if not self.parser.should_keep_alive():
            self.open = False
        self._settle()

    def _settle(self) -> None:
        self.done = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, self.content_type, b"".join(self.chunks)))

    # the client side

    def send(self, head: bytes, body: bytes) -> asyncio.Future[tuple[int, bytes, bytes]]:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.chunks = []
        self.size = 0
        self.status = 0
        self.content_type = b""
        self.received = False
        self.done = False
        self.framed = False
        self.transport.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        return self.waiter

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()


class Client:
    """Per-origin pools of idle keep-alive connections, without a size limit."""

    def __init__(self, ssl_context: ssl.SSLContext, limit: int) -> None:
        self.ssl_context = ssl_context
        self.limit = limit
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self.closed = False

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if scheme == "https" else None
        _, connection = await loop.create_connection(
            lambda: _Connection(self.limit, loop), host, port, ssl=tls, server_hostname=host if tls else None)
        return connection

    def _idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        pool = self.idle.get(origin)
        while pool:
            connection = pool.pop()
            if connection.open:
                return connection
        return None

    def send_idle(self, target: Target, body: bytes) -> tuple[_Connection, asyncio.Future[tuple[int, bytes, bytes]]] | None:
        """Send at once on an idle keep-alive connection, without a task: the connection and
        the future of its answer, or None when no connection is idle (then ``post``). The
        caller bounds the wait, ``close``s the connection on any failure or when it gives
        up, and hands it back with ``keep`` once the answer is read."""
        connection = self._idle(target.origin)
        if connection is None:
            return None
        return connection, connection.send(target.head, body)

    def keep(self, target: Target, connection: _Connection) -> None:
        """Pool a connection whose answer was read in full, if the buyer keeps it alive."""
        if connection.open and not self.closed:
            self.idle.setdefault(target.origin, deque()).append(connection)
        else:
            connection.close()

    async def post(self, target: Target, body: bytes, retry: bool = True,
                   fresh: bool = False) -> tuple[int, bytes, bytes]:
        """Send and read one answer ``(status, content type, body)``; the caller bounds it
        with its own deadline.

        A reused connection that the buyer closed while idle fails before any byte of an
        answer arrives; with ``retry`` such a request is sent again once on a fresh
        connection. A buyer that read the request and then dropped the connection cannot
        be told apart from that, so a request that must not arrive twice (a lead) passes
        ``retry=False``. ``fresh`` skips the idle pool (the resend of a ``send_idle``).
        """
        connection = None if fresh else self._idle(target.origin)
        reused = connection is not None
        if connection is None:
            connection = await self._connect(target.origin)
        try:
            try:
                answer = await connection.send(target.head, body)
            except ConnectionResetError:
                if not retry or not reused or connection.received:
                    raise
                connection = await self._connect(target.origin)
                answer = await connection.send(target.head, body)
        except BaseException:
            connection.close()
            raise
        self.keep(target, connection)
        return answer

    def close(self) -> None:
        self.closed = True
        for pool in self.idle.values():
            for connection in pool:
                connection.close()
        self.idle.clear()
