"""The supervisor of N worker processes sharing one port.

Each worker is a plain ``pingpost serve`` process bound with SO_REUSEPORT, so the kernel
spreads connections across them and no worker depends on another. The supervisor only
starts them, restarts one that dies, passes SIGHUP on (config reload), and on SIGTERM
passes the signal on and waits for every worker to drain.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time

log = logging.getLogger("pingpost.workers")

#: A worker that dies sooner than this after starting is restarted after a pause, not at once.
RESTART_PAUSE_S = 1.0


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so that ``--port 0`` resolves to one port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_command(args: argparse.Namespace, port: int) -> list[str]:
    command = [sys.executable, "-m", "pingpost.cli", "serve", "--config", args.config, "--host", args.host,
               "--port", str(port), "--redis", args.redis, "--ledger", args.ledger, "--log-level", args.log_level,
               "--reuse-port"]
    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--ca-file", args.ca_file),
                        ("--ledger-journal", args.ledger_journal)):
        if value:
            command += [flag, value]
    return command


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.failed = False
        self.processes: dict[int, asyncio.subprocess.Process] = {}

    async def _worker(self, number: int, command: list[str], ready: asyncio.Future[str]) -> None:
        """Run worker ``number`` until the supervisor stops, restarting it when it dies."""
        while not self.stopping:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
            self.processes[number] = process
            if self.stopping:  # SIGTERM came while this worker was being started
                process.send_signal(signal.SIGTERM)
            assert process.stdout is not None
            async for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                if line.startswith("listening on "):
                    if not ready.done():  # announced once, by run(); a restarted worker's line is not repeated
                        ready.set_result(line)
                elif line:
                    print(line, flush=True)
            code = await process.wait()
            if self.stopping:
                # -SIGTERM: stopped before its handlers were in place, so with nothing in flight.
                self.failed |= code not in (0, -signal.SIGTERM)
                return
            if not ready.done():
                ready.set_exception(RuntimeError(f"worker {number} exited with code {code} before listening"))
                return
            log.warning("worker exited", extra={"event": {"event": "worker_exit", "worker": number, "code": code}})
            if time.monotonic() - started < RESTART_PAUSE_S:
                await asyncio.sleep(RESTART_PAUSE_S)

    def _reload_all(self) -> None:
        """SIGHUP: every worker reads the config again."""
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGHUP)

    def _stop_all(self) -> None:
        self.stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def run(self) -> int:
        args = self.args
        holder = reserve_port(args.host, args.port)
        command = worker_command(args, holder.getsockname()[1])
        loop = asyncio.get_running_loop()
        readies: list[asyncio.Future[str]] = [loop.create_future() for _ in range(args.workers)]
        tasks = [asyncio.create_task(self._worker(n, command, readies[n])) for n in range(args.workers)]
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_all)
        try:
            try:
                lines = await asyncio.gather(*readies)
            except RuntimeError as exc:
                print(f"pingpost: {exc}", file=sys.stderr)
                self._stop_all()
                await asyncio.gather(*tasks, return_exceptions=True)
                return 1
            print(lines[0], flush=True)
            await stop.wait()
            self._stop_all()
            await asyncio.gather(*tasks)
            return 1 if self.failed else 0
        finally:
            holder.close()
