"""Exchange, simulated buyers and seller traffic in one command, summed up in two tables.

The demo runs the real thing the way an operator would: it writes a config and a buyer
profile into a temporary directory, starts ``pingpost buyers`` and ``pingpost serve`` as
child processes, sends seller traffic over HTTP, reads the exchange's ``/metrics`` for
what each campaign did, and stops both children with SIGTERM, checking they exit 0.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import config as exchange_config
from . import launch
from .sim import traffic

VERTICALS = ("auto_insurance", "home_insurance")
SELLER_KEYS = ("demo-acme-media-key", "demo-leadgen-co-key")

#: Six buyers, nine campaigns: filters, a daily cap, a fixed price, a flaky and a picky buyer.
CONFIG = """\
[exchange]
auction_timeout_ms = 300
post_timeout_ms = 3000
bench_after_timeouts = 1000   # keep the flaky buyer in play, so its timeouts show

[[sellers]]
id = "acme_media"
api_keys = ["demo-acme-media-key"]
revenue_share = 0.8

[[sellers]]
id = "leadgen_co"
api_keys = ["demo-leadgen-co-key"]
revenue_share = 0.75
min_bid = 3.0

[[buyers]]
id = "safeauto"
[[buyers]]
id = "drivewise"
[[buyers]]
id = "homeshield"
[[buyers]]
id = "nestguard"
[[buyers]]
id = "flakyleads"
[[buyers]]
id = "pickyins"

[[campaigns]]
id = "safeauto_west"
buyer = "safeauto"
vertical = "auto_insurance"
ping_url = "{buyers}/safeauto_west/ping"
post_url = "{buyers}/safeauto_west/post"
timeout_ms = 200
filters = {{ states = ["CA", "WA", "AZ", "CO"], min_quality = 40 }}

[[campaigns]]
id = "safeauto_all"
buyer = "safeauto"
vertical = "auto_insurance"
ping_url = "{buyers}/safeauto_all/ping"
post_url = "{buyers}/safeauto_all/post"
timeout_ms = 200

[[campaigns]]
id = "drivewise_auto"
buyer = "drivewise"
vertical = "auto_insurance"
ping_url = "{buyers}/drivewise_auto/ping"
post_url = "{buyers}/drivewise_auto/post"
timeout_ms = 200
filters = {{ rules = [{{ field = "vehicle_year", op = "gte", value = 2012 }}] }}
caps = {{ daily = 40 }}

[[campaigns]]
id = "homeshield_home"
buyer = "homeshield"
vertical = "home_insurance"
ping_url = "{buyers}/homeshield_home/ping"
post_url = "{buyers}/homeshield_home/post"
timeout_ms = 200
filters = {{ rules = [{{ field = "homeowner", op = "eq", value = true }}] }}

[[campaigns]]
id = "homeshield_fixed"
buyer = "homeshield"
vertical = "home_insurance"
post_url = "{buyers}/homeshield_fixed/post"
fixed_price = 6.5
filters = {{ min_quality = 70 }}

[[campaigns]]
id = "nestguard_home"
buyer = "nestguard"
vertical = "home_insurance"
ping_url = "{buyers}/nestguard_home/ping"
post_url = "{buyers}/nestguard_home/post"
timeout_ms = 200
filters = {{ exclude_states = ["NY", "FL"] }}

[[campaigns]]
id = "flaky_auto"
buyer = "flakyleads"
vertical = "auto_insurance"
ping_url = "{buyers}/flaky_auto/ping"
post_url = "{buyers}/flaky_auto/post"
timeout_ms = 150
post_timeout_ms = 1000

[[campaigns]]
id = "flaky_home"
buyer = "flakyleads"
vertical = "home_insurance"
ping_url = "{buyers}/flaky_home/ping"
post_url = "{buyers}/flaky_home/post"
timeout_ms = 150
post_timeout_ms = 1000

[[campaigns]]
id = "picky_auto"
buyer = "pickyins"
vertical = "auto_insurance"
ping_url = "{buyers}/picky_auto/ping"
post_url = "{buyers}/picky_auto/post"
timeout_ms = 200
"""

PROFILE = """\
[default]
latency_ms = 25
jitter_ms = 15
bid_min = 2.0
bid_max = 25.0
no_bid_rate = 0.25
post_latency_ms = 40
reject_rate = 0.1

[[campaigns]]
id = "safeauto_west"
bid_min = 10.0
bid_max = 35.0

[[campaigns]]
id = "safeauto_all"

[[campaigns]]
id = "drivewise_auto"
bid_min = 8.0
no_bid_rate = 0.1

[[campaigns]]
id = "homeshield_home"
latency_ms = 60

[[campaigns]]
id = "homeshield_fixed"

[[campaigns]]
id = "nestguard_home"
bid_max = 18.0

[[campaigns]]
id = "flaky_auto"
timeout_rate = 0.2
error_rate = 0.05

[[campaigns]]
id = "flaky_home"
timeout_rate = 0.2
error_rate = 0.05

[[campaigns]]
id = "picky_auto"
bid_min = 12.0
bid_max = 30.0
reject_rate = 0.6
"""

STARTUP_S = 30.0
STOP_S = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pings", type=int, default=2000, help="leads to send (default: 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="leads in flight at once (default: 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic and the buyers (default: 1)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="pingpost-demo-") as tmp:
        workdir = Path(tmp)
        children: list[launch.Child] = []
        try:
            buyers = _start("buyers", workdir, "--host", "127.0.0.1", "--port", "0", "--seed", str(args.seed),
                            "--profile", _write(workdir / "buyers.toml", PROFILE))
            children.append(buyers)
            config_path = _write(workdir / "exchange.toml", CONFIG.format(buyers=buyers.url))
            exchange = _start("serve", workdir, "--host", "127.0.0.1", "--port", "0", "--config", config_path)
            children.append(exchange)
            console.print(f"exchange on {exchange.url}, simulated buyers on {buyers.url}")
            calls, metrics, elapsed = uvloop.run(_traffic(exchange.url, args, console))
        except DemoError as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
        finally:
            stopped = [_stop(child) for child in reversed(children)]
        problems = [problem for problem in stopped if problem]
        summary = _report(console, calls, metrics, elapsed, exchange_config.load(config_path))
        if summary.failures:
            problems.append(f"seller calls failed (a demo run should have none); the exchange's log ends:\n"
                            f"{exchange.tail()}")
        for problem in problems:
            console.print(f"[red]{problem}[/red]", highlight=False, markup=False)
        return 1 if problems else 0


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


class DemoError(Exception):
    pass


def _start(command: str, workdir: Path, *options: str) -> launch.Child:
    """``pingpost COMMAND`` in its own process, logging to a file in the work dir, once it
    says where it listens (its ``url``, with the bound port)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    try:
        return launch.Child.start([sys.executable, "-m", "pingpost.cli", command, "--log-level", "warning", *options],
                                  timeout=STARTUP_S, name=f"pingpost {command}", log=workdir / f"{command}.log",
                                  env=env)
    except launch.NotListening as exc:
        raise DemoError(str(exc)) from None


def _stop(child: launch.Child) -> str | None:
    """SIGTERM and wait; what went wrong, or None for a clean exit 0."""
    code = child.stop(STOP_S)
    if code is None:
        return f"{child.name} did not stop within {STOP_S:g} s of SIGTERM"
    return None if code == 0 else f"{child.name} exited with {code}:\n{child.tail()}"


async def _traffic(url: str, args: argparse.Namespace, console: Console) -> tuple[list[traffic.Call], str, float]:
    """Send the leads with a live progress bar; returns the calls, the exchange's metrics
    text and the seconds the traffic took."""
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        sellers = [traffic.Seller(session, url, key) for key in SELLER_KEYS]
        generator = traffic.Generator(seed=args.seed, verticals=VERTICALS)
        columns = (TextColumn("[bold]leads"), BarColumn(), MofNCompleteColumn(), TextColumn("sold {task.fields[sold]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("leads", total=args.pings, sold=0)
            sold = 0

            def on_call(call: traffic.Call) -> None:
                nonlocal sold
                sold += call.outcome == "sold"
                progress.update(task, advance=call.kind != "post", sold=sold)

            started = time.perf_counter()
            calls = await traffic.run(sellers, generator, args.pings, concurrency=args.concurrency, seed=args.seed,
                                      on_call=on_call)
            elapsed = time.perf_counter() - started
        try:
            async with session.get(url + "/metrics") as response:
                metrics = await response.text()
        except aiohttp.ClientError as exc:
            raise DemoError(f"cannot read {url}/metrics: {exc}") from None
    return calls, metrics, elapsed


_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$', re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def campaign_counts(metrics: str) -> dict[str, dict[str, float]]:
    """Per campaign, ``ping:<outcome>`` and ``post:<outcome>`` counts from Prometheus text."""
    names = {"pingpost_campaign_pings_total": "ping", "pingpost_posts_total": "post"}
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, labels, value in _SAMPLE.findall(metrics):
        if name in names:
            label = dict(_LABEL.findall(labels))
            counts[label.get("campaign", "")][f"{names[name]}:{label.get('outcome', '')}"] += float(value)
    return counts


def _report(console: Console, calls: list[traffic.Call], metrics: str, elapsed: float,
            config: exchange_config.Config) -> traffic.Summary:
    s = traffic.summarize(calls)
    leads = s.pings + sum(c.kind == "direct" for c in calls)
    table = Table(title="pingpost demo", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    for name, value in (
        ("leads", f"{leads} in {elapsed:.1f} s ({leads / elapsed:,.0f}/s)" if elapsed else str(leads)),
        ("pings", str(s.pings)),
        ("bid rate", f"{s.bid_rate:.1%}"),
        ("posts (incl. direct)", str(s.posts)),
        ("sold", str(s.sold)),
        ("revenue", f"${s.revenue:,.2f}"),
        ("failed calls", _failures(s.failures)),
        ("auction ms p50 / p99", _pair(s.auction_p50_ms, s.auction_p99_ms)),
        ("ping round trip ms p50 / p99", _pair(s.ping_p50_ms, s.ping_p99_ms)),
    ):
        table.add_row(name, value)
    console.print(table)

    counts = campaign_counts(metrics)
    per_buyer: dict[str, dict[str, float]] = {b.id: defaultdict(float) for b in config.buyers}
    for campaign in config.campaigns:
        for kind, count in counts.get(campaign.id, {}).items():
            per_buyer[campaign.buyer][kind] += count
    buyers = Table(title="per buyer (from /metrics)")
    columns = {"pings": None, "bids": "ping:bid", "wins": "post:accepted", "rejects": "post:rejected",
               "timeouts": "ping:timeout", "errors": "ping:error"}
    buyers.add_column("buyer")
    for column in columns:
        buyers.add_column(column, justify="right")
    for buyer, got in per_buyer.items():
        pinged = sum(v for k, v in got.items() if k.startswith("ping:"))
        buyers.add_row(buyer, *(f"{pinged if key is None else got[key]:.0f}" for key in columns.values()))
    console.print(buyers)
    return s


def _failures(failures: dict[str, int]) -> str:
    if not failures:
        return "0"
    top = ", ".join(f"{outcome} x{count}" for outcome, count in list(failures.items())[:3])
    return f"{sum(failures.values())} ({top})"


def _pair(p50: float | None, p99: float | None) -> str:
    return "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f}"
