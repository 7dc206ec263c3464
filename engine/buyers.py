"""The only place that talks to buyers.

Like a Prebid Server adapter, each message is a pair of pure functions, one that makes
the request (a head and a body) and one that reads the answer into a typed result: a
campaign's format (``formats``). The I/O around them (one keep-alive client per worker,
per-call deadlines, cancellation, body caps, a post's retries before it is sent) lives in
``BuyerClient`` and nowhere else, so every buyer gets the same misbehaviour handling
whatever its format.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import ssl
import time
from typing import Any, Coroutine, Sequence

from . import http1
from .formats.results import MAX_ANSWER, Answer

#: A post that failed for one of these never left the exchange: the connection was not
#: opened (``http1.Client`` raises them only from opening one, before a byte is written),
#: so it is tried again.
NOT_SENT = frozenset({"error:connection", "error:dns"})
#: Tries of one post at most, and the wait before the first retry (doubled for each next one).
POST_TRIES = 4
RETRY_WAIT_S = 0.05

# I/O ------------------------------------------------------------------------------------


#: One call of a fan-out: the request head (``http1.Target``), its body, timeout in seconds.
Call = tuple[http1.Target, bytes, float]


class BuyerClient:
    """Every buyer call of one worker, over one lean keep-alive client (``http1``).

    Pools have no size limit, so a ping never queues behind other pings; every call carries
    its own deadline, and a call cut short aborts its connection instead of returning it
    to the pool half-read. Request heads come made (``formats``: once per campaign and
    message, or per request for a query string).
    """

    def __init__(self, ca_file: str | None = None) -> None:
        self._http = http1.Client(tls_context(ca_file), MAX_ANSWER)

    async def close(self) -> None:
        self._http.close()

    async def call(self, target: http1.Target, body: bytes, timeout_s: float, *,
                   fresh: bool = False, started: float | None = None) -> Answer:
        """Send one request; never raises: a failure becomes ``Answer.failure``. ``fresh`` and
        ``started`` serve ``fan_out``'s resend: a new connection, ``ms`` from the first try."""
        started = time.perf_counter() if started is None else started
        answer = Answer()
        try:
            if timeout_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(timeout_s):
                answer.status, answer.content_type, answer.body = await self._http.post(target, body, target.resend,
                                                                                        fresh)
        except Exception as exc:
            answer.failure = failure_of(exc)
            if answer.failure is None:
                raise
        answer.ms = round((time.perf_counter() - started) * 1000, 2)
        return answer

    async def deliver(self, target: http1.Target, body: bytes, timeout_s: float) -> list[Answer]:
        """A post, tried again while it fails before it could have reached the buyer
        (``NOT_SENT``), after a wait that doubles each time, drawn from its upper half so
        that the retries of many posts spread out, all within ``timeout_s``; once it may
        have reached the buyer it is never sent again. Every try's answer, the last one the
        post's."""
        deadline = time.perf_counter() + timeout_s
        answers = [await self.call(target, body, timeout_s)]
        wait = RETRY_WAIT_S
        while answers[-1].failure in NOT_SENT and len(answers) < POST_TRIES:
            pause = wait * (0.5 + random.random() / 2)
            if time.perf_counter() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            answers.append(await self.call(target, body, deadline - time.perf_counter()))
            wait *= 2
        return answers

    async def fan_out(self, calls: Sequence[Call], wait_s: float) -> list[Answer | None]:
        """Every ``(target, body, timeout_s)`` at once, each as ``call`` would make
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
        target, body, timeout_s = self.calls[k]
        started = time.perf_counter()
        sent = client._http.send_idle(target, body) if timeout_s > 0 else None
        if sent is None:
            self.run(k, client.call(target, body, timeout_s))
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
        _, request, timeout_s = self.calls[k]
        if isinstance(exc, ConnectionResetError) and not connection.received and target.resend:
            # the buyer closed this idle connection: send once more, on a new one
            remaining = timeout_s - (time.perf_counter() - started)
            self.run(k, self.client.call(target, request, remaining, fresh=True, started=started))
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
