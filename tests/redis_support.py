"""Throwaway redis-server processes for tests: one server, or a three-master cluster.

Tests run against the real server (never a fake), each on free 127.0.0.1 ports in a temp
dir with persistence off, so they neither need nor touch a Redis already on the machine.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pingpost.launch import free_port

INSTALL_HINT = "redis-server is not installed; install it with: apt-get install -y redis-server"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH. {INSTALL_HINT}", pytrace=False)
    return path


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 40000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


def cli(port: int, *args: str) -> str:
    return subprocess.run([binary("redis-cli"), "-p", str(port), *args], check=True, capture_output=True,
                          text=True, timeout=10).stdout


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(check, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def keys_without_ttl(ports: list[int]) -> list[str]:
    """Every key on these servers that would live for ever."""
    return [key for port in ports for key in cli(port, "--scan").split()
            if cli(port, "PTTL", key).strip() == "-1"]


@dataclass
class RedisServer:
    """One redis-server; ``stop`` kills it like a crash, ``start`` again reuses the port."""

    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pp-redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: answers(self.port), f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        cli(self.port, "FLUSHALL")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class RedisClusterServers:
    """Three masters, no replicas, every slot covered."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> "RedisClusterServers":
        for _ in range(3):
            node = RedisServer(free_cluster_port())
            node.extra = ("--cluster-enabled", "yes", "--cluster-config-file", str(node.folder / "nodes.conf"),
                          "--cluster-node-timeout", "2000")
            self.nodes.append(node.start())
        cli(self.nodes[0].port, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas", "0", "--cluster-yes")
        wait_until(lambda: all("cluster_state:ok" in cli(n.port, "CLUSTER", "INFO") for n in self.nodes),
                   "cluster_state:ok")
        return self

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()


@pytest.fixture(scope="session")
def redis_server():
    """One server for the session; a test that needs it empty calls ``flush()``."""
    server = RedisServer().start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def redis_cluster():
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.remove()
