"""Start a server as a child process and learn where it listens; find a free port.

Every server pingpost runs (``serve``, ``buyers``) prints one ``listening on URL`` line on
stdout once it accepts connections, with the port it bound, so ``--port 0`` lets the
kernel choose and two runs never race for a port. The demo, the benchmark and the tests
start their children here, the same way: a thread reads the child's stdout line by line
as it comes (so a chatty child never blocks on a full pipe, and a caller can wait for the
line without polling a file), and its stderr goes to a log file or is kept line by line.
"""

from __future__ import annotations

import asyncio
import re
import signal as signals
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

#: The whole line a server prints once it listens (``buyers listening on ...`` for the
#: simulated buyers); the group is the URL with the bound port.
LISTENING = re.compile(r"(?:\w+ )?listening on (\S+)")

#: How long a reader thread may still take to see the end of a stream its process closed;
#: longer only when a grandchild still holds the stream open.
_READER_JOIN_S = 2.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server that cannot be told ``--port 0``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NotListening(Exception):
    """The child ended, or did not say where it listens in time; the message ends with the
    last lines of its stderr."""


class Child:
    """One child process. ``stdout`` holds its stdout lines so far. Its stderr goes to
    ``log`` when one is given (the stdout lines are copied there too, so the file reads as
    the child's whole output); without a log, ``stderr`` holds its lines."""

    def __init__(self, command: Sequence[str], *, name: str | None = None, log: Path | None = None,
                 cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
                 start_new_session: bool = False, preexec_fn: Callable[[], None] | None = None) -> None:
        self.name = name or Path(command[0]).name
        self.log_path = log
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.url = ""
        self._log: IO[bytes] | None = log.open("ab") if log is not None else None
        self._log_lock = threading.Lock()  # the stdout reader writes to the log, _finish closes it
        self._said = threading.Event()  # set on the listening line, or when stdout ends without it
        self.process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=self._log or subprocess.PIPE, cwd=cwd,
            env=None if env is None else dict(env), start_new_session=start_new_session, preexec_fn=preexec_fn)
        assert self.process.stdout is not None
        self._readers = [threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True)]
        if self.process.stderr is not None:
            self._readers.append(threading.Thread(target=self._read_stderr, args=(self.process.stderr,), daemon=True))
        for reader in self._readers:
            reader.start()

    @classmethod
    def start(cls, command: Sequence[str], *, timeout: float, **options: Any) -> Child:
        """Start ``command`` and wait until it says where it listens; a child that ends first
        or stays silent past ``timeout`` seconds is killed and ``NotListening`` raised."""
        child = cls(command, **options)
        try:
            child.wait_listening(timeout)
        except BaseException:
            child.kill()
            raise
        return child

    @classmethod
    async def started(cls, command: Sequence[str], *, timeout: float, **options: Any) -> Child:
        """``start`` for a caller on an event loop, which goes on running meanwhile."""
        return await asyncio.to_thread(lambda: cls.start(command, timeout=timeout, **options))

    @property
    def listening(self) -> str:
        """The line that said where the child listens."""
        return next(line for line in self.stdout if LISTENING.fullmatch(line))

    def wait_listening(self, timeout: float) -> str:
        """The URL of the ``listening on`` line, once the child printed it."""
        if not self._said.wait(timeout):
            raise NotListening(f"{self.name} did not say where it listens within {timeout:g} s:\n{self.tail()}")
        if not self.url:
            try:
                ended = f"exited with code {self.process.wait(_READER_JOIN_S)}"
            except subprocess.TimeoutExpired:
                ended = "closed its stdout"
            self._join()  # its last stderr lines, which say why
            raise NotListening(f"{self.name} {ended} before listening:\n{self.tail()}")
        return self.url

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout.append(line)
            if self._log is not None:
                with self._log_lock:
                    if not self._log.closed:
                        self._log.write(raw)
                        self._log.flush()
            found = LISTENING.fullmatch(line)
            if found and not self.url:
                self.url = found.group(1)
                self._said.set()
        stream.close()
        self._said.set()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.stderr.append(raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    def tail(self, lines: int = 20) -> str:
        """The last lines of the child's stderr (of the log file, when there is one)."""
        if self.log_path is None:
            return "\n".join(self.stderr[-lines:])
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int = signals.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code, once the child ended and its output was read to the end;
        ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still runs after {timeout:g} s") from None
        self._finish()
        return code

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait: the exit code, or None when the child had to be killed after
        ``timeout`` seconds."""
        self.signal(signals.SIGTERM)
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._finish()

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(_READER_JOIN_S)

    def _finish(self) -> None:
        self._join()
        if self._log is not None:
            with self._log_lock:
                self._log.close()
