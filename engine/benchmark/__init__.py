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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from ..launch import Child
from ..privacy import keys
from .cpus import Layout
from .load import drive
from .processes import ROOT, BenchError, start_listening, start_redis
from .report import compare_table, machine, summarize, table
from .scenarios import BUYER_MS, SCENARIOS, Scenario, scenario_config, scenario_profile

#: the exchanges ``--baseline`` runs beside pingpost's own: the baseline it is measured
#: against, and (``--floor``) the least an exchange on this stack can do
OTHER_EXCHANGES = {"plain": ROOT / "bench" / "plain_exchange.py", "floor": ROOT / "bench" / "floor_exchange.py"}
#: the scenarios of the ratio measurement, by default
BASELINE_SCENARIOS = ("5-http", "10k-campaigns")

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
    parser.add_argument("--repeat", type=int, default=None, help="runs per scenario, each on fresh processes; the "
                        "table shows the median and the spread (default: 1, or 3 with --baseline)")
    parser.add_argument("--baseline", action="store_true",
                        help="the ratio measurement: pingpost against the plain aiohttp exchange of "
                             "bench/plain_exchange.py, alternated, in 5-http and 10k-campaigns (or --scenario), "
                             "then pingpost's open-loop p99 overhead at half its closed-loop capacity")
    parser.add_argument("--floor", action="store_true",
                        help="with --baseline: also run bench/floor_exchange.py, the least an exchange on this stack "
                             "can do per ping, and print its ratio too (about the most any exchange could reach)")
    parser.add_argument("--workers", type=int, default=1, help="exchange worker processes (above 1 needs redis)")
    parser.add_argument("--store", choices=["memory", "redis"], default="memory",
                        help="memory, or redis: a throwaway redis-server on a free port (default: memory)")
    parser.add_argument("--ledger", default="sqlite", metavar="sqlite|none|postgresql://...",
                        help="the exchange's books: sqlite (a file in the run's work dir, the default), none (no "
                             "books: the engine alone), or a PostgreSQL URL (its journal in the work dir)")
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
    if args.repeat is None:
        args.repeat = 3 if args.baseline else 1
    default = list(BASELINE_SCENARIOS) if args.baseline else ["5-http"]
    names = args.scenario or default
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
    if args.baseline and (args.mode != "closed" or args.workers != 1 or args.store != "memory" or args.py_spy):
        print("pingpost bench: --baseline runs closed and open loops itself, one memory-store worker, no py-spy",
              file=sys.stderr)
        return 2
    if args.floor and not args.baseline:
        print("pingpost bench: --floor goes with --baseline", file=sys.stderr)
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
                     "store": args.store, "ledger": ledger_label(args.ledger), "repeat": args.repeat,
                     "exchange_log_level": args.exchange_log_level, "buyer_ms": BUYER_MS},
        "results": [],
    }
    failed = False
    layout.pin_self()
    if args.baseline:
        return ratios(scenarios, args, layout, console, report)
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


def ledger_label(ledger: str) -> str:
    """The books as a report names them: never a URL's password."""
    return "postgresql" if ledger.startswith(("postgresql://", "postgres://")) else ledger


def ledger_flags(ledger: str, workdir: Path) -> list[str]:
    if ledger == "sqlite":
        return ["--ledger", f"sqlite:///{workdir / 'ledger.db'}"]
    if ledger == "none":
        return ["--ledger", "none"]
    return ["--ledger", ledger, "--ledger-journal", str(workdir / "ledger-journal.db")]


def exchange_command(args: argparse.Namespace, workdir: Path, exchange: str) -> list[str]:
    """``pingpost serve`` on the run's config, or one of ``OTHER_EXCHANGES`` (``--baseline``) on the same."""
    config = str(workdir / "config.toml")
    if exchange in OTHER_EXCHANGES:
        return [sys.executable, str(OTHER_EXCHANGES[exchange]), "--config", config, "--port", "0"]
    serve = [sys.executable, "-m", "pingpost.cli", "serve", "--config", config, "--port", "0",
             "--workers", str(args.workers), "--log-level", args.exchange_log_level]
    return serve + ledger_flags(args.ledger, workdir)


def run_scenario(s: Scenario, args: argparse.Namespace, layout: Layout, exchange: str = "pingpost") -> dict[str, Any]:
    """One run of ``s`` on fresh processes: pingpost's exchange, or one of ``OTHER_EXCHANGES``."""
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pingpost-bench-")) / s.name
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[Child] = []
    try:
        (workdir / "profile.toml").write_text(scenario_profile(s))
        python = [sys.executable, "-m", "pingpost.cli"]
        buyers = start_listening("buyers", [*layout.prefix("others"), *python, "buyers", "--port", "0", "--profile",
                                            str(workdir / "profile.toml"), "--seed", str(args.seed),
                                            "--log-level", "warning"], workdir / "buyers.log", 30)
        procs.append(buyers)
        (workdir / "pingpost.key").write_text(keys.generate() + "\n")
        (workdir / "config.toml").write_text(scenario_config(s, buyers.url, str(workdir / "pingpost.key")))
        serve = exchange_command(args, workdir, exchange)
        redis = None
        if args.store == "redis":
            redis, url = start_redis(layout, workdir)
            procs.append(redis)
            serve += ["--redis", url]
        server = start_listening("exchange", [*layout.prefix("exchange"), *serve], workdir / "exchange.log", 60)
        procs.append(server)
        result = asyncio.run(drive(s, args, layout, server.url, server.process.pid, buyers.process.pid,
                                   redis.process.pid if redis else None))
        stopped = server.stop()
        if stopped != 0:
            result.setdefault("warnings", []).append(
                "the exchange did not stop within 15 s of SIGTERM" if stopped is None
                else f"the exchange exited with code {stopped} on SIGTERM")
        return result
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not keep:
            shutil.rmtree(workdir.parent if args.workdir is None else workdir, ignore_errors=True)


def ratios(scenarios: list[str], args: argparse.Namespace, layout: Layout, console: Any,
           report: dict[str, Any]) -> int:
    """``--baseline``: see ``baseline.measure``; the import stays here so plain runs skip it."""
    from .baseline import exchanges_of, measure

    missing = [str(OTHER_EXCHANGES[e]) for e in exchanges_of(args) if e in OTHER_EXCHANGES and not OTHER_EXCHANGES[e].exists()]
    if missing:
        console.print(f"[red]pingpost bench --baseline needs {', '.join(missing)} (a checkout of the repository)[/]")
        return 2
    return measure(scenarios, args, layout, console, report)
