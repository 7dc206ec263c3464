"""One JSON line per event on stderr.

Callers pass the event as ``extra={"event": {...}}`` with ids, outcomes and timings only;
the line is made of nothing else, so a lead's fields cannot slip into a line.

Every ping logs a line, so the line is cheap: its JSON is encoded straight to bytes and
written to stderr's binary stream, with no formatter's dict, no str and no text layer between.
Each line is written as it is logged: writing an event-loop turn's lines together, once at the
turn's end, saved about two microseconds a line but made the seller's p99 latency worse at half
capacity (docs/performance.md), so the lines are not held back.
"""

from __future__ import annotations

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
    """``line_of`` each record, written at once to a binary stream."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(line_of(record))
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr is closed or gone: there is nowhere left to say so
        except Exception:
            self.handleError(record)


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
