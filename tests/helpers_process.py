"""Run ``pingpost serve`` as a real subprocess and talk to it.

``Served.start(config, *flags)`` writes the config to a file, starts
``python -m pingpost.cli serve --config FILE --port P`` and waits for its
``listening on ...`` line; stderr is collected line by line as it comes
(``served.stderr``), so a test can read the structured logs while it runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, config: dict[str, Any], name: str = "exchange.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(config))
    return path


async def run_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run ``python -m pingpost.cli ARGS`` to its end; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "pingpost.cli", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Served:
    """One ``pingpost serve`` process."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [asyncio.ensure_future(self._collect(process.stderr, self.stderr))]

    @classmethod
    async def start(cls, directory: Path, config: dict[str, Any], *flags: str, ready_timeout: float = 20,
                    preexec_fn: Callable[[], None] | None = None) -> "Served":
        path = write_config(directory, config)
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "pingpost.cli", "serve", "--config", str(path), "--port", str(port), *flags,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=preexec_fn)
        served = cls(process, port)
        try:
            await asyncio.wait_for(served._until_listening(), ready_timeout)
        except BaseException:
            await served.kill()
            raise
        return served

    @property
    def listening(self) -> str:
        return next(line for line in self.stdout if line.startswith("listening on "))

    async def _until_listening(self) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"serve exited before listening: {''.join(self.stderr)}")
            self.stdout.append(line.decode().rstrip("\n"))
            if self.stdout[-1].startswith("listening on "):
                self._readers.append(asyncio.ensure_future(self._collect(self.process.stdout, self.stdout)))
                return

    @staticmethod
    async def _collect(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode().rstrip("\n"))

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 15) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines seen so far (every stderr line must be one)."""
        return [json.loads(line) for line in self.stderr if line.strip()]
