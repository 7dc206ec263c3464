"""Exchange, simulated buyers and seller traffic in one command, summed up in two tables,
then the dashboard to look at.

The demo runs the real thing the way an operator would: it writes a config (with a
dashboard user per role, each with a password made for this run) and a buyer profile into
a temporary directory, starts ``pingpost buyers`` and ``pingpost serve`` as child
processes, sends seller traffic over HTTP and reads the exchange's ``/metrics`` for what
each campaign did. It then prints the dashboard's address and the sign-ins, and leaves the
exchange up until Ctrl-C (``--exit``: stop at once, for scripts and tests); it stops both
children with SIGTERM, checking they exit 0.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import NamedTuple

import aiohttp
import uvloop
from argon2 import PasswordHasher
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import config as exchange_config
from . import launch
from .privacy import keys
from .sim import traffic

VERTICALS = ("auto_insurance", "home_insurance")
SELLER_KEYS = ("demo-acme-media-key", "demo-leadgen-co-key")
#: The API keys the demo's config gives: (role, id, key).
API_KEYS = (("seller", "acme_media", SELLER_KEYS[0]), ("seller", "leadgen_co", SELLER_KEYS[1]),
            ("buyer", "safeauto", "demo-safeauto-key"), ("operator", "ops", "demo-ops-key"))

#: Nine buyers, twelve campaigns: filters, a daily cap, a fixed price, a flaky and a picky buyer,
#: and three buyers with APIs of their own (docs/buyer-formats.md): JSON with its own field names
#: and a reference echoed in the post, XML, and a form post answered in text.
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

[[operators]]
id = "ops"
api_keys = ["demo-ops-key"]

[[buyers]]
id = "safeauto"
api_keys = ["demo-safeauto-key"]   # its own API: purchases, returns, outcomes (docs/buyer-api.md)
max_return_rate = 0.02             # low, so that a few returns reach it and the rest wait for an operator
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
[[buyers]]
id = "jsonleads"
[[buyers]]
id = "xmlleads"
[[buyers]]
id = "formleads"

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

[[campaigns]]
id = "jsonleads_auto"
buyer = "jsonleads"
vertical = "auto_insurance"
ping_url = "{buyers}/jsonleads_auto/ping"
post_url = "{buyers}/jsonleads_auto/post"
timeout_ms = 200
format = "custom"

[campaigns.ping]
fields = [
  {{ to = "vendorId", value = "DEMO-1" }},
  {{ to = "zipCode", from = "zip" }},
  {{ to = "stateCode", from = "state" }},
  {{ to = "score", from = "quality_score" }},
]

[campaigns.ping.answer]
success = {{ path = "response", match = "^success$" }}
price = {{ path = "bid" }}
reference = {{ path = "leadAuctionId" }}
reason = {{ path = "details" }}

[campaigns.post]
fields = [
  {{ to = "leadAuctionId", from = "reference" }},
  {{ to = "contact.firstName", from = "first_name" }},
  {{ to = "contact.lastName", from = "last_name" }},
  {{ to = "contact.phone", from = "phone" }},
  {{ to = "contact.email", from = "email" }},
  {{ to = "price", from = "price" }},
]

[campaigns.post.answer]
success = {{ path = "response", match = "^success$" }}
reference = {{ path = "leadId" }}
reason = {{ path = "details" }}

[[campaigns]]
id = "xmlleads_home"
buyer = "xmlleads"
vertical = "home_insurance"
ping_url = "{buyers}/xmlleads_home/ping"
post_url = "{buyers}/xmlleads_home/post"
timeout_ms = 200
format = "custom"

[campaigns.ping]
encoding = "xml"
fields = [
  {{ to = "zip", from = "zip" }},
  {{ to = "state", from = "state" }},
  {{ to = "homeowner", from = "attributes.homeowner", map = {{ true = "Y", false = "N" }}, default = "U" }},
]

[campaigns.ping.answer]
parse = "xml"
success = {{ path = "/response/status", match = "^matched$" }}
price = {{ path = "/response/price" }}
reference = {{ path = "/response/lead_id" }}
reason = {{ path = "/response/error" }}

[campaigns.post]
encoding = "xml"
fields = [
  {{ to = "lead_id", from = "reference" }},
  {{ to = "contact.first_name", from = "first_name" }},
  {{ to = "contact.last_name", from = "last_name" }},
  {{ to = "contact.phone", from = "phone" }},
  {{ to = "contact.email", from = "email" }},
]

[campaigns.post.answer]
parse = "xml"
success = {{ path = "/result/outcome", match = "^success$" }}
reason = {{ path = "/result/reason" }}

[[campaigns]]
id = "formleads_auto"
buyer = "formleads"
vertical = "auto_insurance"
post_url = "{buyers}/formleads_auto/post"
fixed_price = 7.0
format = "custom"
filters = {{ min_quality = 60 }}

[campaigns.post]
encoding = "form"
fields = [
  {{ to = "FirstName", from = "first_name", transforms = ["ascii"] }},
  {{ to = "LastName", from = "last_name", transforms = ["ascii"] }},
  {{ to = "Phone", from = "phone" }},
  {{ to = "Email", from = "email" }},
  {{ to = "Zip", from = "zip" }},
]

[campaigns.post.answer]
parse = "text"
success = {{ match = '^OK\\b' }}
reference = {{ regex = 'id=(\\S+)' }}
reason = {{ regex = '^REJECTED:\\s*(.+)' }}
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

[[campaigns]]
id = "jsonleads_auto"
bid_min = 9.0
bid_max = 28.0
[campaigns.answers]
bid = '{"response":"success","leadAuctionId":"{id}","bid":{price}}'
no_bid = '{"response":"failure","details":"Quota Reached"}'
accept = '{"response":"success","leadId":"{id}"}'
reject = '{"response":"failure","details":"{reason}"}'

[[campaigns]]
id = "xmlleads_home"
[campaigns.answers]
content_type = "text/xml"
bid = "<response><status>Matched</status><lead_id>{id}</lead_id><price>{price}</price></response>"
no_bid = "<response><status>Unmatched</status><error>No buyer</error></response>"
accept = "<result><outcome>success</outcome></result>"
reject = "<result><outcome>failure</outcome><reason><![CDATA[{reason}]]></reason></result>"

[[campaigns]]
id = "formleads_auto"
[campaigns.answers]
content_type = "text/plain"
accept = "OK|id={id}"
reject = "REJECTED: {reason}"
"""

STARTUP_S = 30.0
STOP_S = 20.0


class SignIn(NamedTuple):
    """A dashboard user the demo makes: its name, role and this run's password."""

    name: str
    role: str
    password: str


#: One user per role: the exchange's staff, a seller's and a buyer's people.
USERS = (("ops", "operator"), ("acme", "seller:acme_media"), ("safeauto", "buyer:safeauto"))


def make_users() -> tuple[list[SignIn], str]:
    """The sign-ins of this run, with fresh passwords, and their ``[[users]]`` config (argon2id
    hashes only: the passwords are printed, never written)."""
    hasher = PasswordHasher()
    sign_ins = [SignIn(name, role, secrets.token_urlsafe(12)) for name, role in USERS]
    toml = "".join(f'\n[[users]]\nname = "{s.name}"\nrole = "{s.role}"\npassword_hash = "{hasher.hash(s.password)}"\n'
                   for s in sign_ins)
    return sign_ins, toml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pings", type=int, default=2000, help="leads to send (default: 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="leads in flight at once (default: 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic and the buyers (default: 1)")
    parser.add_argument("--port", type=int, default=0, help="the exchange's (and its dashboard's) port (default: any free)")
    parser.add_argument("--exit", action="store_true",
                        help="stop as soon as the traffic is summed up, instead of leaving the exchange up until Ctrl-C")
    parser.add_argument("--log-dir", type=Path,
                        help="write the exchange's and the buyers' logs into this directory and keep them "
                             "(default: a temporary one, removed at the end)")
    # The common --log-level is the children's here: quiet unless asked, the demo prints its own summary.
    parser.set_defaults(log_level="warning")


def leads(seed: int) -> traffic.Generator:
    """The generator of a run's leads: ``--pings N --seed S`` sends its first N samples (in
    whatever order the concurrent senders take them), so they can be made again after the run."""
    return traffic.Generator(seed=seed, verticals=VERTICALS)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the demo as Ctrl-C does: its children are stopped, not left running."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    console = Console()
    signal.signal(signal.SIGTERM, _interrupted)
    with tempfile.TemporaryDirectory(prefix="pingpost-demo-") as tmp:
        workdir = Path(tmp)
        children: list[launch.Child] = []
        problems: list[str] = []
        try:
            logs = _log_dir(args.log_dir, workdir)
            buyers = _start("buyers", logs, args.log_level, "--host", "127.0.0.1", "--port", "0", "--seed", str(args.seed),
                            "--profile", _write(workdir / "buyers.toml", PROFILE))
            children.append(buyers)
            sign_ins, users = make_users()
            # The demo's books seal the leads' personal data under a key made for this run.
            key_file = _write(workdir / "demo.key", keys.generate())
            config_path = _write(workdir / "exchange.toml", CONFIG.format(buyers=buyers.url) + users
                                 + f'\n[privacy]\nkey_file = "{key_file}"\n')
            exchange = _start("serve", logs, args.log_level, "--host", "127.0.0.1", "--port", str(args.port), "--config",
                              config_path, "--ledger", f"sqlite:///{workdir / 'ledger.db'}")
            children.append(exchange)
            console.print(f"exchange on {exchange.url}, simulated buyers on {buyers.url}")
            calls, metrics, elapsed = uvloop.run(_traffic(exchange.url, args, console))
            summary = _report(console, calls, metrics, elapsed, exchange_config.load(config_path))
            if summary.failures:
                problems.append(f"seller calls failed (a demo run should have none); the exchange's log ends:\n"
                                f"{exchange.tail()}")
            _dashboard(console, exchange.url, sign_ins)
            if not args.exit:
                _stay_up(console, children)
        except DemoError as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
        except KeyboardInterrupt:
            console.print("stopping")
        finally:
            problems += [problem for problem in (_stop(child) for child in reversed(children)) if problem]
        for problem in problems:
            console.print(f"[red]{problem}[/red]", highlight=False, markup=False)
        return 1 if problems else 0


def _dashboard(console: Console, url: str, sign_ins: list[SignIn]) -> None:
    console.print(f"dashboard: {url}/ui/", highlight=False, markup=False)
    table = Table(title="dashboard sign-ins (this run only)")
    for column in ("role", "name", "password"):
        table.add_column(column, no_wrap=True)
    for sign_in in sign_ins:
        table.add_row(sign_in.role, sign_in.name, sign_in.password)
    console.print(table)
    keys = Table(title="API keys (docs/api.md, docs/buyer-api.md)")
    for column in ("id", "role", "key"):
        keys.add_column(column, no_wrap=True)
    for role, ident, key in API_KEYS:
        keys.add_row(ident, role, key)
    console.print(keys)


def _stay_up(console: Console, children: list[launch.Child]) -> None:
    """Until Ctrl-C (or SIGTERM), or until a child ends by itself."""
    console.print("The exchange stays up for a look: press Ctrl-C to stop it.")
    while all(child.process.poll() is None for child in children):
        time.sleep(0.2)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


class DemoError(Exception):
    pass


def _log_dir(asked: Path | None, workdir: Path) -> Path:
    """Where the children log: ``--log-dir`` (made if missing, kept), else the work dir."""
    if asked is None:
        return workdir
    try:
        asked.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot make the log directory {asked}: {exc.strerror or exc}") from None
    return asked


def _start(command: str, logs: Path, log_level: str, *options: str) -> launch.Child:
    """``pingpost COMMAND`` in its own process, logging at ``log_level`` to a file in ``logs``,
    once it says where it listens (its ``url``, with the bound port)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    try:
        # Its own session: Ctrl-C reaches the demo only, which stops its children in order.
        return launch.Child.start([sys.executable, "-m", "pingpost.cli", command, "--log-level", log_level, *options],
                                  timeout=STARTUP_S, name=f"pingpost {command}", log=logs / f"{command}.log",
                                  env=env, start_new_session=True)
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
        generator = leads(args.seed)
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
