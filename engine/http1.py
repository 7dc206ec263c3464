"""A lean HTTP/1.1 keep-alive client for buyer calls, on asyncio protocols.

Buyer calls dominate the exchange's CPU: aiohttp's client spends most of its time in
per-request machinery a buyer POST does not need (cookie jars, redirects, multidict
headers, tracing hooks, stream readers). Here a request is one pre-built head, one
``transport.write`` and httptools parsing the answer into a future; connections are
pooled per origin and reused while the buyer keeps them alive, for at most the client's
idle timeout (one sweep timer per client closes the ones idle longer). A host name is looked
up once per ``DNS_TTL_S`` and connected to by address.

Errors are exceptions the caller classifies (``buyers.BuyerClient``): ``TooLarge``,
``ssl.SSLError``, ``socket.gaierror`` (the host name did not resolve),
``ConnectionError``/``OSError`` and ``ProtocolError``. A call that is cancelled or times out
aborts its connection, so a late answer can never be read as the answer to the next
request on that connection; so does anything after a complete answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import httptools

#: Seconds a pooled connection may stay idle. Web servers close idle connections after 5 s by
#: default (Apache, Node.js, uvicorn), load balancers and nginx after 60-75 s; closing ours
#: first means a request never goes out on a connection the buyer is closing at that moment.
IDLE_TIMEOUT_S = 4.0
#: Seconds a name's addresses are used before it is looked up again (lookups run in a thread).
DNS_TTL_S = 30.0
#: Seconds a failed lookup stands before the name is tried again: short, so a name that comes
#: back is used soon, yet a dead name under load costs one lookup per second, not one per call.
DNS_FAILURE_TTL_S = 1.0

Addresses = list[tuple[int, str]]  # (address family, address) in the resolver's order


class TooLarge(Exception):
    """The answer is larger than the caller's limit."""


class ProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.1 answer, or closed mid-answer."""


#: RFC 9110 token: what a header name may be.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Visible ASCII, space and tab: a header value never carries CR, LF or another control character.
HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
#: Headers this client writes itself (the body's type comes with the body): one of a caller's would
#: break the framing.
OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type"})


def header_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` cannot go into a request head as it is, or None: either is written
    as it is, so a line break would add headers (or a request) of its own."""
    if not TOKEN.match(name):
        return f"not a valid header name: {name!r}"
    if name.lower() in OWN_HEADERS:
        return "the exchange sets this header itself"
    if not HEADER_VALUE.match(value):
        return "a header value may hold only visible ASCII, spaces and tabs (no CR, LF or other control characters)"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes and the head bytes it always starts with. ``resend``: whether
    the request may go out again on a fresh connection when a reused one was found closed
    (a ping may; a lead is never sent twice)."""

    origin: tuple[str, str, int]
    path: str
    head: bytes
    resend: bool = True
    method: str = "POST"
    fields: bytes = b""  # the head after its request line

    @classmethod
    def of(cls, url: str, headers: dict[str, str], method: str = "POST", resend: bool = True) -> "Target":
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"Host: {host_header}", "Connection: keep-alive", "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        fields = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        return cls((scheme, host, port), path, _request_line(method, path) + fields, resend, method, fields)

    def with_query(self, query: str) -> "Target":
        """This target with ``query`` (already encoded) added to its URL's query string."""
        path = f"{self.path}{'&' if '?' in self.path else '?'}{query}"
        return Target(self.origin, path, _request_line(self.method, path) + self.fields, self.resend, self.method,
                      self.fields)


def _request_line(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\n".encode("latin-1")


def _keep_alive_timeout(value: bytes) -> float | None:
    """The ``timeout=N`` of a ``Keep-Alive`` header: the seconds the buyer keeps an idle
    connection open (None when the header does not say)."""
    for part in value.split(b","):
        name, _, number = part.partition(b"=")
        if name.strip().lower() == b"timeout":
            number = number.strip()
            return float(number) if number.isdigit() else None
    return None


def _numeric(host: str) -> Addresses | None:
    """The address itself when the host is an IP address: it needs no lookup."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return [(socket.AF_INET6 if version == 6 else socket.AF_INET, host)]


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
        self.keep_alive_s: float | None = None  # its Keep-Alive: timeout=N
        self.expires = 0.0  # while pooled: the loop time it may be taken until

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
            self._deliver()

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
        elif size == 10 and name.lower() == b"keep-alive":
            self.keep_alive_s = _keep_alive_timeout(value)

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
            self.keep_alive_s = None
            return
        if not self.parser.should_keep_alive():
            self.open = False
        self._deliver()

    def _deliver(self) -> None:
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
        self.keep_alive_s = None
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
    """Per-origin pools of idle keep-alive connections, without a size limit.

    A pooled connection is taken for at most ``idle_timeout`` seconds after its answer, or
    until one second before the buyer's ``Keep-Alive: timeout=N`` runs out when that comes
    first (a buyer allowing 1 s or less gets a new connection per call). One timer per
    client, running only while something is pooled or a lookup is cached, closes the
    expired connections every ``idle_timeout / 4`` (at most every second) and drops empty
    pools and stale lookups, so neither grows with the buyers seen over time.
    """

    def __init__(self, ssl_context: ssl.SSLContext, limit: int, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.ssl_context = ssl_context
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        #: (host, port) -> (loop time it expires, the lookup); infinite while the lookup runs
        self.addresses: dict[tuple[str, int], tuple[float, asyncio.Future[Addresses]]] = {}
        self.closed = False
        self._sweep_every = min(max(idle_timeout / 4, 0.01), 1.0)
        self._sweeper: asyncio.TimerHandle | None = None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        """A new connection to the first of the host's addresses that takes it; TLS checks
        the certificate against the host name (and sends it as SNI)."""
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if scheme == "https" else None
        failure: OSError | None = None
        for family, address in _numeric(host) or await self._resolve(host, port, loop):
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.limit, loop), address, port, family=family, ssl=tls,
                    server_hostname=host if tls else None)
                return connection
            except ssl.SSLError:
                raise  # the buyer answered: its other addresses would not verify either
            except OSError as exc:
                failure = exc
        assert failure is not None  # _lookup never returns an empty list
        raise failure

    async def _resolve(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> Addresses:
        """The host's addresses, looked up once per ``DNS_TTL_S``; calls that need them while
        the lookup runs share it (shielded: a caller that gives up does not cancel it)."""
        key = (host, port)
        cached = self.addresses.get(key)
        if cached is None or cached[0] <= loop.time():
            lookup = loop.create_task(self._lookup(host, port, loop))
            cached = self.addresses[key] = (math.inf, lookup)
            lookup.add_done_callback(partial(self._looked_up, key, loop))
            self._arm(loop)
        return await asyncio.shield(cached[1])

    @staticmethod
    async def _lookup(host: str, port: int, loop: asyncio.AbstractEventLoop) -> Addresses:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: Addresses = list(dict.fromkeys((int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return addresses

    def _looked_up(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop,
                   lookup: asyncio.Future[Addresses]) -> None:
        # Reading the exception also keeps asyncio from logging one nobody waited for.
        ttl = 0.0 if lookup.cancelled() else DNS_FAILURE_TTL_S if lookup.exception() else DNS_TTL_S
        cached = self.addresses.get(key)
        if cached is not None and cached[1] is lookup:
            self.addresses[key] = (loop.time() + ttl, lookup)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None and not self.closed:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the pooled connections past their time or closed by the buyer, drop empty
        pools and expired lookups; run again while anything is left."""
        self._sweeper = None
        now = loop.time()
        for origin, pool in list(self.idle.items()):
            live: deque[_Connection] = deque()
            for connection in pool:
                if connection.open and connection.expires > now:
                    live.append(connection)
                else:
                    connection.close()
            if live:
                self.idle[origin] = live
            else:
                del self.idle[origin]
        for key, (expires, _) in list(self.addresses.items()):
            if expires <= now:
                del self.addresses[key]
        if self.idle or self.addresses:
            self._arm(loop)

    def _idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        pool = self.idle.get(origin)
        while pool:
            connection = pool.pop()
            if connection.open and connection.expires > connection.loop.time():
                return connection
            connection.close()
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
        """Pool a connection whose answer was read in full, if the buyer keeps it alive
        long enough to be worth it; close it otherwise."""
        if connection.open and not self.closed:
            allowed = connection.keep_alive_s
            ttl = self.idle_timeout if allowed is None else min(self.idle_timeout, allowed - 1)
            if ttl > 0:
                connection.expires = connection.loop.time() + ttl
                pool = self.idle.get(target.origin)
                if pool is None:
                    pool = self.idle[target.origin] = deque()
                pool.append(connection)
                if self._sweeper is None:
                    self._arm(connection.loop)
                return
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self.idle.values():
            for connection in pool:
                connection.close()
        self.idle.clear()
        for _, lookup in self.addresses.values():
            lookup.cancel()
        self.addresses.clear()
