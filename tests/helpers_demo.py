"""``pingpost demo`` as its user sees it: the command, what its output says, and a run left up.

The demo prints the dashboard's address and a table of sign-ins; a test reads them from its
output the way a person copies them from the terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

ENV = {**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}
#: A sign-in row of the demo's table: role, name, password.
SIGN_IN = re.compile(r"^│ (operator|seller:\S+|buyer:\S+)\s+│ (\S+)\s+│ (\S+)\s+│$", re.M)
DASHBOARD = re.compile(r"^dashboard: (http://127\.0\.0\.1:\d+)/ui/$", re.M)
SOLD = re.compile(r"│ sold\s+│\s+(\d+) │")


def start(*options: str) -> subprocess.Popen[str]:
    """``pingpost demo OPTIONS`` left up (no ``--exit``), its stdout and stderr in one pipe."""
    return subprocess.Popen([sys.executable, "-m", "pingpost.cli", "demo", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def until_up(process: subprocess.Popen[str], deadline_s: float = 90) -> str:
    """What the demo printed up to its "press Ctrl-C" line: its traffic sent and summed up,
    the dashboard and the sign-ins printed, the exchange still up."""
    assert process.stdout is not None
    out = ""
    deadline = time.monotonic() + deadline_s
    while "press Ctrl-C" not in out:
        assert time.monotonic() < deadline and process.poll() is None, out
        out += process.stdout.readline()
    return out
