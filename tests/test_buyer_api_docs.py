"""docs/buyer-api.md's session, run as written against the demo it starts from: every shell
block after the demo's start, in one bash, against ``pingpost demo`` on a free port; then
what it printed, and the books through the API, say the whole return-and-outcome loop ran."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pingpost.launch import free_port

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}


def session() -> tuple[str, str]:
    """The demo's start (the first block) and the rest of the session's shell blocks, joined."""
    text = (ROOT / "docs" / "buyer-api.md").read_text().split("## A session from the demo", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return blocks[0], "".join(blocks[1:])


def api(url: str, key: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def test_the_documented_session_runs_against_the_demo() -> None:
    start, commands = session()
    assert start.splitlines() == ["make setup", ".venv/bin/pingpost demo --port 8080"]
    port = free_port()
    with subprocess.Popen([sys.executable, "-m", "pingpost.cli", "demo", "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV) as demo:
        assert demo.stdout is not None
        out = ""
        try:
            deadline = time.monotonic() + 120
            while "press Ctrl-C" not in out:
                assert time.monotonic() < deadline and demo.poll() is None, out
                out += demo.stdout.readline()
            assert "demo-safeauto-key" in out and "demo-ops-key" in out, out
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands.replace("127.0.0.1:8080",
                                                                                     f"127.0.0.1:{port}")],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            printed = done.stdout
            base = f"http://127.0.0.1:{port}"
            returns = api(f"{base}/v1/returns", "demo-ops-key")["returns"]
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                assert demo.wait(30) == 0, out
            finally:
                if demo.poll() is None:
                    demo.kill()
    answers = [json.loads(line) for line in printed.splitlines() if line.startswith('{"')]
    filed = [a for a in answers if "return_id" in a]
    assert len(returns) == 10 and {r["lead_id"] for r in returns} == {a["lead_id"] for a in filed}
    statuses = [a["status"] for a in filed[:10]]
    assert statuses[0] == "approved" and "pending" in statuses, statuses  # at once, until the month's 2%
    assert statuses == sorted(statuses), "approved first, then pending"
    assert filed[10] == filed[0], "asked again: the first return"
    refused = [a for a in answers if "error" in a]
    assert [a["error"]["code"] for a in refused] == ["validation_error", "forbidden"]
    approved, denied = filed[11], filed[12]
    assert (approved["status"], approved["decided_by"]) == ("approved", "ops")
    assert (denied["status"], denied["decision_note"]) == ("denied", "the number rings")
    assert {"outcome": "converted", "value": 250.0}.items() <= answers[-1].items()
    buyer, operator, seller = (ast.literal_eval(line) for line in printed.strip().splitlines()[-3:])
    assert buyer["returns"] == statuses.count("approved") + 1 and buyer["conversions"] == 1
    assert operator["returns"] == buyer["returns"] and operator["returned_amount"] > 0
    assert seller["returns"] >= 1
