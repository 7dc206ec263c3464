"""The type and lint gate: mypy (strict, on the package) and ruff (the package, tests and
benchmarks) pass, so a change that breaks either fails the suite, in CI too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [["mypy"], ["ruff", "check", "--no-cache"]], ids=["mypy", "ruff"])
def test_gate_passes(command: list[str]) -> None:
    done = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
