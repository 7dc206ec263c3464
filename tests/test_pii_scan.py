"""No personal data in logs, metrics, traces or reports after a full demo run (scan for every
posted value).

``pingpost demo`` runs as its user runs it (its own exchange and simulated buyers, as child
processes, logging at ``debug``, the most verbose level), left up after its traffic. Then
everything the exchange shows of that run is collected: the demo's own output and both
children's logs (``--log-dir`` keeps them), ``/metrics``, the trace of every ping the log
names (``GET /v1/pings/{id}``) and each sold lead's status (``GET /v1/leads/{id}``), every
role's reports as JSON and CSV, ungrouped and by each dimension the role may group by, and
every dashboard page as each role's user sees it (the overview by each of its tables, the
lookup of sold and unsold pings and of sold leads, purchases, returns, the sign-in page).
The ledger's files and the shared store are not part of this scan.

The posted values are made again from the demo's own generator (``demo.leads``): a run of N
pings sends its first N samples, whichever sender takes which. That they are the values the
run posted is checked, not assumed: every lead the buyer ``safeauto`` bought, as its own API
(``GET /v1/buyer/leads``, the one place lead data rightly goes) answers it, is one of them, and
the scan finds its values in that answer, so the scan sees values as this exchange writes them.

What is scanned for, case-insensitively, each a whole value (not inside a longer word or
number): emails; phones as posted and in every usual form of their ten digits (digits only,
``+1`` and digits, ``(415) 555-0134``, ``415-555-0134``, ``415.555.0134``, ``+1 415 555 0134``);
street addresses; IP addresses; dates of birth (ISO, the form the exchange holds them in);
consent URLs, with and without their scheme; the first and last name together, and the last
name alone (``Lead 123``, unique to its lead). Not scanned for, to keep every finding real:
first names (every lead's is ``Test``, a word of every log line, ``"test": false``) and cities
(fifteen big cities, several of them also the time zones the dashboard offers, such as
``America/Chicago``). Zip and state are targeting fields of the ping, not personal data.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from pingpost import demo
from pingpost.access import DIMENSIONS, Role
from pingpost.ui.views import TIME
from tests.helpers_demo import DASHBOARD, SIGN_IN, start, until_up
from tests.support.dashboard import Visit

SEED = 11
PINGS = 300
#: The demo's API keys by (role, id).
KEYS = {(role, ident): key for role, ident, key in demo.API_KEYS}
OPERATOR_KEY = KEYS[("operator", "ops")]
BUYER_KEY = KEYS[("buyer", "safeauto")]
#: Dashboard pages beyond the overview and the lookup, and the roles they are for.
PAGES = {"/ui/purchases": ("operator", "buyer"), "/ui/returns": ("operator",)}
#: How many pings, sold and unsold, each role looks up on the dashboard.
LOOKUPS = 10


class Value(NamedTuple):
    """A personal value to look for: its field (``name`` for both names), its text, its lead's number."""

    field: str
    text: str
    lead: int


def personal_values(seed: int, count: int) -> list[Value]:
    """Every personal value of the ``count`` leads a demo run with ``seed`` posts, in each form
    that is scanned for (see the module's docstring)."""
    generator = demo.leads(seed)
    values: list[Value] = []
    for n in range(1, count + 1):
        lead = generator.sample().lead
        digits = re.sub(r"\D", "", lead["phone"])[-10:]
        a, b, c = digits[:3], digits[3:6], digits[6:]
        forms = {
            "email": [lead["email"]],
            "phone": [lead["phone"], digits, f"+1{digits}", f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}",
                      f"+1 {a} {b} {c}"],
            "address": [lead["address"]],
            "ip_address": [lead["ip_address"]],
            "dob": [lead["dob"]],
            "consent_cert_url": [lead["consent_cert_url"], lead["consent_cert_url"].removeprefix("https://")],
            "name": [f"{lead['first_name']} {lead['last_name']}", lead["last_name"]],
        }
        values += [Value(field, text, n) for field, texts in forms.items() for text in texts]
    return values


def scan(text: str, values: Iterable[Value]) -> list[Value]:
    """The values found in ``text``, each as a whole value: a cheap substring test first, then
    the same value with no letter or digit right before or after it (so ``Lead 12`` is not found
    in ``Lead 123``, nor a phone's ten digits in a longer number)."""
    lowered = text.lower()
    return [value for value in values if value.text.lower() in lowered
            and re.search(rf"(?<![0-9a-z]){re.escape(value.text.lower())}(?![0-9a-z])", lowered)]


class Run(NamedTuple):
    """What a demo run showed, by where (``GET /v1/pings/ID``, ``log serve.log`` ...)."""

    shown: dict[str, str]
    purchases: list[dict[str, Any]]


async def test_no_personal_data_in_logs_metrics_traces_or_reports_after_a_full_demo_run(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with start("--pings", str(PINGS), "--seed", str(SEED), "--log-level", "debug", "--log-dir", str(logs)) as process:
        assert process.stdout is not None
        try:
            out = until_up(process)
            found = DASHBOARD.search(out)
            assert found, out
            run = await collect(found.group(1), SIGN_IN.findall(out), logs / "serve.log")
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 0, out + process.stdout.read()
            out += process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
    shown = {"demo output": out, **{f"log {log.name}": log.read_text() for log in sorted(logs.iterdir())}, **run.shown}
    assert {"log serve.log", "log buyers.log"} <= shown.keys()

    values = personal_values(SEED, PINGS)
    # The values are the run's: each lead a buyer bought is one of them, and found where it is rightly shown.
    lead_of = {v.text: v.lead for v in values if v.field == "email"}
    assert run.purchases, "the demo sold no lead to safeauto"
    for purchase in run.purchases:
        n = lead_of.get(purchase["lead"]["email"])
        assert n is not None, purchase
        seen = {v.field for v in scan(json.dumps(purchase["lead"]), values) if v.lead == n}
        assert seen == {"email", "phone", "address", "ip_address", "dob", "consent_cert_url", "name"}, purchase

    leaks = {where: sorted({f"{v.field} {v.text!r} (lead {v.lead})" for v in found})
             for where, text in shown.items() if (found := scan(text, values))}
    assert not leaks, "personal data shown:\n" + "\n".join(f"{where}: {len(found)}, {', '.join(found[:3])}"
                                                            for where, found in leaks.items())


async def collect(url: str, sign_ins: list[tuple[str, str, str]], log: Path) -> Run:
    """Everything the exchange shows of the run, while it is still up."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    pings = sorted({e["ping_id"] for e in events if e.get("event") in ("ping", "post") and e.get("ping_id")})
    sales = [(e["seller"], e["lead_id"], e["ping_id"]) for e in events if e.get("event") == "post" and e["status"] == "sold"]
    assert len(pings) == PINGS and sales, events[:20]  # every lead is a ping, pinged first or posted directly
    shown: dict[str, str] = {}
    async with aiohttp.ClientSession(url) as session:

        async def get(path: str, key: str, scanned: bool = True, **query: str) -> str:
            async with session.get(path, params=query, headers={"Authorization": f"Bearer {key}"}) as response:
                text = await response.text()
                assert response.status == 200, (path, query, response.status, text)
            if scanned:
                shown[f"GET {path}?{'&'.join(f'{k}={v}' for k, v in query.items())}"] = text
            return text

        await get("/metrics", OPERATOR_KEY)
        for ping_id in pings:
            await get(f"/v1/pings/{ping_id}", OPERATOR_KEY)
        for seller, lead_id, _ in sales:
            await get(f"/v1/leads/{lead_id}", KEYS[("seller", seller)])
        today = datetime.datetime.now(datetime.UTC).date()
        days = {"from": (today - datetime.timedelta(days=1)).isoformat(), "to": (today + datetime.timedelta(days=1)).isoformat(),
                "tz": "UTC"}
        for (role, _), key in KEYS.items():
            for group_by in ("", *DIMENSIONS[Role(role)]):
                report = json.loads(await get("/v1/reports", key, **days, group_by=group_by))
                await get("/v1/reports", key, **days, group_by=group_by, format="csv")
            assert report["totals"]["pings"] > 0, (role, report)
        await get("/v1/returns", OPERATOR_KEY)
        # The one answer where lead data rightly goes (to the buyer that bought it): the values' check, not scanned.
        purchases = json.loads(await get("/v1/buyer/leads", BUYER_KEY, scanned=False, limit="1000", **days))["leads"]

    unsold = [ping_id for ping_id in pings if ping_id not in {ping for _, _, ping in sales}]
    lookups = [*(ping for _, _, ping in sales[:LOOKUPS]), *(lead for _, lead, _ in sales[:LOOKUPS]), *unsold[:LOOKUPS]]
    for role, name, password in sign_ins:
        browser = Visit(url)
        try:
            shown[f"{role} /ui/login"] = (await browser.get("/ui/login")).text
            assert (await browser.sign_in(name, password)).status == 303, role
            kind = Role(role.split(":")[0])
            pages = [f"/ui/?by={by}&from={days['from']}&to={days['to']}&tz=UTC" for by in DIMENSIONS[kind] if by not in TIME]
            pages += ["/ui/lookup", *(f"/ui/lookup?id={ident}" for ident in lookups)]
            pages += [page for page, roles in PAGES.items() if kind in roles]
            for page in pages:
                answer = await browser.get(page)
                # The operator finds every ping and lead; for a seller or a buyer, one not its own is a 404 page.
                found = (200,) if kind is Role.OPERATOR or "?id=" not in page else (200, 404)
                assert answer.status in found, (role, page, answer.status)
                shown[f"{role} {page}"] = answer.text
        finally:
            await browser.close()
    return Run(shown, purchases)
