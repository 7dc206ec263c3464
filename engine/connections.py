"""Seller connections: how long a client may take, how many may be open, and the answer to
requests aiohttp's parser refuses.

aiohttp's server (3.14) bounds only idle keep-alive time, answers what its parser refuses in
text/plain, and leaves the descriptor limit to the operating system; under uvloop a process
out of descriptors accepts and at once closes every new connection (libuv's reserve
descriptor), so health checks fail and nothing is logged. Here:

* ``Connection`` is aiohttp's ``RequestHandler`` with a deadline for each request head (from
  accept, or from its first byte on a kept-alive connection) and for each request body (from
  the end of its head), the contract's JSON error for a refused request, and no ``Server``
  header on any answer;
* ``Limits`` holds the deadlines (updated on reload) and keeps seller connections under a
  share of the descriptor limit: when a new one would pass it, the oldest connection the
  exchange is only waiting on (idle, or its head or body incomplete) is closed; and once a
  second it checks that a descriptor can still be opened, and if not closes a tenth of those
  connections. Both are logged as warnings. The same check notices a listening socket the
  event loop closed (uvloop closes it for good on any accept error libuv passes on);
* ``listen`` accepts connections as ``Connection``s, the TLS handshake bounded like a head;
  requests for the app's ``DIRECT`` routes (an exact method and target, no ``Expect``) go
  straight to their handler, past the router and the middleware (aiohttp's own "low-level
  server" use of a request handler), every other request through the app as usual.

It relies on these aiohttp internals, all exercised by tests/test_connections.py and
tests/test_direct_route.py: ``RequestHandler._waiter`` (pending while no request is being read
or handled), ``_request_count`` (grows by one per parsed head or refusal), ``_messages``,
``_lingering_time``, ``_request_handler`` (what each request is handed to: the app's
``_handle``), ``_request_factory`` (the app's ``_make_request``, whose ``_cls`` picks the request
class), ``Request._prepare_hook``, ``handle_error`` and ``Server._kwargs`` (the handler arguments
of the app and runner).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import ssl
import time
from functools import partial
from itertools import islice
from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from .config import ExchangeSettings
from .errors import ApiError, Code
from .metrics import Metrics

log = logging.getLogger("pingpost.connections")

#: Share of the descriptor limit that seller connections may hold; buyer connections, the
#: store's and the process's own files use the rest.
SELLER_SHARE = 0.75
#: Seconds between two warnings of the same kind.
WARN_EVERY_S = 10.0
#: Seconds between two checks that a descriptor can still be opened.
PROBE_EVERY_S = 1.0

_encode = msgspec.json.Encoder().encode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: (method, request target) -> handler: the app's routes that skip its router and middleware.
#: The handler answers every outcome itself, errors in their contract shape included.
DIRECT = web.AppKey("direct routes", dict[tuple[str, str], Handler])


class BodyTimeout(TimeoutError):
    """A request body did not arrive within ``body_timeout_s`` of its head. A TimeoutError, so
    aiohttp's draining of an unread body stops on it quietly."""


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; returns (soft before, soft now).
    Every open connection is a descriptor, and the usual soft limit of 1024 is reached by
    about a thousand clients that connect and send nothing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit above the kernel's nr_open
            pass
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Request(web.Request):
    """A request whose answer does not name the server software and its version: aiohttp adds
    its ``Server`` header while preparing every answer, then runs this hook (before the app's
    ``on_response_prepare`` signals), for routed requests and refused ones alike."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers.popall(hdrs.SERVER, None)
        await super()._prepare_hook(response)


class Limits:
    """The deadlines of seller connections and the bound on how many are open (one per listener)."""

    def __init__(self, exchange: ExchangeSettings, max_connections: int, metrics: Metrics) -> None:
        self.adopt(exchange)
        self.max_connections = max_connections
        self.metrics = metrics
        self.open: dict[Connection, None] = {}  # oldest first
        self.closed_for_room = 0
        self._warned_at: dict[str, float] = {}
        self._probe: asyncio.TimerHandle | None = None
        self._listening: tuple[int, int] = (-1, -1)  # the listening socket's descriptor and inode
        self._lost: Callable[[], None] = lambda: None

    @classmethod
    def for_descriptors(cls, exchange: ExchangeSettings, fd_limit: int, metrics: Metrics) -> "Limits":
        return cls(exchange, max(1, int(fd_limit * SELLER_SHARE)), metrics)

    def adopt(self, exchange: ExchangeSettings) -> None:
        """Take the deadlines of a (reloaded) config; connections opened from now on use them."""
        self.header_timeout_s = exchange.header_timeout_s
        self.body_timeout_s = exchange.body_timeout_s
        self.keepalive_timeout_s = exchange.keepalive_timeout_s

    def admit(self, connection: Connection) -> None:
        self.open[connection] = None
        if len(self.open) > self.max_connections:
            closed = self._make_room(1)
            self._warn("connection limit reached", "connection_limit", closed)

    def leave(self, connection: Connection) -> None:
        self.open.pop(connection, None)

    def watch(self, listener: asyncio.Server, lost: Callable[[], None]) -> None:
        """Check once a second that a descriptor can be opened and that ``listener`` still
        listens; call ``lost`` (once) when it does not."""
        fd = listener.sockets[0].fileno()
        self._listening = (fd, os.fstat(fd).st_ino)
        self._lost = lost
        self._check()

    def _check(self) -> None:
        """When no descriptor can be opened, uvloop (libuv) accepts each new connection and
        closes it at once, and reports nothing: health checks and sellers get resets. Buyer
        connections, which no share bounds, can be what used them up; closing connections the
        exchange only waits on frees some. And when libuv passes an accept error on (its
        reserve-descriptor trick failed, or ENOMEM, ENOBUFS, ...), uvloop closes the listening
        socket for good, silently: nothing but a restart brings it back."""
        try:
            os.close(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                closed = self._make_room(max(1, len(self.open) // 10))
                self._warn("out of descriptors: new connections are being refused", "fd_limit_reached", closed)
        fd, inode = self._listening
        try:
            listening = os.fstat(fd).st_ino == inode
        except OSError:
            listening = False
        if not listening:
            log.error("listening socket closed", extra={"event": {"event": "listener_lost"}})
            self._lost()
            return
        self._probe = asyncio.get_running_loop().call_later(PROBE_EVERY_S, self._check)

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    def _make_room(self, count: int) -> int:
        """Close the ``count`` oldest connections the exchange is only waiting on."""
        idle = list(islice((c for c in self.open if c.waiting_on_client()), count))
        for connection in idle:
            del self.open[connection]
            connection.force_close()
        self.closed_for_room += len(idle)
        return len(idle)

    def _warn(self, message: str, event: str, closed: int) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(event, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned_at[event] = now
            log.warning(message, extra={"event": {
                "event": event, "open": len(self.open), "limit": self.max_connections, "closed": closed,
                "closed_for_room": self.closed_for_room}})


class Connection(RequestHandler):
    """aiohttp's request handler with a deadline for each head and each body."""

    __slots__ = ("_limits", "_head_timer", "_body_timer", "_body", "_direct", "_routed")

    def __init__(self, manager: web.Server, limits: Limits, direct: dict[tuple[str, str], Handler],
                 **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=limits.keepalive_timeout_s,
                         lingering_time=limits.body_timeout_s, **kwargs)
        self._request_factory = partial(manager.request_factory, _cls=_Request)  # type: ignore[call-arg]
        self._direct = direct
        self._routed = manager.request_handler
        if direct:
            self._request_handler = self._dispatch
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._direct.get((request.method, request.raw_path))
        if handler is None or hdrs.EXPECT in request.headers:  # the app answers ``Expect: 100-continue``
            return await self._routed(request)
        return await handler(request)  # type: ignore[arg-type]  # made by ``_request_factory``: a ``_Request``

    def between_requests(self) -> bool:
        """No request is being read or handled: the connection is idle or sending a head."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def waiting_on_client(self) -> bool:
        """Idle, or its request's head or body is not complete: nothing is lost by closing it
        but a slow client's request."""
        return self._body_timer is not None or self.between_requests()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(self._limits.header_timeout_s, self._head_late)
        self._limits.admit(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        self._limits.leave(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The hot path: a ping's head and body usually come in one call, and then this adds
        # a few attribute reads and no timer. ``waiter`` is read before the parser runs: the
        # branch that uses it is the one where no head completed, so it is still as it was.
        waiter = self._waiter
        count = self._request_count
        RequestHandler.data_received(self, data)
        if self._body_timer is not None and (self._body is None or self._body.is_eof()):
            self._body_timer.cancel()
            self._body_timer = self._body = None
        if self._request_count != count:  # a head (or a refusal) is complete
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._body is not None:
                self._refuse_body(self._body)
                return
            body = self._messages[-1][1] if self._messages else None
            if body is not None and not body.is_eof():
                self._body = body
                self._body_timer = self._loop.call_later(self._limits.body_timeout_s, self._body_late)
        elif self._head_timer is None and waiter is not None and not waiter.done() and data:  # between_requests
            self._head_timer = self._loop.call_later(self._limits.header_timeout_s, self._head_late)

    def _refuse_body(self, body: StreamReader) -> None:
        """The parser refused a body already being read (a bad chunk, a compressed body that
        does not decode to its end): aiohttp queues a 400 for after the request and leaves
        the handler waiting for a body that can no longer come. The handler gets the error
        instead, answers it (400 malformed_request), and the connection closes after that
        one answer."""
        refusal, _ = self._messages.pop()
        body.set_exception(web.RequestPayloadError(parser_reason(getattr(refusal, "exc", None))))
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self._body = None
        self._lingering_time = 0.0
        self.close()

    def _head_late(self) -> None:
        self._head_timer = None
        if self.between_requests():
            log.debug("header timeout", extra={"event": {"event": "header_timeout"}})
            self.force_close()

    def _body_late(self) -> None:
        """The handler reading the body gets ``BodyTimeout`` (a 408); an unread body (the
        answer went out early) stops being drained. Either way the connection closes after
        the answer, without draining."""
        self._body_timer = None
        body, self._body = self._body, None
        if body is not None and not body.is_eof():
            self._lingering_time = 0.0
            body.set_exception(BodyTimeout())

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp logs at error level a body it fails to drain after the answer went out; a
        body that cannot be decoded is the client's fault, not the exchange's."""
        if isinstance(kwargs.get("exc_info"), web.RequestPayloadError):
            log.debug("malformed body", extra={"event": {"event": "malformed_request", "error": "RequestPayloadError"}})
        else:
            super().log_exception(*args, **kwargs)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused (400) or to an exception that
        escaped the app (500): the contract's error shape instead of text/plain, logged
        without the request's bytes. The connection closes after it, as in aiohttp."""
        if request.writer.output_size > 0:
            raise ConnectionError("an answer is already under way; the connection is given up")
        if status == 400:
            error = ApiError(Code.MALFORMED_REQUEST, f"not a valid HTTP/1.1 request: {parser_reason(exc)}")
            self._limits.metrics.rejected_requests.labels(error.code).inc()
            log.debug("malformed request", extra={"event": {"event": "malformed_request",
                                                            "error": type(exc).__name__}})
        else:
            error = ApiError(Code.INTERNAL_ERROR)
            log.error("unhandled", extra={"event": {"event": "unhandled", "path": request.path,
                                                    "error": type(exc).__name__}})
        response = web.Response(body=_encode(error.body()), status=error.status, content_type="application/json")
        response.force_close()
        return response


def parser_reason(exc: BaseException | None) -> str:
    """What aiohttp's parser found wrong, without the bytes it quotes (llhttp's
    "reason:\\n\\n  b'...'"); a payload error's reason is its cause's."""
    if isinstance(exc, web.RequestPayloadError):
        exc = exc.__cause__ or exc
    if isinstance(exc, LineTooLong):
        return f"a request line or header is longer than {exc.args[1]} bytes"
    text = str(getattr(exc, "message", None) or exc or "").split(":\n", 1)[0].strip()
    return text[:200] or "unreadable"


async def listen(runner: web.AppRunner, limits: Limits, host: str, port: int, tls: ssl.SSLContext | None,
                 reuse_port: bool) -> asyncio.Server:
    """Accept seller connections as ``Connection``s of ``runner``'s app (which must be set up).
    A TLS handshake must complete within ``header_timeout_s`` as read at start."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    loop = asyncio.get_running_loop()
    kwargs = server._kwargs  # the app's handler_args and the runner's access-log choice
    direct = runner.app.get(DIRECT, {})

    def protocol() -> Connection:
        return Connection(server, limits, direct, loop=loop, **kwargs)

    return await loop.create_server(protocol, host, port, ssl=tls, backlog=4096, reuse_port=reuse_port,
                                    ssl_handshake_timeout=limits.header_timeout_s if tls else None)
