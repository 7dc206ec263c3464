"""Run ``pingpost serve`` as a real subprocess and talk to it.

``Served.start(config, *flags)`` writes the config to a file, starts
``python -m pingpost.cli serve --config FILE --port P`` in that directory (where its books
are kept unless a flag says otherwise) and waits for its ``listening on ...`` line; stderr is collected line by line as it comes
(``served.stderr``), so a test can read the structured logs while it runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from pingpost.launch import Child, free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: Where commands run: a serve given no --ledger keeps its books (pingpost-ledger.db) in its
#: working directory, never in the source tree.
SCRATCH = Path(tempfile.mkdtemp(prefix="pingpost-tests-"))


def write_config(directory: Path, config: dict[str, Any], name: str = "exchange.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(config))
    return path


async def run_cli(*args: str, timeout: float = 30, cwd: Path = SCRATCH,
                  env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m pingpost.cli ARGS`` to its end (in ``env``, or this process's
    environment); (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "pingpost.cli", *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Served:
    """One ``pingpost serve`` process (``pingpost.launch.Child``: its output read line by line)."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.process = child.process
        self.port = port
        self.stdout = child.stdout
        self.stderr = child.stderr

    @classmethod
    async def start(cls, directory: Path, config: dict[str, Any], *flags: str, ready_timeout: float = 20,
                    preexec_fn: Callable[[], None] | None = None) -> "Served":
        path = write_config(directory, config)
        port = free_port()
        child = await Child.started(
            [PYTHON, "-m", "pingpost.cli", "serve", "--config", str(path), "--port", str(port), *flags],
            timeout=ready_timeout, name="serve", cwd=directory, preexec_fn=preexec_fn)
        return cls(child, port)

    @property
    def listening(self) -> str:
        return self.child.listening

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.child.signal(sig)

    async def wait(self, timeout: float = 15) -> int:
        return await asyncio.to_thread(self.child.wait, timeout)

    async def kill(self) -> None:
        await asyncio.to_thread(self.child.kill)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines seen so far (every stderr line must be one)."""
        return [json.loads(line) for line in self.stderr if line.strip()]
