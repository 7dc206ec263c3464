"""The processes of a run: starting redis-server and the profiler, and reading what each
process spent (CPU seconds, RSS) from /proc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..launch import Child, NotListening, free_port
from .cpus import Layout
from .report import top_frames
from .scenarios import Scenario

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """A scenario cannot run (a process did not start); the others still do."""


def child(name: str, command: list[str], log: Path) -> Child:
    """A process of the run, logging to ``log``. In a session of its own, so a Ctrl-C on the
    terminal reaches only the bench, which then stops its children in order."""
    return Child(command, name=name, log=log, cwd=ROOT, start_new_session=True)


def start_listening(name: str, command: list[str], log: Path, timeout: float) -> Child:
    """``child``, once it says where it listens (``Child.url``)."""
    try:
        return Child.start(command, timeout=timeout, name=name, log=log, cwd=ROOT, start_new_session=True)
    except NotListening as exc:
        raise BenchError(str(exc)) from None


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor and its workers when --workers > 1)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*") if Path(f"/proc/{current}").exists() else ():
            try:
                todo += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def start_redis(layout: Layout, workdir: Path) -> tuple[Child, str]:
    port = free_port()
    proc = child("redis-server", [*layout.prefix("others"), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"], workdir / "redis.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.stop()
    raise BenchError("redis-server did not answer PING within 10 s")


def start_py_spy(args: argparse.Namespace, s: Scenario, pid: int, layout: Layout) -> subprocess.Popen[bytes] | None:
    """py-spy on one exchange process (a worker when there are several) for the measured window."""
    if not args.py_spy:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.py_spy)
    out.mkdir(parents=True, exist_ok=True)
    command = [*layout.prefix("others"), spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
               "--duration", str(max(1, int(args.duration))), "-o", str(out / f"{s.name}.txt")]
    # --nonblocking does not pause the exchange per sample, but cannot read native frames
    command.append("--native" if args.py_spy_native else "--nonblocking")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_py_spy(spy: subprocess.Popen[bytes], args: argparse.Namespace, s: Scenario) -> None:
    _, err = spy.communicate()
    path = Path(args.py_spy) / f"{s.name}.txt"
    if spy.returncode != 0 or not path.exists():
        print(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-400:]}", file=sys.stderr)
        return
    (Path(args.py_spy) / f"{s.name}-top.txt").write_text(top_frames(path.read_text()))
