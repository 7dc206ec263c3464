"""Throwaway PostgreSQL servers for tests, started from the machine's own binaries.

Each server is a fresh ``initdb`` in a temp dir, listening on a free 127.0.0.1 port (and a
socket in its own folder), so tests never touch a PostgreSQL already running on the
machine. PostgreSQL refuses to run as root: as root the server runs as an unprivileged user
(``nobody``, or a ``pingpost-test`` user made for it), as anyone else as that user.
Binaries are found with ``pg_config --bindir``, then /usr/lib/postgresql/*/bin (newest
first), then PATH; scripts/ensure-postgres installs them where missing.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import asyncpg
import pytest

from tests.redis_support import free_port

INSTALL_HINT = "PostgreSQL server binaries not found; install them with: scripts/ensure-postgres"
USER = "pingpost"
_UNPRIVILEGED = ("nobody", "pingpost-test")


def _version(folder: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in folder.parent.name.split("."))
    except ValueError:
        return (0,)


def bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if found:
            candidates.append(Path(found))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    pytest.fail(INSTALL_HINT, pytrace=False)


def server_user() -> pwd.struct_passwd | None:
    """Who the server runs as: None for the current user, an unprivileged one for root."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _UNPRIVILEGED[-1]],
                   check=True, capture_output=True)
    return pwd.getpwnam(_UNPRIVILEGED[-1])


@dataclass
class PostgresServer:
    """One server. ``durable=False`` (tests) turns fsync off: the tests kill the client, not
    the server, so its own crash safety is not under test and databases are made faster."""

    durable: bool = False
    port: int = field(default_factory=free_port)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pp-pg-")))
    running: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        user = server_user()
        command = [str(bindir() / args[0]), *args[1:]]
        if user is not None:
            command = ["runuser", "-u", user.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> "PostgresServer":
        user = server_user()
        if user is not None:
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--locale=C", "-E", "UTF8")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-t", "60", "-o", options,
                  "start")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def remove(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def sql(self, statement: str) -> None:
        """Run one statement on the server's own database. Usable from inside a running event
        loop (a sync fixture of an async test): asyncpg runs on a loop of its own thread."""
        async def run() -> None:
            conn = await asyncpg.connect(self.url())
            try:
                await conn.execute(statement, timeout=30)
            finally:
                await conn.close()
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, run()).result()

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the session; each test makes its own database on it."""
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for one test."""
    name = "t_" + os.urandom(6).hex()
    yield postgres_server.create_database(name)
    postgres_server.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
