"""The ``pingpost`` commands refuse what they cannot do in one line and a non-zero exit.

An operator reads the line, not a traceback: every command that listens says the same
thing when its port is taken.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_process import SCRATCH

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "exchange.toml"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process already listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", [["serve", "--config", str(EXAMPLE)], ["buyers"]], ids=["serve", "buyers"])
def test_a_busy_port_is_one_clean_line_and_a_non_zero_exit(busy_port: int, command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", *command, "--port", str(busy_port)],
                          cwd=SCRATCH, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"pingpost( buyers)?: cannot listen on 127\.0\.0\.1:{busy_port}: .*address already in use",
                        lines[0]), lines[0]
    assert "listening on" not in done.stdout
