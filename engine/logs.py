"""One JSON line per event on stderr.

Callers pass the event as ``extra={"event": {...}}`` with ids, outcomes and timings only;
the formatter never looks at anything else, so a lead's fields cannot slip into a line.
"""

from __future__ import annotations

import logging
import time

import msgspec

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        line = {"ts": round(time.time(), 3), "level": record.levelname.lower(), "logger": record.name}
        if isinstance(event, dict):
            line.update(event)
        else:
            line["message"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
        return _encode(line).decode()


def setup(level: str) -> None:
    """``pingpost.*`` at ``level``; every other logger (aiohttp's "Error handling request" on a
    malformed request, asyncio) at warning or above, in the same JSON lines, never as tracebacks."""
    # The formatter reads none of the caller's file/line, thread or process: stop the
    # logging module from collecting them on every record (a stack walk per ping line).
    logging._srcfile = None  # documented in the logging HOWTO, "Optimization"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    ours = logging.getLogger("pingpost")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, ours.level))
