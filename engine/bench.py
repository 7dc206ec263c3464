"""Measure the exchange: ``pingpost bench [--scenario NAME ...] [--mode closed|open]``.

For each scenario it writes a config (TOML) and a buyer profile into a temp dir, starts the
simulated buyers and the exchange as subprocesses pinned with ``taskset`` (the exchange on
its own core, buyers and this load generator on the other when there are two), waits for
``listening on``, warms up, then drives seller traffic and measures every request:

* ``closed`` mode: ``--concurrency`` sellers send back to back (maximum throughput);
* ``open`` mode: requests leave at a fixed ``--rate``, and latency is measured from the
  *intended* send time, so a slow answer delays nobody's clock (no coordinated omission).

Reported per scenario: pings/s, seller-side latency p50/p95/p99/max, the exchange's
overhead (seller latency minus the buyers' fixed, jitter-free latency), the auction time
the exchange itself reports, errors, exchange CPU per ping, RSS, and the CPU share of the
load generator and buyers (so a saturated load generator is visible, not hidden).
A rich table is printed; ``--json FILE`` writes the figures, ``--compare FILE`` prints
ratios against an earlier file. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from . import http1
from .sim.traffic import Generator

API_KEY = "bench-live-key-0001"
VERTICAL = "auto_insurance"
#: every buyer answers pings and posts in exactly this long (jitter 0), so overhead = latency - this
BUYER_MS = 10.0
TICKS = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    http: int                 #: HTTP campaigns that pass the filters (all get pinged)
    filtered: int = 0         #: campaigns of the same vertical whose filters fail every bench ping
    post_share: float = 0.0   #: share of bid pings the seller then posts
    reject_rate: float = 0.0  #: share of posts a buyer rejects (the cascade moves on)


SCENARIOS = {s.name: s for s in (
    Scenario("5-http", "5 HTTP campaigns, buyers answer in 10 ms", http=5),
    Scenario("50-http", "50 HTTP campaigns, buyers answer in 10 ms", http=50),
    Scenario("10k-campaigns", "10,000 campaigns, 20 pass the filters", http=20, filtered=9_980),
    Scenario("ping-post", "5 HTTP campaigns; 30% of pings posted, buyers reject 20% of posts",
             http=5, post_share=0.3, reject_rate=0.2),
)}

#: metric -> True when higher is better (for --compare); the keys every result carries
METRICS: dict[str, bool] = {
    "pings_per_s": True, "posts_per_s": True,
    "latency_p50_ms": False, "latency_p95_ms": False, "latency_p99_ms": False, "latency_max_ms": False,
    "overhead_p50_ms": False, "overhead_p95_ms": False, "overhead_p99_ms": False, "overhead_max_ms": False,
    "auction_p50_ms": False, "auction_p99_ms": False, "post_p50_ms": False, "post_p99_ms": False,
    "errors": False, "cpu_us_per_ping": False, "pings_per_core_s": True, "exchange_cpu": False, "loadgen_cpu": False,
    "buyers_cpu": False, "redis_cpu": False, "rss_mb": False,
}


# Arguments -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"],
                        help="scenario to run, repeatable, or 'all' (default: 5-http)")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed",
                        help="closed: max throughput at --concurrency; open: fixed --rate (default: closed)")
    parser.add_argument("--rate", type=float, default=2000.0, help="open loop: pings per second offered (default: 2000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run (default: 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of unmeasured load first (default: 2, "
                        "or a quarter of --duration when shorter)")
    parser.add_argument("--concurrency", type=int, default=64, help="closed loop: requests in flight (default: 64)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario, each on fresh processes; the "
                        "table shows the median and the spread (default: 1)")
    parser.add_argument("--workers", type=int, default=1, help="exchange worker processes (above 1 needs redis)")
    parser.add_argument("--store", choices=["memory", "redis"], default="memory",
                        help="memory, or redis: a throwaway redis-server on a free port (default: memory)")
    parser.add_argument("--exchange-log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="the exchange's --log-level; its log goes to a file in the work dir (default: info)")
    parser.add_argument("--cpus", default="auto", metavar="EXCHANGE/OTHERS",
                        help="taskset CPU lists, e.g. '0/1' (exchange on 0; buyers, redis and the load "
                             "generator on 1) or 'none' to not pin (default: auto = '0/1' on 2+ cores)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--compare", metavar="FILE", help="print ratios against an earlier --json file")
    parser.add_argument("--workdir", metavar="DIR", help="keep configs and logs here (default: a temp dir, removed)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the seller traffic and buyer answers")
    parser.add_argument("--py-spy", metavar="DIR", dest="py_spy",
                        help="profile the exchange with py-spy during the measured window: DIR/<scenario>.txt "
                             "(collapsed stacks) and DIR/<scenario>-top.txt (top frames, self and total)")
    parser.add_argument("--py-spy-native", action="store_true", help="with --py-spy: include native frames")


def run(args: argparse.Namespace) -> int:
    names = args.scenario or ["5-http"]
    scenarios = list(SCENARIOS) if "all" in names else list(dict.fromkeys(names))
    if args.workers < 1:
        print("pingpost bench: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and args.store != "redis":
        print("pingpost bench: --workers above 1 needs --store redis", file=sys.stderr)
        return 2
    if args.store == "redis" and shutil.which("redis-server") is None:
        print("pingpost bench: --store redis needs redis-server on PATH", file=sys.stderr)
        return 2
    if args.mode == "open" and args.rate <= 0:
        print("pingpost bench: --rate must be above 0", file=sys.stderr)
        return 2
    try:
        layout = Layout.of(args.cpus)
    except ValueError as exc:
        print(f"pingpost bench: --cpus: {exc}", file=sys.stderr)
        return 2
    previous = None
    if args.compare:
        try:
            previous = msgspec.json.decode(Path(args.compare).read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            print(f"pingpost bench: cannot read {args.compare}: {exc}", file=sys.stderr)
            return 2
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 180)
    console.print(f"[bold]pingpost bench[/]: {layout.describe()}")
    report: dict[str, Any] = {
        "pingpost_bench": 1, "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "layout": {"exchange_cpus": layout.exchange, "other_cpus": layout.others},
        "settings": {"mode": args.mode, "rate": args.rate if args.mode == "open" else None,
                     "duration_s": args.duration, "concurrency": args.concurrency, "workers": args.workers,
                     "store": args.store, "repeat": args.repeat, "exchange_log_level": args.exchange_log_level,
                     "buyer_ms": BUYER_MS},
        "results": [],
    }
    failed = False
    layout.pin_self()
    for name in scenarios:
        runs = []
        for number in range(args.repeat):
            console.print(f"[dim]{name}: run {number + 1}/{args.repeat} ({args.mode}"
                          f"{f' at {args.rate:g}/s' if args.mode == 'open' else f', {args.concurrency} in flight'}"
                          f", {args.duration:g} s) ...[/]")
            try:
                runs.append(run_scenario(SCENARIOS[name], args, layout))
            except BenchError as exc:
                console.print(f"[red]{name}: {exc}[/]")
                failed = True
                break
        if runs:
            report["results"].append(summarize(name, args, runs))
    if report["results"]:
        console.print(table(report))
        for result in report["results"]:
            for warning in result.get("warnings", []):
                console.print(f"[yellow]{result['scenario']}: {warning}[/]")
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"wrote {args.json}")
    if previous is not None:
        console.print(compare_table(report, previous, args.compare))
    return 1 if failed or not report["results"] else 0


class BenchError(Exception):
    pass


# Machine and CPU layout --------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "commit": _git_commit()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent.parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Layout:
    exchange: str | None  #: taskset CPU list of the exchange (None: not pinned)
    others: str | None    #: buyers, redis-server and this process

    @classmethod
    def of(cls, spec: str) -> "Layout":
        if spec == "none" or shutil.which("taskset") is None:
            return cls(None, None)
        if spec == "auto":
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) >= 2:
                return cls(str(cpus[0]), ",".join(map(str, cpus[1:])))
            return cls(str(cpus[0]), str(cpus[0]))
        exchange, sep, others = spec.partition("/")
        if not sep or not exchange or not others:
            raise ValueError("expected EXCHANGE/OTHERS CPU lists, e.g. 0/1, 'auto' or 'none'")
        for part in (exchange, others):
            _cpu_set(part)
        return cls(exchange, others)

    def describe(self) -> str:
        if self.exchange is None:
            return "processes not pinned (no taskset, or --cpus none): figures mix everyone's CPU"
        if self.exchange == self.others:
            return f"one core: exchange, buyers and load generator all on CPU {self.exchange} (figures are pessimistic)"
        return f"exchange on CPU {self.exchange}; simulated buyers, redis and the load generator on CPU {self.others}"

    def prefix(self, which: str) -> list[str]:
        cpus = self.exchange if which == "exchange" else self.others
        return [] if cpus is None else ["taskset", "-c", cpus]

    def pin_self(self) -> None:
        if self.others is not None:
            os.sched_setaffinity(0, _cpu_set(self.others))


def _cpu_set(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {spec!r}")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# /proc readings ----------------------------------------------------------------------------


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Scenario files ------------------------------------------------------------------------------


def toml(value: Any) -> str:
    """Just enough TOML for the generated files: scalars, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def toml_document(tables: dict[str, dict[str, Any]], arrays: dict[str, list[dict[str, Any]]]) -> str:
    lines: list[str] = []
    for name, table_ in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml(v)}" for k, v in table_.items()]
        lines.append("")
    for name, items in arrays.items():
        for item in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {toml(v)}" for k, v in item.items()]
            lines.append("")
    return "\n".join(lines)


def scenario_config(s: Scenario, buyers_url: str) -> str:
    """The exchange's config: one seller, HTTP campaigns pointing at the simulator.

    Filtered campaigns fail every bench ping in one of three ways (the bench pings come
    from 15 mainland places, never Hawaii): a state, a zip prefix or a source filter."""
    failing = ({"states": ["HI"]}, {"zip_prefixes": ["967", "968"]}, {"sources": ["nowhere"]})
    campaigns = []
    for n in range(s.http + s.filtered):
        cid = f"c{n:05d}"
        campaign = {"id": cid, "buyer": f"b{n // 100:03d}", "vertical": VERTICAL,
                    "ping_url": f"{buyers_url}/{cid}/ping", "post_url": f"{buyers_url}/{cid}/post",
                    "timeout_ms": 500, "post_timeout_ms": 3000}
        if n >= s.http:
            campaign["filters"] = failing[n % 3]
        campaigns.append(campaign)
    buyers = [{"id": f"b{n:03d}"} for n in range((s.http + s.filtered + 99) // 100)]
    return toml_document(
        {"exchange": {"auction_timeout_ms": 1000, "post_timeout_ms": 10000, "max_buyers_per_ping": 50,
                      "max_inflight": 10000}},
        {"sellers": [{"id": "bench", "api_keys": [API_KEY]}], "buyers": buyers, "campaigns": campaigns})


def scenario_profile(s: Scenario) -> str:
    return toml_document({"default": {"latency_ms": BUYER_MS, "jitter_ms": 0.0, "post_latency_ms": BUYER_MS,
                                      "no_bid_rate": 0.0, "reject_rate": s.reject_rate,
                                      "bid_min": 1.0, "bid_max": 20.0}}, {})


# Processes -----------------------------------------------------------------------------------


class Proc:
    """A pinned subprocess whose stdout is read until its ready line, stderr to a file."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log,
                                        cwd=Path(__file__).resolve().parent.parent, start_new_session=True)

    def wait_for(self, marker: str, timeout: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.process.stdout.fileno(), False)
        buffered = b""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with code {self.process.returncode} before listening:\n"
                                 + self.tail())
            chunk = self.process.stdout.read()
            if chunk:
                buffered += chunk
                for line in buffered.decode(errors="replace").splitlines():
                    if marker in line:
                        return line[line.index(marker) + len(marker):].strip()
            time.sleep(0.02)
        raise BenchError(f"{self.name} did not print {marker!r} within {timeout:g} s:\n" + self.tail())

    def tail(self) -> str:
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def start_redis(layout: Layout, workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc("redis-server", [*layout.prefix("others"), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
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


def run_scenario(s: Scenario, args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pingpost-bench-")) / s.name
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[Proc] = []
    try:
        (workdir / "profile.toml").write_text(scenario_profile(s))
        python = [sys.executable, "-m", "pingpost.cli"]
        buyers = Proc("buyers", [*layout.prefix("others"), *python, "buyers", "--port", "0", "--profile",
                                 str(workdir / "profile.toml"), "--seed", str(args.seed), "--log-level", "warning"],
                      workdir / "buyers.log")
        procs.append(buyers)
        buyers_url = buyers.wait_for("buyers listening on", 30)
        (workdir / "config.toml").write_text(scenario_config(s, buyers_url))
        serve = [*python, "serve", "--config", str(workdir / "config.toml"), "--port", "0",
                 "--workers", str(args.workers), "--log-level", args.exchange_log_level]
        redis = None
        if args.store == "redis":
            redis, url = start_redis(layout, workdir)
            procs.append(redis)
            serve += ["--redis", url]
        exchange = Proc("exchange", [*layout.prefix("exchange"), *serve], workdir / "exchange.log")
        procs.append(exchange)
        base_url = exchange.wait_for("listening on", 60)
        result = asyncio.run(drive(s, args, layout, base_url, exchange.process.pid, buyers.process.pid,
                                   redis.process.pid if redis else None))
        stopped = exchange.stop()
        if stopped != 0:
            result.setdefault("warnings", []).append(f"the exchange exited with code {stopped} on SIGTERM")
        return result
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not keep:
            shutil.rmtree(workdir.parent if args.workdir is None else workdir, ignore_errors=True)


# Load generator ------------------------------------------------------------------------------


class PingAnswer(msgspec.Struct):
    status: str = ""
    ping_id: str | None = None
    auction_ms: float | None = None


class Load:
    """The seller side: pre-encoded pings over the lean keep-alive client, and what came back."""

    def __init__(self, s: Scenario, base_url: str, seed: int) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        self.ping_target = http1.Target.of(base_url + "/v1/ping", headers)
        self.post_target = http1.Target.of(base_url + "/v1/post", headers)
        self.client = http1.Client(None, 1 << 20)  # type: ignore[arg-type]  # plain http only
        generator = Generator(seed, verticals=[VERTICAL])
        self.samples = [generator.sample() for _ in range(1000)]
        self.pings = [msgspec.json.encode(x.ping) for x in self.samples]
        self.rng = random.Random(seed)
        self.scenario = s
        self.decode = msgspec.json.Decoder(PingAnswer).decode
        self.next = 0
        self.reset()

    def reset(self) -> None:
        self.latency: list[float] = []
        self.auction: list[float] = []
        self.post_latency: list[float] = []
        self.errors: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def _send(self, target: http1.Target, body: bytes) -> tuple[int, bytes] | None:
        """``(status, body)``, or None after counting the failure."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, _, answer = await self.client.post(target, body, retry=False)
                return status, answer
        except TimeoutError:
            self._error("client:timeout")
        except (OSError, http1.ProtocolError, http1.TooLarge) as exc:
            self._error(f"client:{type(exc).__name__}")
        return None

    async def one(self, intended: float) -> None:
        """A ping (and maybe its post); latency counts from ``intended``."""
        n = self.next = (self.next + 1) % len(self.pings)
        answer = await self._send(self.ping_target, self.pings[n])
        if answer is None:
            return
        self.latency.append((time.perf_counter() - intended) * 1000)
        status, body = answer
        if status != 200:
            self._error(f"http_{status}")
            return
        try:
            ping = self.decode(body)
        except msgspec.DecodeError:
            self._error("bad_json")
            return
        if ping.auction_ms is not None:
            self.auction.append(ping.auction_ms)
        self.outcomes[ping.status] = self.outcomes.get(ping.status, 0) + 1
        if ping.status != "bid" or not self.scenario.post_share or self.rng.random() >= self.scenario.post_share:
            return
        body = msgspec.json.encode({"ping_id": ping.ping_id, "lead": self.samples[n].lead})
        started = time.perf_counter()
        answer = await self._send(self.post_target, body)
        if answer is None:
            return
        self.post_latency.append((time.perf_counter() - started) * 1000)
        if answer[0] != 200:
            self._error(f"post_http_{answer[0]}")
            return
        status_ = msgspec.json.decode(answer[1]).get("status", "?")
        self.outcomes["post_" + status_] = self.outcomes.get("post_" + status_, 0) + 1

    async def closed(self, concurrency: int, seconds: float) -> float:
        end = time.perf_counter() + seconds

        async def seller() -> None:
            while time.perf_counter() < end:
                await self.one(time.perf_counter())

        started = time.perf_counter()
        await asyncio.gather(*(seller() for _ in range(concurrency)))
        return time.perf_counter() - started

    async def open(self, rate: float, seconds: float) -> float:
        """Send at ``rate``; each request starts at its intended time (or as soon after as
        this loop can), and its latency counts from the intended time."""
        total = max(1, int(rate * seconds))
        interval = 1 / rate
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        n = 0
        while n < total:
            now = time.perf_counter()
            due = started + n * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while n < total and started + n * interval <= now:
                task = asyncio.create_task(self.one(started + n * interval))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
        if tasks:
            await asyncio.gather(*tasks)
        return time.perf_counter() - started


async def drive(s: Scenario, args: argparse.Namespace, layout: Layout, base_url: str, exchange_pid: int,
                buyers_pid: int, redis_pid: int | None) -> dict[str, Any]:
    load = Load(s, base_url, args.seed)
    try:
        warmup = args.warmup if args.warmup is not None else min(2.0, args.duration / 4)
        if warmup > 0:
            await load.closed(min(args.concurrency, 64), warmup)
        load.reset()
        exchange_pids = process_tree(exchange_pid)
        before = (cpu_seconds(exchange_pids), cpu_seconds([buyers_pid]), cpu_seconds([os.getpid()]),
                  cpu_seconds([redis_pid]) if redis_pid else 0.0)
        spy = start_py_spy(args, s, exchange_pids[-1], layout)
        if args.mode == "closed":
            wall = await load.closed(args.concurrency, args.duration)
        else:
            wall = await load.open(args.rate, args.duration)
        after = (cpu_seconds(exchange_pids), cpu_seconds([buyers_pid]), cpu_seconds([os.getpid()]),
                 cpu_seconds([redis_pid]) if redis_pid else 0.0)
        rss = [rss_mb(pid) for pid in exchange_pids[1:]] if args.workers > 1 else [rss_mb(exchange_pid)]
        if spy is not None:
            await asyncio.get_running_loop().run_in_executor(None, finish_py_spy, spy, args, s)
    finally:
        load.client.close()
    pings = sum(v for k, v in load.outcomes.items() if not k.startswith("post_"))
    posts = sum(v for k, v in load.outcomes.items() if k.startswith("post_"))
    exchange_cpu = after[0] - before[0]
    latency = sorted(load.latency)
    result: dict[str, Any] = {
        "scenario": s.name, "mode": args.mode, "offered_rate": args.rate if args.mode == "open" else None,
        "concurrency": args.concurrency if args.mode == "closed" else None, "workers": args.workers,
        "store": args.store, "wall_s": round(wall, 3), "pings": pings, "posts": posts,
        "pings_per_s": round(pings / wall, 1), "posts_per_s": round(posts / wall, 1),
        "errors": sum(load.errors.values()), "error_kinds": dict(load.errors), "outcomes": dict(load.outcomes),
        "cpu_us_per_ping": round(exchange_cpu / pings * 1e6, 1) if pings else None,
        "pings_per_core_s": round(pings / exchange_cpu, 1) if pings and exchange_cpu else None,
        "exchange_cpu": round(exchange_cpu / wall, 3), "buyers_cpu": round((after[1] - before[1]) / wall, 3),
        "loadgen_cpu": round((after[2] - before[2]) / wall, 3),
        "redis_cpu": round((after[3] - before[3]) / wall, 3) if redis_pid else None,
        "rss_mb": round(max(rss), 1), "rss_mb_total": round(sum(rss), 1),
    }
    for p in (50, 95, 99, 100):
        key = "max" if p == 100 else f"p{p}"
        value = percentile(latency, p)
        result[f"latency_{key}_ms"] = _r(value)
        result[f"overhead_{key}_ms"] = _r(None if value is None else value - BUYER_MS)
    auction, posts_ms = sorted(load.auction), sorted(load.post_latency)
    result["auction_p50_ms"], result["auction_p99_ms"] = _r(percentile(auction, 50)), _r(percentile(auction, 99))
    result["post_p50_ms"], result["post_p99_ms"] = _r(percentile(posts_ms, 50)), _r(percentile(posts_ms, 99))
    warnings = []
    if result["loadgen_cpu"] + result["buyers_cpu"] > 0.9:
        warnings.append(f"load generator ({result['loadgen_cpu']:.0%}) and buyers ({result['buyers_cpu']:.0%}) "
                        "are near one core: they may be the bottleneck")
    if args.mode == "open" and pings + result["errors"] < 0.97 * args.rate * args.duration:
        warnings.append("fewer requests were sent than offered")
    result["warnings"] = warnings
    return result


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


def top_frames(collapsed: str, n: int = 30) -> str:
    """The functions with the most samples, on top of the stack (self) and anywhere in it (total)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = [f"{samples} samples"]
    for title, counts in (("self", own), ("total (self + callees)", total)):
        lines += ["", f"{title}:", f"{'%':>6}  frame"]
        for frame, count in sorted(counts.items(), key=lambda kv: -kv[1])[:n]:
            lines.append(f"{100 * count / max(samples, 1):6.1f}  {frame}")
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> str:
    """``handle (aiohttp/web_protocol.py:512)`` -> ``handle (aiohttp/web_protocol.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank over sorted values."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# Summaries, table, comparison ------------------------------------------------------------------


def summarize(name: str, args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every metric over the runs; ``spread`` holds min and max of each."""
    first = runs[0]
    summary: dict[str, Any] = {k: first[k] for k in ("scenario", "mode", "offered_rate", "concurrency",
                                                        "workers", "store")}
    summary["about"] = SCENARIOS[name].about
    summary["runs"] = len(runs)
    summary["spread"] = {}
    for key in [*METRICS, "rss_mb_total", "pings", "posts"]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            summary[key] = None
            continue
        summary[key] = round(statistics.median(values), 3)
        summary["spread"][key] = [min(values), max(values)]
    summary["error_kinds"] = _sum_dicts(r["error_kinds"] for r in runs)
    summary["outcomes"] = _sum_dicts(r["outcomes"] for r in runs)
    summary["warnings"] = sorted({w for r in runs for w in r.get("warnings", [])})
    summary["each_run"] = runs if len(runs) > 1 else []
    return summary


def _sum_dicts(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def _cell(result: dict[str, Any], key: str, fmt: str) -> str:
    value = result.get(key)
    if value is None:
        return "-"
    text = format(value, fmt)
    spread = result.get("spread", {}).get(key)
    if result.get("runs", 1) > 1 and spread and spread[0] != spread[1]:
        text += f" [dim]({format(spread[0], fmt)}–{format(spread[1], fmt)})[/]"
    return text


def table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    s = report["settings"]
    how = f"open loop at {s['rate']:g}/s" if s["mode"] == "open" else f"closed loop, {s['concurrency']} in flight"
    title = (f"{how}, {s['duration_s']:g} s, {s['workers']} worker(s), {s['store']} store; "
             f"overhead = seller latency - {BUYER_MS:g} ms buyer latency")
    t = Table(title=title, title_justify="left")
    columns = [("scenario", None, ""), ("pings/s", "pings_per_s", ",.0f"), ("posts/s", "posts_per_s", ",.0f"),
               ("p50 ms", "latency_p50_ms", ".1f"), ("p95 ms", "latency_p95_ms", ".1f"),
               ("p99 ms", "latency_p99_ms", ".1f"), ("max ms", "latency_max_ms", ".1f"),
               ("ovh p99 ms", "overhead_p99_ms", ".1f"), ("errors", "errors", "d"),
               ("CPU µs/ping", "cpu_us_per_ping", ",.0f"), ("pings/core-s", "pings_per_core_s", ",.0f"),
               ("exch CPU", "exchange_cpu", ".2f"),
               ("gen+buyers CPU", None, ""), ("RSS MB", "rss_mb", ".0f")]
    for header, _, _ in columns:
        t.add_column(header, justify="left" if header == "scenario" else "right")
    for result in report["results"]:
        row = []
        for header, key, fmt in columns:
            if header == "scenario":
                row.append(result["scenario"] + (f" ×{result['runs']}" if result["runs"] > 1 else ""))
            elif key is None:
                row.append(f"{result['loadgen_cpu']:.2f}+{result['buyers_cpu']:.2f}")
            else:
                value = result.get(key)
                row.append(_cell(result, key, fmt) if not (key == "errors" and value is not None)
                           else str(int(value)))
        t.add_row(*row)
    return t


def compare_table(report: dict[str, Any], previous: dict[str, Any], path: str) -> Any:
    from rich.table import Table

    t = Table(title=f"ratios: this run / {path} (>1 is more; ✓ better, ✗ worse by over 5%)", title_justify="left")
    for header in ("scenario", "metric", "now", "before", "ratio", ""):
        t.add_column(header, justify="left" if header in ("scenario", "metric") else "right")
    old = {(r["scenario"], r["mode"]): r for r in previous.get("results", [])}
    for result in report["results"]:
        before = old.get((result["scenario"], result["mode"]))
        if before is None:
            t.add_row(result["scenario"], "(not in the earlier file)", "", "", "", "")
            continue
        for metric, higher_better in METRICS.items():
            now, then = result.get(metric), before.get(metric)
            if now is None or then is None:
                continue
            ratio = now / then if then else (1.0 if now == then else math.inf)
            mark = ""
            if abs(ratio - 1) > 0.05:
                mark = "✓" if (ratio > 1) == higher_better else "✗"
            t.add_row(result["scenario"], metric, f"{now:g}", f"{then:g}", f"{ratio:.2f}", mark)
    return t
