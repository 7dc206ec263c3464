"""Simulated buyers: many campaigns' ping and post endpoints on one port.

URL form: ``POST /<campaign_id>/ping``, ``POST /<campaign_id>/post``, ``GET /stats``.
Each campaign answers per the buyer protocol (docs/buyer-protocol.md), or in a buyer's own
format its profile gives as ``answers`` templates, with the latency, bids, no-bids,
timeouts, errors and rejects of its profile (docs/simulator.md).

A load test must measure the exchange, not this simulator, so it is a bare asyncio
``Protocol`` over httptools rather than an aiohttp app: no task per request (latency is a
``call_later`` timer), no body decoding (the answer does not depend on the lead), and
constant answers encoded once. Answers on one connection leave in request order, so
pipelining is safe even when a later request finishes first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import signal
import sys
import typing
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Callable, Sequence

import httptools
import msgspec
import uvloop
from msgspec import Meta, Struct

log = logging.getLogger("pingpost.buyers")

Rate = Annotated[float, Meta(ge=0, le=1)]
Ms = Annotated[float, Meta(ge=0)]
Dollars = Annotated[float, Meta(ge=0)]
CampaignId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class Behaviour(Struct, kw_only=True, forbid_unknown_fields=True):
    """How one campaign answers. Rates are shares of all requests of that kind; each
    field's description is also its CLI flag's help."""

    latency_ms: Annotated[Ms, Meta(description="mean ping answer time")] = 20.0
    jitter_ms: Annotated[Ms, Meta(description="answer times spread uniformly +- this much (floored at 0)")] = 10.0
    bid_min: Annotated[Dollars, Meta(description="lowest bid, dollars")] = 1.0
    bid_max: Annotated[Dollars, Meta(description="highest bid, dollars (uniform between, whole cents)")] = 20.0
    no_bid_rate: Annotated[Rate, Meta(description="share of pings answered 204 or {\"bid\": 0}")] = 0.2
    timeout_rate: Annotated[Rate, Meta(description="share of pings held for hold_s before answering")] = 0.0
    error_rate: Annotated[Rate, Meta(description="share of pings answered 500 or malformed JSON")] = 0.0
    post_latency_ms: Annotated[Ms, Meta(description="mean post answer time")] = 30.0
    reject_rate: Annotated[Rate, Meta(description="share of posts answered {\"accepted\": false}")] = 0.1
    post_timeout_rate: Annotated[Rate, Meta(description="share of posts held for hold_s before answering")] = 0.0
    post_error_rate: Annotated[Rate, Meta(description="share of posts answered 500 or malformed JSON")] = 0.0
    hold_s: Annotated[Ms, Meta(description="how long a timed-out request is held (or until the client leaves)")] = 30.0

    def __post_init__(self) -> None:
        if self.bid_min > self.bid_max:
            raise ValueError("bid_min is above bid_max")
        if self.timeout_rate + self.error_rate + self.no_bid_rate > 1:
            raise ValueError("timeout_rate + error_rate + no_bid_rate is above 1")
        if self.post_timeout_rate + self.post_error_rate + self.reject_rate > 1:
            raise ValueError("post_timeout_rate + post_error_rate + reject_rate is above 1")


class Answers(Struct, kw_only=True, forbid_unknown_fields=True):
    """A buyer's own answer format, for a campaign the exchange reaches with a custom format:
    one template per kind of answer, where ``{price}`` (``12.34``), ``{id}`` (unique per
    answer) and ``{reason}`` (a reject's) are filled in; always ``200``, of ``content_type``.
    A kind without a template is answered as the exchange's protocol answers it."""

    content_type: Annotated[str, Meta(pattern=r"^[\x21-\x7e][\x20-\x7e]*(?!\n)$")] = "application/json"
    bid: str | None = None
    no_bid: str | None = None
    accept: str | None = None
    reject: str | None = None


class CampaignBehaviour(Behaviour, kw_only=True, forbid_unknown_fields=True):
    id: CampaignId
    answers: Answers | None = None


class Profile(Struct, kw_only=True):
    """A whole simulator: the defaults, the campaigns that differ, and whether ids not
    listed are served (with the defaults) or answered 404."""

    default: Behaviour = msgspec.field(default_factory=Behaviour)
    campaigns: list[CampaignBehaviour] = []
    any_campaign: bool = True


class _ProfileFile(Struct, forbid_unknown_fields=True):
    default: dict[str, Any] = {}
    campaigns: list[dict[str, Any]] = []
    any_campaign: bool | None = None


class ProfileError(Exception):
    pass


def load_profile(path: str | Path | None, defaults: dict[str, Any] | None = None) -> Profile:
    """Read a TOML or JSON profile; ``defaults`` (from CLI flags) override its ``[default]``."""
    raw = _ProfileFile()
    if path is not None:
        path = Path(path)
        decoders: dict[str, Callable[..., Any]] = {".toml": msgspec.toml.decode, ".json": msgspec.json.decode}
        decode = decoders.get(path.suffix.lower())
        if decode is None:
            raise ProfileError(f"{path}: the file name must end in .toml or .json")
        try:
            raw = decode(path.read_bytes(), type=_ProfileFile)
        except (OSError, msgspec.DecodeError) as exc:
            raise ProfileError(f"{path}: {exc}") from None
    return build_profile(raw.default | (defaults or {}), raw.campaigns, raw.any_campaign)


def build_profile(default: dict[str, Any], campaigns: Sequence[dict[str, Any]] = (),
                  any_campaign: bool | None = None) -> Profile:
    """Campaign entries inherit every field they leave out from ``default``. Unless told,
    unknown ids are served only when no campaign is listed (a profile of defaults alone)."""
    base = _convert(default, Behaviour, "default")
    inherited = msgspec.to_builtins(base)
    listed = [_convert(inherited | entry, CampaignBehaviour, f"campaigns[{i}]") for i, entry in enumerate(campaigns)]
    ids = [c.id for c in listed]
    if len(set(ids)) != len(ids):
        raise ProfileError("campaigns: an id is listed twice")
    return Profile(default=base, campaigns=listed, any_campaign=not listed if any_campaign is None else any_campaign)


def _convert(raw: dict[str, Any], typ: type[Struct], where: str) -> Any:
    try:
        return msgspec.convert(raw, typ)
    except msgspec.ValidationError as exc:
        message, _, field = str(exc).partition(" - at `$")
        raise ProfileError(f"{where}{field.rstrip('`')}: {message}") from None


# Answers ---------------------------------------------------------------------------------


def _http(status: bytes, body: bytes = b"", content_type: bytes = b"application/json") -> bytes:
    if not body:
        return b"HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n" % status
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (status, content_type, len(body),
                                                                                   body)


_NO_BIDS = (_http(b"204 No Content"), _http(b"200 OK", b'{"bid":0}'))
_ERRORS = (_http(b"500 Internal Server Error", b'{"error":"simulated failure"}'),
           _http(b"200 OK", b'{"bid": 1.5, "bid_'))
_REASONS = (b"duplicate", b"outside_service_area", b"invalid_phone", b"cap_reached")
_REJECTS = tuple(_http(b"200 OK", b'{"accepted":false,"reason":"%s"}' % reason) for reason in _REASONS)
_NOT_FOUND = _http(b"404 Not Found", b'{"error":"unknown campaign"}')
_NOT_ALLOWED = _http(b"405 Method Not Allowed", b'{"error":"method not allowed"}')
_BAD_REQUEST = _http(b"400 Bad Request", b'{"error":"malformed HTTP request"}')
_ID = re.compile(rb"^[A-Za-z0-9_.\-]{1,64}$")

#: Per kind of request, its counters in draw order: all, held (timeout), error, refused
#: (no-bid / reject), answered well.
PING_COUNTERS = ("pings", "timeouts", "errors", "no_bids", "bids")
POST_COUNTERS = ("posts", "post_timeouts", "post_errors", "rejected", "accepted")


class _Kind:
    """How one kind of request (ping or post) of one campaign is answered: the cut-offs a
    random draw is compared with, the answer delay, the refusals, and the counters."""

    __slots__ = ("cuts", "lo", "refusals", "counts")

    def __init__(self, rates: tuple[float, float, float], lo: float, refusals: tuple[bytes, ...]) -> None:
        self.cuts = _cuts(*rates)
        self.lo = lo
        self.refusals = refusals
        self.counts = [0] * 5


class _Campaign:
    """One campaign's behaviour and counters, for its pings and for its posts; ``kind`` and
    the bid and accept templates: a buyer's own format (None: the exchange's protocol)."""

    __slots__ = ("key", "span", "hold", "cents", "ping", "post", "kind", "bid", "accept")

    def __init__(self, campaign_id: str, b: Behaviour, answers: Answers | None = None) -> None:
        self.key = campaign_id.encode()
        self.span = 2 * b.jitter_ms / 1000
        self.hold = b.hold_s
        self.cents = (round(b.bid_min * 100), round(b.bid_max * 100))
        no_bids: tuple[bytes, ...] = _NO_BIDS
        rejects: tuple[bytes, ...] = _REJECTS
        self.kind: bytes | None = None
        self.bid: bytes | None = None
        self.accept: bytes | None = None
        if answers is not None:
            kind = self.kind = answers.content_type.encode()
            if answers.no_bid is not None:
                no_bids = (_http(b"200 OK", answers.no_bid.encode(), kind),)
            if answers.reject is not None:
                reject = answers.reject.encode()
                rejects = tuple(_http(b"200 OK", reject.replace(b"{reason}", reason), kind) for reason in _REASONS)
            self.bid = None if answers.bid is None else answers.bid.encode()
            self.accept = None if answers.accept is None else answers.accept.encode()
        self.ping = _Kind((b.timeout_rate, b.error_rate, b.no_bid_rate), (b.latency_ms - b.jitter_ms) / 1000, no_bids)
        self.post = _Kind((b.post_timeout_rate, b.post_error_rate, b.reject_rate),
                          (b.post_latency_ms - b.jitter_ms) / 1000, rejects)

    def counters(self) -> dict[str, int]:
        return {**dict(zip(PING_COUNTERS, self.ping.counts)), **dict(zip(POST_COUNTERS, self.post.counts))}


def _cuts(*rates: float) -> tuple[float, ...]:
    total, cuts = 0.0, []
    for rate in rates:
        total += rate
        cuts.append(total)
    return tuple(cuts)


class Simulator:
    """The campaigns, their counters and the open connections of one server."""

    def __init__(self, profile: Profile, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.default = profile.default
        self.any_campaign = profile.any_campaign
        self.campaigns = {c.id.encode(): _Campaign(c.id, c, c.answers) for c in profile.campaigns}
        self.connections: set[_Connection] = set()
        self.accepted_connections = 0
        self.seq = 0

    async def serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Connection(self, loop), host, port, backlog=4096)

    def close_connections(self) -> None:
        for connection in list(self.connections):
            connection.transport.close()

    def answer(self, method: bytes, url: bytes) -> tuple[bytes, float]:
        """The response bytes for one request and the seconds to wait before sending them."""
        path = url.partition(b"?")[0]
        campaign_id, _, action = path[1:].rpartition(b"/")
        if action == b"stats" and not campaign_id:
            return (_http(b"200 OK", self.stats()) if method == b"GET" else _NOT_ALLOWED), 0.0
        if action not in (b"ping", b"post"):
            return _NOT_FOUND, 0.0
        campaign = self.campaigns.get(campaign_id) or self._unlisted(campaign_id)
        if campaign is None:
            return _NOT_FOUND, 0.0
        if method != b"POST" and (campaign.kind is None or method not in (b"GET", b"PUT")):
            return _NOT_ALLOWED, 0.0
        if action == b"ping":
            return self._answer(campaign, campaign.ping, self._bid)
        return self._answer(campaign, campaign.post, self._accept)

    def _unlisted(self, campaign_id: bytes) -> _Campaign | None:
        if not self.any_campaign or not _ID.match(campaign_id):
            return None
        campaign = self.campaigns[campaign_id] = _Campaign(campaign_id.decode(), self.default)
        return campaign

    def _answer(self, c: _Campaign, kind: _Kind, good: Callable[[_Campaign], bytes]) -> tuple[bytes, float]:
        """One draw picks the answer: held (a timeout), an error, a refusal, or ``good``."""
        counts = kind.counts
        counts[0] += 1
        rng = self.rng
        draw = rng.random()
        held, error, refused = kind.cuts
        if draw < held:
            counts[1] += 1
            return good(c), c.hold
        delay = max(0.0, kind.lo + rng.random() * c.span)
        if draw < error:
            counts[2] += 1
            return rng.choice(_ERRORS), delay
        if draw < refused:
            counts[3] += 1
            return rng.choice(kind.refusals), delay
        counts[4] += 1
        return good(c), delay

    def _bid(self, c: _Campaign) -> bytes:
        cents = self.rng.randint(*c.cents)
        self.seq += 1
        if c.bid is not None and c.kind is not None:
            price, ident = b"%d.%02d" % (cents // 100, cents % 100), b"%s-%d" % (c.key, self.seq)
            return _http(b"200 OK", c.bid.replace(b"{price}", price).replace(b"{id}", ident), c.kind)
        return _http(b"200 OK", b'{"bid":%d.%02d,"bid_id":"%s-%d"}' % (cents // 100, cents % 100, c.key, self.seq))

    def _accept(self, c: _Campaign) -> bytes:
        self.seq += 1
        if c.accept is not None and c.kind is not None:
            return _http(b"200 OK", c.accept.replace(b"{id}", b"%s-L%d" % (c.key, self.seq)), c.kind)
        return _http(b"200 OK", b'{"accepted":true,"lead_id":"%s-L%d"}' % (c.key, self.seq))

    def stats(self) -> bytes:
        return msgspec.json.encode({
            "connections": self.accepted_connections,
            "campaigns": {c.key.decode(): c.counters() for c in self.campaigns.values()},
        })


class _Pending:
    """An answer whose turn on the connection has not come yet."""

    __slots__ = ("response", "handle", "keep_alive")

    def __init__(self, keep_alive: bool) -> None:
        self.response: bytes | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.keep_alive = keep_alive


class _Connection(asyncio.Protocol):
    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.url = b""
        self.pending: deque[_Pending] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sim.connections.add(self)
        self.sim.accepted_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.connections.discard(self)
        self._drop_pending()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self.pending:
                self.transport.write(_BAD_REQUEST)
            self._close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        response, delay = self.sim.answer(self.parser.get_method(), self.url)
        self.url = b""
        keep_alive = self.parser.should_keep_alive()
        if delay <= 0 and not self.pending:
            self._send(response, keep_alive)
            return
        slot = _Pending(keep_alive)
        self.pending.append(slot)
        if delay <= 0:
            slot.response = response
        else:
            slot.handle = self.loop.call_later(delay, self._ready, slot, response)

    def _ready(self, slot: _Pending, response: bytes) -> None:
        slot.response, slot.handle = response, None
        pending = self.pending
        while pending and pending[0].response is not None:
            head = pending.popleft()
            if not self._send(head.response, head.keep_alive):  # type: ignore[arg-type]
                return

    def _send(self, response: bytes, keep_alive: bool) -> bool:
        self.transport.write(response)
        if not keep_alive:
            self._close()
        return keep_alive

    def _close(self) -> None:
        self._drop_pending()
        self.transport.close()

    def _drop_pending(self) -> None:
        for slot in self.pending:
            if slot.handle is not None:
                slot.handle.cancel()
        self.pending.clear()


async def start(host: str, port: int, profile: Profile | None = None, *, seed: int | None = None) -> asyncio.Server:
    """Serve ``profile`` (the defaults for any id when None) in this loop; port 0 picks a
    free port, read it from ``server.sockets[0].getsockname()``."""
    return await Simulator(profile or Profile(), seed).serve(host, port)


# CLI -------------------------------------------------------------------------------------


def _behaviour_fields() -> list[tuple[str, Any, str]]:
    hints = typing.get_type_hints(Behaviour, include_extras=True)
    return [(f.name, f.default, next(m.description for m in hints[f.name].__metadata__ if m.description))
            for f in msgspec.structs.fields(Behaviour)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on, 0 for any free one (default: 9100)")
    parser.add_argument("--profile", help="TOML or JSON profile: [default] and [[campaigns]] overrides")
    parser.add_argument("--seed", type=int, help="random seed, for repeatable runs")
    parser.add_argument("--any-campaign", action=argparse.BooleanOptionalAction, default=None,
                        help="serve ids the profile does not list with the defaults (default: only "
                             "when it lists none); otherwise they get 404")
    group = parser.add_argument_group("defaults", "override the profile's [default] table")
    for name, default, text in _behaviour_fields():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, metavar="X",
                           help=f"{text} (default: {default:g})")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    flags = {name: getattr(args, name) for name, _, _ in _behaviour_fields() if getattr(args, name) is not None}
    try:
        profile = load_profile(args.profile, flags)
    except ProfileError as exc:
        print(f"pingpost buyers: {exc}", file=sys.stderr)
        return 2
    if args.any_campaign is not None:
        profile.any_campaign = args.any_campaign
    return uvloop.run(_serve_until_signal(args.host, args.port, Simulator(profile, args.seed)))


async def _serve_until_signal(host: str, port: int, sim: Simulator) -> int:
    try:
        server = await sim.serve(host, port)
    except OSError as exc:  # one line, as ``serve`` says it: a busy port is not a crash
        print(f"pingpost buyers: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"buyers listening on http://{shown}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    sim.close_connections()
    await server.wait_closed()
    log.info("stopped")
    return 0
