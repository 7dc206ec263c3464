"""One JSON line per event on stderr.

Callers pass the event as ``extra={"event": {...}}`` with ids, outcomes and timings only;
the line is made of nothing else, so a lead's fields cannot slip into a line.

Every ping logs a line, so the line is cheap: it is encoded straight to bytes for stderr's
binary stream, and the info and debug lines logged while the event loop runs one turn are
written together at the end of that turn, one ``write`` for all of them instead of one each.
Warnings and errors, and lines logged off the loop (another thread, before the loop starts),
are written at once, after any still waiting, so every line keeps its order. A line is never
held past the turn that logged it (but by a process killed in that very turn), and ``flush``
writes the waiting ones before something else is said on another stream.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import BinaryIO

import msgspec

_encode = msgspec.json.Encoder().encode


def line_of(record: logging.LogRecord) -> bytes:
    """The record's JSON line, newline included: its time, level and logger, then the event."""
    event = getattr(record, "event", None)
    if not isinstance(event, dict):
        event = {"message": record.getMessage()}
    if record.exc_info and record.exc_info[0] is not None:
        event = {**event, "error": record.exc_info[0].__name__}
    body = _encode(event)
    return b'{"ts":%.3f,"level":%s,"logger":%s%s%s\n' % (record.created, _encode(record.levelname.lower()),
                                                        _encode(record.name), b"," if len(body) > 2 else b"",
                                                        body[1:])


class JsonLines(logging.Handler):
    """``line_of`` each record to a binary stream, written once per turn of the event loop."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self.stream = stream
        self._waiting: list[bytes] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._waiting.append(line_of(record))
            if record.levelno >= logging.WARNING:
                self.flush()
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self.flush)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._scheduled = False
            if self._waiting:
                data = b"".join(self._waiting)
                self._waiting.clear()
                try:
                    self.stream.write(data)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # stderr is closed or gone: there is nowhere left to say so


def setup(level: str) -> None:
    """``pingpost.*`` at ``level``; every other logger (aiohttp's "Error handling request" on a
    malformed request, asyncio) at warning or above, in the same JSON lines, never as tracebacks."""
    # The lines read none of the caller's file/line, thread or process: stop the logging
    # module from collecting them on every record (a stack walk per ping line).
    logging._srcfile = None  # documented in the logging HOWTO, "Optimization"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = JsonLines(sys.stderr.buffer)
    ours = logging.getLogger("pingpost")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, ours.level))


def flush() -> None:
    """Write every line still waiting for the end of the loop's turn."""
    for handler in logging.getLogger("pingpost").handlers:
        handler.flush()
