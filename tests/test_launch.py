"""``pingpost.launch``: how the demo, the benchmark and the tests start a server and learn
where it listens. Each child here is a real Python process scripted by ``-c``."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from pingpost.launch import Child, NotListening, free_port


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


LISTENS = ("import sys, time\n"
           "print('starting', flush=True)\n"
           # One write per line, as pingpost's own processes log: print() to stderr writes the
           # text and its newline apart, and the stdout line copied to the same log can land between.
           "sys.stderr.write('warming up\\n'); sys.stderr.flush()\n"
           "print('buyers listening on http://127.0.0.1:4711', flush=True)\n"
           "time.sleep(60)\n")


def test_start_waits_for_the_listening_line_and_keeps_every_line() -> None:
    child = Child.start(python(LISTENS), timeout=20)
    try:
        assert child.url == "http://127.0.0.1:4711"
        assert child.listening == "buyers listening on http://127.0.0.1:4711"
        assert child.stdout == ["starting", "buyers listening on http://127.0.0.1:4711"]
        assert child.process.poll() is None
    finally:
        assert child.stop(10) == -signal.SIGTERM
    assert child.stderr == ["warming up"]


def test_a_log_file_holds_stderr_and_the_stdout_lines(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Child.start(python(LISTENS), timeout=20, log=log)
    child.stop(10)
    assert sorted(log.read_text().splitlines()) == sorted(
        ["starting", "warming up", "buyers listening on http://127.0.0.1:4711"])
    assert child.stderr == [] and "warming up" in child.tail()


def test_a_child_that_exits_first_is_reported_with_its_stderr() -> None:
    with pytest.raises(NotListening, match=r"(?s)exited with code 3 before listening:.*no config here"):
        Child.start(python("import sys; print('no config here', file=sys.stderr); sys.exit(3)"), timeout=20)


def test_a_silent_child_is_killed_after_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    with pytest.raises(NotListening, match="did not say where it listens within 3 s"):
        Child.start(python(code), timeout=3, name="silent")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stop_kills_a_child_that_ignores_sigterm() -> None:
    code = ("import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('listening on http://127.0.0.1:1', flush=True)\n"
            "time.sleep(60)\n")
    child = Child.start(python(code), timeout=20)
    assert child.stop(0.5) is None
    assert child.process.returncode == -signal.SIGKILL


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
