"""What ``pip install pingpost`` gives an operator: the release build, installed and run.

The tree's editable install hides packaging mistakes (it reads files straight from the
tree), so these tests build the sdist the way a release does, build the wheel from that
sdist (not from the tree), install it normally into a fresh virtualenv outside the tree,
and run the installed ``pingpost`` from a directory outside the tree against a real
redis-server. The build (two isolated build environments and the Cython compile) takes one to
three minutes, once per session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pingpost.launch import Child, NotListening
from tests.helpers_contract import parse_rfc3339_utc
from tests.redis_support import RedisServer

ROOT = Path(__file__).resolve().parent.parent
TREE_LUA = sorted(p.name for p in (ROOT / "engine" / "store" / "lua").glob("*.lua"))
TREE_UI = sorted(p.relative_to(ROOT / "engine" / "ui").as_posix() for p in (ROOT / "engine" / "ui").glob("*/*")
                 if p.parent.name in ("templates", "static"))
TREE_TESTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py"))

#: The quick test modules run from the unpacked sdist against the installed wheel: the
#: targeting rules on the extension the wheel compiled, and the sdist's example config.
SDIST_TEST_MODULES = ("tests/test_targeting.py", "tests/test_examples.py")
#: What those modules (and the conftest every module loads) need of the test extras; the
#: rest, load tools and fuzzers, would only slow the install down.
SDIST_TEST_RUNNER = {"pytest", "pytest-asyncio", "pytest-timeout"}

#: The README's seller session.
PING = {"vertical": "auto_insurance", "zip": "90210", "state": "CA", "quality_score": 80,
        "attributes": {"vehicle_year": 2019}}
LEAD = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "(415) 555-0134",
        "zip": "90210"}
SELLER_KEY = "acme-live-key"

pytestmark = pytest.mark.timeout(900)


def clean_env() -> dict[str, str]:
    """The environment without anything that would point Python back at this tree."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(command: list[str | Path], cwd: Path, timeout: float = 600, stderr_too: bool = False) -> str:
    """Run to the end; fail with the command's output unless it exits 0. Returns stdout
    (and stderr after it with ``stderr_too``)."""
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr if stderr_too else done.stdout


@dataclass(frozen=True)
class Installed:
    sdist: Path
    build_log: str
    unpacked: Path  # the sdist as a user unpacks it
    venv: Path
    outside: Path   # a working directory outside the tree

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def pingpost(self) -> Path:
        return self.venv / "bin" / "pingpost"

    @property
    def site_packages(self) -> Path:
        return self.venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    dist = base / "dist"
    # With no --sdist/--wheel, build makes the sdist and then the wheel from that sdist.
    log = run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=base, stderr_too=True)
    (sdist,) = dist.glob("pingpost-*.tar.gz")
    (wheel,) = dist.glob("pingpost-*.whl")
    with tarfile.open(sdist) as archive:
        archive.extractall(base / "unpacked", filter="data")
    (unpacked,) = (base / "unpacked").iterdir()
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=base)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], cwd=base)
    outside = base / "work"
    outside.mkdir()
    return Installed(sdist, log, unpacked, venv, outside)


@pytest.fixture
def processes() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for process in started:
        process.kill()


def start(processes: list[Child], command: list[str | Path], cwd: Path, pattern: str) -> tuple[Child, str]:
    """Run ``command`` until it says where it listens: the process, and the first group of
    ``pattern``, which that line must match whole; fails with the command's stderr otherwise."""
    try:
        process = Child.start([str(c) for c in command], timeout=60, cwd=cwd, env=clean_env())
    except NotListening as exc:
        pytest.fail(str(exc)[-4000:])
    processes.append(process)
    found = re.fullmatch(pattern, process.listening)
    assert found, process.listening
    return process, found.group(1)


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as a seller, or GET without one."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST", headers={
                                         "Authorization": f"Bearer {SELLER_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


# The sdist and the wheel ------------------------------------------------------------------


def test_the_wheel_is_built_from_the_sdist(installed: Installed) -> None:
    assert re.search(r"^\* Building wheel from sdist", installed.build_log, re.M), installed.build_log


def test_the_sdist_carries_the_cython_source_the_data_files_and_the_tests(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        names = {name.removeprefix(top + "/") for name in archive.getnames()}
    assert "ext/_targeting.pyx" in names
    assert "ext/_targeting.c" not in names  # the wheel is built from the .pyx, never from a local build's C
    assert {"engine/py.typed", "engine/_targeting.pyi", "examples/exchange.toml", "pyproject.toml", "setup.py",
            "MANIFEST.in", "README.md", "LICENSE"} <= names
    assert {f"engine/store/lua/{name}" for name in TREE_LUA} <= names
    assert "open_post.lua" in TREE_LUA
    assert {f"engine/ui/{name}" for name in TREE_UI} <= names
    assert {"templates/base.html", "static/dashboard.css", "static/dashboard.js"} <= set(TREE_UI)
    # Every test module and helper (redis_support, helpers_*, conftest, support/), so the sdist's tests run.
    assert set(TREE_TESTS) <= names
    assert {"tests/redis_support.py", "tests/conftest.py", "tests/helpers_process.py", "tests/support/__init__.py",
            "tests/support/buyers.py", "tests/support/exchange.py", "tests/support/clock.py"} <= names


def test_the_wheel_installs_pingpost_with_its_data_and_no_engine_package(installed: Installed) -> None:
    package = installed.site_packages / "pingpost"
    assert sorted(p.name for p in (package / "store" / "lua").glob("*.lua")) == TREE_LUA
    assert (package / "py.typed").is_file() and (package / "_targeting.pyi").is_file()
    assert sorted(p.relative_to(package / "ui").as_posix() for p in (package / "ui").glob("*/*")
                  if p.parent.name in ("templates", "static")) == TREE_UI
    assert not (installed.site_packages / "engine").exists()
    (dist_info,) = installed.site_packages.glob("pingpost-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["pingpost"]
    probe = ("import importlib.util, json, pingpost, pingpost._targeting as compiled\n"
             "from pingpost import targeting\n"
             "print(json.dumps({'package': pingpost.__file__, 'compiled': compiled.__file__,\n"
             "                  'engine': importlib.util.find_spec('engine') is not None,\n"
             "                  'compiled_rank': isinstance(getattr(targeting.rank, '__self__', None), compiled.Ranker)}))\n")
    found = json.loads(run([installed.python, "-c", probe], cwd=installed.outside))
    assert Path(found["package"]).parent == package
    assert Path(found["compiled"]).parent == package and found["compiled"].endswith(".so")
    assert found["engine"] is False
    assert found["compiled_rank"] is True


# The installed command --------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_the_installed_serve_on_redis_sells_a_lead(installed: Installed, redis_server: RedisServer,
                                                   processes: list[Child], workers: int) -> None:
    """The example config, run by the installed command from outside the tree, with simulated
    buyers that always bid and accept; a ping gets a price and its post sells."""
    redis_server.flush()
    _, buyers_url = start(processes, [installed.pingpost, "buyers", "--port", "0", "--seed", "1", "--no-bid-rate",
                                      "0", "--reject-rate", "0"], installed.outside,
                          r"buyers listening on (http://127\.0\.0\.1:\d+)")
    example = (installed.unpacked / "examples" / "exchange.toml").read_text()
    assert "http://127.0.0.1:9100/" in example
    config = installed.outside / f"exchange-{workers}.toml"
    config.write_text(example.replace("http://127.0.0.1:9100", buyers_url))

    serve, url = start(processes, [installed.pingpost, "serve", "--redis", redis_server.url, "--config", config,
                                   "--port", "0", "--workers", str(workers)], installed.outside,
                       r"listening on (http://127\.0\.0\.1:\d+)")

    status, answer = call(url + "/v1/ping", PING)
    assert status == 200, answer
    assert set(answer) == {"ping_id", "status", "price", "expires_at", "auction_ms"}, answer
    assert answer["status"] == "bid" and isinstance(answer["ping_id"], str) and answer["ping_id"]
    assert isinstance(answer["price"], (int, float)) and answer["price"] > 0
    assert isinstance(answer["auction_ms"], (int, float)) and answer["auction_ms"] >= 0
    parse_rfc3339_utc(answer["expires_at"])

    status, sold = call(url + "/v1/post", {"ping_id": answer["ping_id"], "lead": LEAD})
    assert status == 200, sold
    assert set(sold) == {"ping_id", "status", "price", "lead_id", "attempts"}, sold
    assert (sold["ping_id"], sold["status"], sold["price"], sold["attempts"]) == (
        answer["ping_id"], "sold", answer["price"], 1)
    status, booked = call(url + f"/v1/leads/{sold['lead_id']}")  # in the books, in the working directory
    assert status == 200 and (booked["ping_id"], booked["status"], booked["price"]) == (
        answer["ping_id"], "sold", answer["price"]), booked
    assert (installed.outside / "pingpost-ledger.db").is_file()

    with urllib.request.urlopen(url + "/ui/login", timeout=30) as response:  # the dashboard, from the wheel's files
        page = response.read().decode()
    assert response.status == 200 and "<form" in page
    stylesheet = re.search(r'href="(/ui/static/dashboard\.css\?v=\w+)"', page)
    assert stylesheet, page
    with urllib.request.urlopen(url + stylesheet.group(1), timeout=30) as response:
        assert response.status == 200 and b"--accent" in response.read()

    code = serve.stop(30)
    stderr = "\n".join(serve.stderr)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_the_sdist_tests_pass_against_the_installed_wheel(installed: Installed) -> None:
    """The sdist's own tests, run from the unpacked sdist, import the installed package."""
    extras = tomllib.loads((installed.unpacked / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    runner = [r for r in extras["test"] if re.split(r"[<>=!~\[ ]", r)[0] in SDIST_TEST_RUNNER]
    assert len(runner) == len(SDIST_TEST_RUNNER), runner
    run([installed.python, "-m", "pip", "install", "--quiet", *runner], cwd=installed.outside)
    imported = run([installed.python, "-c", "import pingpost; print(pingpost.__file__)"], cwd=installed.unpacked)
    assert Path(imported.strip()).is_relative_to(installed.site_packages)
    out = run([installed.python, "-m", "pytest", "-q", *SDIST_TEST_MODULES], cwd=installed.unpacked)
    assert re.search(r"\d+ passed", out) and "failed" not in out, out


# A package that lost its data files --------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_package_without_its_lua_scripts_says_so_in_one_line(tmp_path: Path, redis_server: RedisServer,
                                                               workers: int) -> None:
    """What an install that left out the package data did: the message names the missing
    script, not an option the operator never gave, and no traceback, with or without workers."""
    broken = tmp_path / "site"
    shutil.copytree(ROOT / "engine", broken / "pingpost", ignore=shutil.ignore_patterns("lua", "__pycache__"))
    env = {**clean_env(), "PYTHONPATH": str(broken)}
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", "serve", "--config", str(ROOT / "examples" /
                           "exchange.toml"), "--redis", redis_server.url, "--port", "0", "--workers", str(workers)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pingpost: cannot load the Redis store: "), lines[0]
    assert str(broken / "pingpost" / "store" / "lua" / "open_post.lua") in lines[0]  # the copy is what ran
    assert "Lua scripts" in lines[0] and "--ca-file" not in lines[0]
    assert "listening on" not in done.stdout
