"""The JSON lines on stderr: their shape, and that each is written as it is logged."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any, Iterator

import pytest

from pingpost.logs import JsonLines, line_of


class Sink(io.BytesIO):
    """A binary stream that counts the writes it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Sink]]:
    sink = Sink()
    logger = logging.getLogger("pingpost.test-logs")
    logger.handlers[:] = [JsonLines(sink)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, sink
    logger.handlers[:] = []


def test_a_line_is_the_event_with_its_time_level_and_logger() -> None:
    record = logging.LogRecord("pingpost.auction", logging.INFO, "", 0, "ping", (), None)
    record.event = {"event": "ping", "ping_id": "p1", "price": 2.5, "test": False}
    line = line_of(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"ts": round(record.created, 3), "level": "info", "logger": "pingpost.auction",
                                "event": "ping", "ping_id": "p1", "price": 2.5, "test": False}


def test_a_line_without_an_event_carries_the_message_and_an_error_its_type() -> None:
    try:
        raise ZeroDivisionError("the message of an exception is never written")
    except ZeroDivisionError:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "Error handling %s", ("request",),
                                   sys.exc_info())
    assert json.loads(line_of(record)) == {"ts": round(record.created, 3), "level": "error",
                                           "logger": "aiohttp.server", "message": "Error handling request",
                                           "error": "ZeroDivisionError"}
    empty = logging.LogRecord("pingpost", logging.INFO, "", 0, "x", (), None)
    empty.event = {}
    assert json.loads(line_of(empty)) == {"ts": round(empty.created, 3), "level": "info", "logger": "pingpost"}


def test_each_line_is_written_as_it_is_logged(logged: tuple[logging.Logger, Sink]) -> None:
    logger, sink = logged
    for n in range(3):
        logger.info("ping", extra={"event": {"event": "ping", "n": n}})
        assert sink.writes == n + 1
    logger.warning("late", extra={"event": {"event": "late"}})
    assert [line.get("n", line["event"]) for line in sink.lines()] == [0, 1, 2, "late"]


def test_a_closed_stream_loses_its_lines_quietly(logged: tuple[logging.Logger, Sink]) -> None:
    """stderr gone (the pipe closed): logging goes on, raising nothing."""
    logger, sink = logged
    sink.close()
    logger.info("lost", extra={"event": {"event": "lost"}})
    logger.error("lost too", extra={"event": {"event": "lost"}})
    assert sink.writes == 2
