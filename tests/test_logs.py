"""The JSON lines on stderr: their shape, and when they are written (info lines logged in one
turn of the event loop together at its end; warnings, errors and lines from off the loop at
once; never out of order)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading
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


async def test_info_lines_of_one_turn_are_written_together_at_its_end(logged: tuple[logging.Logger, Sink]) -> None:
    logger, sink = logged
    for n in range(50):
        logger.info("ping", extra={"event": {"event": "ping", "n": n}})
    assert sink.writes == 0
    await asyncio.sleep(0)
    assert sink.writes == 1
    assert [line["n"] for line in sink.lines()] == list(range(50))
    logger.debug("next", extra={"event": {"event": "next"}})
    await asyncio.sleep(0)
    assert sink.writes == 2


async def test_a_warning_goes_at_once_after_the_lines_waiting(logged: tuple[logging.Logger, Sink]) -> None:
    logger, sink = logged
    logger.info("first", extra={"event": {"event": "first"}})
    logger.warning("second", extra={"event": {"event": "second"}})
    assert [line["event"] for line in sink.lines()] == ["first", "second"]
    await asyncio.sleep(0)
    assert sink.writes == 1


async def test_lines_from_another_thread_go_at_once_in_order(logged: tuple[logging.Logger, Sink]) -> None:
    logger, sink = logged
    logger.info("loop", extra={"event": {"event": "loop"}})
    thread = threading.Thread(target=lambda: logger.info("thread", extra={"event": {"event": "thread"}}))
    thread.start()
    thread.join()
    assert [line["event"] for line in sink.lines()] == ["loop", "thread"]


def test_lines_off_the_loop_go_at_once(logged: tuple[logging.Logger, Sink]) -> None:
    logger, sink = logged
    logger.info("one", extra={"event": {"event": "one"}})
    assert sink.writes == 1 and sink.lines()[0]["event"] == "one"


async def test_flush_writes_what_waits(logged: tuple[logging.Logger, Sink]) -> None:
    logger, sink = logged
    logger.info("waiting", extra={"event": {"event": "waiting"}})
    logger.handlers[0].flush()
    assert [line["event"] for line in sink.lines()] == ["waiting"]
    await asyncio.sleep(0)
    assert sink.writes == 1


async def test_a_closed_stream_loses_its_lines_quietly(logged: tuple[logging.Logger, Sink]) -> None:
    """stderr gone (the pipe closed): logging goes on, raising nothing, and keeps nothing."""
    logger, sink = logged
    sink.close()
    logger.info("lost", extra={"event": {"event": "lost"}})
    logger.handlers[0].flush()
    logger.error("lost too", extra={"event": {"event": "lost"}})
    assert sink.writes == 2
