"""The only place that talks to buyers.

Like a Prebid Server adapter, each message is a pair of pure functions, one that makes
the request bytes and one that reads the answer into a typed result. The I/O around them
(one keep-alive session per worker, per-call deadlines, cancellation, body caps) lives in
``BuyerClient`` and nowhere else, so every buyer gets the same misbehaviour handling.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Coroutine, Iterable, Sequence

import msgspec

from . import http1, money
from .config import Campaign
from .schema import BidAnswer, BuyerPing, BuyerPost, PingFields, PostAnswer

#: Largest answer a buyer may send; larger ones are refused unread.
MAX_ANSWER = 64 * 1024
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")

_encode = msgspec.json.Encoder().encode
_read_bid_body = msgspec.json.Decoder(BidAnswer).decode
_read_post_body = msgspec.json.Decoder(PostAnswer).decode


@dataclass(slots=True)
class Answer:
    """A buyer's HTTP answer, or the transport failure that stood in for one."""

    status: int = 0
    body: bytes = b""
    failure: str | None = None
    content_type: bytes = b""
    ms: float = 0.0


@dataclass(slots=True)
class BidResult:
    cents: int | None
    bid_id: str | None
    outcome: str


@dataclass(slots=True)
class PostResult:
    accepted: bool
    lead_id: str | None
    outcome: str


# Pure translations ------------------------------------------------------------------------


class PingBody:
    """The buyers' ping bodies of one ping, encoded once: only ``campaign_id`` and
    ``tmax_ms`` differ between buyers, so they lead the object and the shared fields (the
    lead's non-personal ones only: the Struct has no others) follow as the same bytes."""

    __slots__ = ("_shared",)

    def __init__(self, ping: PingFields, ping_id: str, seller_id: str, test: bool) -> None:
        self._shared = _encode(BuyerPing(
            ping_id=ping_id, vertical=ping.vertical, zip=ping.zip, seller_id=seller_id, test=test,
            state=ping.state, source_id=ping.source_id, sub_id=ping.sub_id, quality_score=ping.quality_score,
            tcpa_consent=ping.tcpa_consent, email_sha256=ping.email_sha256, phone_sha256=ping.phone_sha256,
            attributes=ping.attributes,
        ))[1:]

    def to(self, campaign_id: str, tmax_ms: int) -> bytes:
        return b'{"campaign_id":%s,"tmax_ms":%d,%s' % (_encode(campaign_id), tmax_ms, self._shared)


def is_json(content_type: bytes) -> bool:
    """``application/json`` or ``application/<anything>+json``, any case, any parameters."""
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def answer_problem(answer: Answer) -> str | None:
    """Why an answer cannot be read as a 200 JSON answer (the reason for the trace), or None."""
    if answer.failure is not None:
        return answer.failure
    if answer.status != 200:
        return f"error:http_{answer.status}"
    if not is_json(answer.content_type):
        return "error:content_type"
    return None


def read_bid(answer: Answer) -> BidResult:
    """Every answer but a well-formed bid is a no-bid, with the reason kept for the trace."""
    if answer.status == 204 and answer.failure is None:
        return BidResult(None, None, "no_bid")
    problem = answer_problem(answer)
    if problem is not None:
        return BidResult(None, None, problem)
    try:
        parsed = _read_bid_body(answer.body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        bad_bid = str(exc).endswith("`$.bid`")
        return BidResult(None, None, "error:bad_bid" if bad_bid else "error:bad_answer")
    except msgspec.DecodeError:
        return BidResult(None, None, "error:bad_json")
    bid = parsed.bid
    if bid is None or bid == 0:
        return BidResult(None, parsed.bid_id, "no_bid")
    if not math.isfinite(bid) or bid < 0:
        return BidResult(None, None, "error:bad_bid")
    cents = money.to_cents(bid)
    if cents == 0:
        return BidResult(None, parsed.bid_id, "no_bid")
    return BidResult(cents, parsed.bid_id, "bid")


def post_body(ping_id: str, bid_id: str | None, campaign_id: str, cents: int, test: bool,
              lead: dict[str, Any]) -> bytes:
    return _encode(BuyerPost(ping_id=ping_id, bid_id=bid_id, campaign_id=campaign_id,
                             price=money.to_amount(cents), test=test, lead=lead))


def read_post(answer: Answer) -> PostResult:
    """Only ``200 {"accepted": true}`` is a sale; anything else is a reject with a reason."""
    problem = answer_problem(answer)
    if problem is not None:
        return PostResult(False, None, "rejected:" + problem)
    try:
        parsed = _read_post_body(answer.body)
    except msgspec.ValidationError:  # a subclass of DecodeError: test it first
        return PostResult(False, None, "rejected:error:bad_answer")
    except msgspec.DecodeError:
        return PostResult(False, None, "rejected:error:bad_json")
    if parsed.accepted:
        return PostResult(True, parsed.lead_id, "accepted")
    return PostResult(False, None, "rejected:" + clean_reason(parsed.reason))


def clean_reason(reason: str | None) -> str:
    """A buyer's free-text reason, cut to a short safe token for traces, logs and labels.
    ``timeout`` is the exchange's own word for a post that got no answer, so a buyer that
    says it is recorded as ``buyer_timeout``."""
    cleaned = _REASON_UNSAFE.sub("_", reason or "").strip("_")[:48]
    if cleaned == "timeout":
        return "buyer_timeout"
    return cleaned or "unspecified"


# I/O ------------------------------------------------------------------------------------


#: (campaign id, URL) -> the request head, and whether a call may be resent on a fresh connection.
Targets = dict[tuple[str, str], tuple[http1.Target, bool]]
#: One call of a fan-out: campaign id, URL, request body, timeout in seconds.
Call = tuple[str, str, bytes, float]


def targets_of(campaigns: Iterable[Campaign]) -> Targets:
    """Each campaign's request heads, built once per config."""
    targets = {}
    for c in campaigns:
        headers = {**c.headers, "Content-Type": "application/json"}
        if c.ping_url is not None:
            targets[(c.id, c.ping_url)] = (http1.Target.of(c.ping_url, headers), True)
        # A lead is never sent twice: no resend on a connection the buyer dropped.
        targets[(c.id, c.post_url)] = (http1.Target.of(c.post_url, headers), False)
    return targets


class BuyerClient:
    """Every buyer call of one worker, over one lean keep-alive client (``http1``).

    Pools have no size limit, so a ping never queues behind other pings; every call carries
    its own deadline, and a call cut short aborts its connection instead of returning it
    to the pool half-read. Request heads are built once per campaign and URL.
    """

    def __init__(self, ca_file: str | None = None) -> None:
        self._http = http1.Client(tls_context(ca_file), MAX_ANSWER)
        self._targets: Targets = {}

    def learn(self, targets: Targets) -> None:
        """Take a config's request heads (``targets_of``), built before the config is swapped in."""
        self._targets = targets

    async def close(self) -> None:
        self._http.close()

    async def call(self, campaign_id: str, url: str, body: bytes, timeout_s: float, *,
                   fresh: bool = False, started: float | None = None) -> Answer:
        """POST ``body``; never raises: a failure becomes ``Answer.failure``. ``fresh`` and
        ``started`` serve ``fan_out``'s resend: a new connection, ``ms`` from the first try."""
        started = time.perf_counter() if started is None else started
        answer = Answer()
        try:
            if timeout_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(timeout_s):
                target, retry = self._targets[(campaign_id, url)]
                answer.status, answer.content_type, answer.body = await self._http.post(target, body, retry, fresh)
        except Exception as exc:
            answer.failure = failure_of(exc)
            if answer.failure is None:
                raise
        answer.ms = round((time.perf_counter() - started) * 1000, 2)
        return answer

    async def fan_out(self, calls: Sequence[Call], wait_s: float) -> list[Answer | None]:
        """Every ``(campaign_id, url, body, timeout_s)`` at once, each as ``call`` would make
        it, waiting at most ``wait_s`` for all; a call not finished by then is given up
        (its connection closed) and its entry is None.

        The hot path of a ping, so no task and no ``asyncio.timeout`` per call: a request
        goes out on an idle keep-alive connection at once and its answer's future carries a
        callback; one timer per distinct limit ends the calls still out. Only a call that
        needs a new connection (or a resend on one, see ``http1.Client.post``) runs as a
        ``call`` task.
        """
        loop = asyncio.get_running_loop()
        fan = _FanOut(self, calls, loop)
        for k in range(len(calls)):
            fan.send(k)
        if not fan.left:
            return fan.answers
        deadline = loop.call_later(wait_s, fan.give_up)
        try:
            await fan.all_in
        finally:
            deadline.cancel()
            fan.close()
        return fan.answers


class _FanOut:
    """One ``BuyerClient.fan_out`` under way: the answers so far and the calls still out,
    each finished once, by its answer, its failure, its timer or the fan-out's end.

    ``out``: calls sent on an idle connection, k -> (target, connection, start);
    ``tasks``: calls running as ``BuyerClient.call`` tasks; ``timers``: one per distinct
    limit, with the calls it ends.
    """

    __slots__ = ("client", "calls", "loop", "answers", "out", "tasks", "timers", "all_in", "left")

    def __init__(self, client: BuyerClient, calls: Sequence[Call], loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.calls = calls
        self.loop = loop
        self.answers: list[Answer | None] = [None] * len(calls)
        self.out: dict[int, tuple[http1.Target, http1._Connection, float]] = {}
        self.tasks: dict[int, asyncio.Task[Answer]] = {}
        self.timers: dict[float, tuple[asyncio.TimerHandle, list[int]]] = {}
        self.all_in: asyncio.Future[None] = loop.create_future()
        self.left = len(calls)

    def send(self, k: int) -> None:
        """Call ``k`` on an idle connection with a callback on its answer, else as a task."""
        client = self.client
        campaign_id, url, body, timeout_s = self.calls[k]
        target, _ = client._targets[(campaign_id, url)]
        started = time.perf_counter()
        sent = client._http.send_idle(target, body) if timeout_s > 0 else None
        if sent is None:
            self.run(k, client.call(campaign_id, url, body, timeout_s))
            return
        connection, future = sent
        self.out[k] = (target, connection, started)
        group = self.timers.get(timeout_s)
        if group is None:
            ks: list[int] = []
            group = self.timers[timeout_s] = (self.loop.call_later(timeout_s, self.expire, ks), ks)
        group[1].append(k)
        future.add_done_callback(functools.partial(self.answered, k))

    def finish(self, k: int, answer: Answer) -> None:
        self.answers[k] = answer
        self.left -= 1
        if self.left == 0 and not self.all_in.done():
            self.all_in.set_result(None)

    def answered(self, k: int, future: asyncio.Future[tuple[int, bytes, bytes]]) -> None:
        exc = future.exception()  # always read, so a given-up call logs nothing
        taken = self.out.pop(k, None)
        if taken is None:
            return  # already given up
        target, connection, started = taken
        if exc is None:
            self.client._http.keep(target, connection)
            status, content_type, body = future.result()
            self.finish(k, Answer(status=status, body=body, content_type=content_type,
                                  ms=round((time.perf_counter() - started) * 1000, 2)))
            return
        connection.close()
        campaign_id, url, request, timeout_s = self.calls[k]
        client = self.client
        if isinstance(exc, ConnectionResetError) and not connection.received and client._targets[(campaign_id, url)][1]:
            # the buyer closed this idle connection: send once more, on a new one
            remaining = timeout_s - (time.perf_counter() - started)
            self.run(k, client.call(campaign_id, url, request, remaining, fresh=True, started=started))
            return
        self.finish(k, Answer(failure=failure_of(exc) or "error:connection",
                              ms=round((time.perf_counter() - started) * 1000, 2)))

    def run(self, k: int, call: Coroutine[Any, Any, Answer]) -> None:
        task = self.tasks[k] = asyncio.ensure_future(call)
        task.add_done_callback(functools.partial(self.ran, k))

    def ran(self, k: int, task: asyncio.Task[Answer]) -> None:
        if self.tasks.pop(k, None) is not None:
            self.finish(k, task.result())

    def expire(self, ks: list[int]) -> None:
        for k in ks:
            taken = self.out.pop(k, None)
            if taken is not None:
                taken[1].close()
                self.finish(k, Answer(failure="timeout", ms=round((time.perf_counter() - taken[2]) * 1000, 2)))

    def give_up(self) -> None:
        if not self.all_in.done():
            self.all_in.set_result(None)

    def close(self) -> None:
        """Whatever is still out is given up: timers off, connections closed, tasks cancelled."""
        for handle, _ in self.timers.values():
            handle.cancel()
        for _, connection, _ in self.out.values():
            connection.close()
        self.out.clear()
        for task in list(self.tasks.values()):
            task.cancel()
        self.tasks.clear()



def failure_of(exc: BaseException) -> str | None:
    """The recorded reason for an exception a buyer call ended with; None: not a buyer fault."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, http1.TooLarge):
        return "error:too_large"
    if isinstance(exc, ssl.SSLError):
        return "error:tls"
    if isinstance(exc, http1.ProtocolError):
        return "error:protocol"
    if isinstance(exc, ConnectionResetError):
        return "error:reset"
    if isinstance(exc, socket.gaierror):
        return "error:dns"
    if isinstance(exc, OSError):
        return "error:connection"
    return None


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify buyers against the system's CAs, plus ``ca_file``'s (a private CA) when given."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context
