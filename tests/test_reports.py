"""``GET /v1/reports`` against ground truth: known traffic through the real exchange app, real
buyer servers and a real SQLite ledger, then every metric of every role's report, group-bys,
time zones (a day boundary in America/Los_Angeles), test traffic, CSV, and who may see what.

The truth is computed here, not by the engine: from what each seller was answered and what
each buyer server received and answered, through the metric definitions of docs/reports.md.
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import re
import zoneinfo
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from pingpost.access import DIMENSIONS, METRICS, Role
from tests.helpers_contract import assert_error, lead
from tests.support.buyers import BuyerServer, Reply, accept, bid, reject
from tests.support.clock import ManualClock
from tests.support.exchange import OTHER_KEY, SELLER_KEY, SELLER_TEST_KEY
from tests.test_access import B1_KEY, B2_KEY, OPS_KEY, roles_config

B3_KEY = "b3-key-0001"
LA = zoneinfo.ZoneInfo("America/Los_Angeles")
#: 23:30 on 1 December in Los Angeles: 07:30 on 2 December in UTC.
EVENING = datetime.datetime(2026, 12, 1, 23, 30, tzinfo=LA).timestamp()
KEYS = {"ops": OPS_KEY, "acme": SELLER_KEY, "other": OTHER_KEY, "b1": B1_KEY, "b2": B2_KEY, "b3": B3_KEY}
BUYER_OF = {"c1": "b1", "c3": "b1", "c2": "b2", "c4": "b3", "c5": "b3", "c6": "b2", "c7": "b3"}
SHARE = {"acme": Decimal("0.8"), "other": Decimal("1")}
MIN_BID = {"acme": 0, "other": 150}


@dataclass(frozen=True)
class Plan:
    """What each campaign does with a ping of this case, and with its post."""

    bids: dict[str, float | None] = field(default_factory=dict)  # None: 204, no bid
    errors: frozenset[str] = frozenset()                         # 500: error:http_500
    slow: frozenset[str] = frozenset()                           # past the campaign's timeout
    accept: frozenset[str] = frozenset()


CASES = {
    "A": Plan(bids={"c1": 3.0, "c3": 2.5, "c2": 2.0}, errors=frozenset({"c4"}), slow=frozenset({"c5"}),
              accept=frozenset({"c3"})),
    "B": Plan(bids={"c2": 4.0, "c1": None, "c3": 1.0}, errors=frozenset({"c4"}), accept=frozenset({"c2"})),
    "C": Plan(bids={"c1": None, "c2": 0, "c3": None}, errors=frozenset({"c4"}), slow=frozenset({"c5"})),
    "D": Plan(bids={"c1": 5.0, "c2": 1.0}),
    "E": Plan(bids={"c1": 1.5}),
}


def campaigns() -> list[dict[str, Any]]:
    """c5 is the slow one (100 ms); the others get two seconds, so a stall of the test's one loop
    on a loaded machine never turns an answer into a timeout."""
    made = [{"id": "c1"}, {"id": "c2", "buyer": "b2", "filters": {"exclude_states": ["NV"]}}, {"id": "c3"},
            {"id": "c4", "buyer": "b3"}, {"id": "c5", "buyer": "b3", "timeout_ms": 100},
            {"id": "c6", "buyer": "b2", "vertical": "home"},
            {"id": "c7", "buyer": "b3", "ping_url": None, "fixed_price": 0.75, "filters": {"states": ["NV"]}}]
    return [{"timeout_ms": 2000, **campaign} for campaign in made]


def script(buyers: BuyerServer) -> None:
    def on_ping(campaign: str) -> Any:
        def answer(body: dict[str, Any]) -> Reply:
            plan = CASES[body["attributes"]["case"]]
            if campaign in plan.errors:
                return Reply(status=500)
            if campaign in plan.slow:
                return Reply(status=204, delay=2.0)
            amount = plan.bids.get(campaign)
            return Reply(status=204) if amount is None else bid(amount)
        return answer

    def on_post(campaign: str) -> Any:
        def answer(body: dict[str, Any]) -> Reply:
            return accept(f"{campaign}-lead") if campaign in CASES[body["lead"]["attributes"]["case"]].accept \
                else reject("no_thanks")
        return answer

    for campaign in BUYER_OF:
        buyers.script(campaign, ping=on_ping(campaign), post=on_post(campaign))


def config(buyers: BuyerServer) -> dict[str, Any]:
    made = roles_config(buyers, *campaigns(), timezone="America/Los_Angeles", auction_timeout_ms=2500)
    made["sellers"][0]["revenue_share"] = 0.8
    made["sellers"][1]["min_bid"] = 1.5
    made["buyers"][2]["api_keys"] = [B3_KEY]
    return made


# The traffic, as the test saw it -------------------------------------------------------------


@dataclass
class Sent:
    """One ping: what the seller sent and was told, and when (the exchange's clock)."""

    ping_id: str
    seller: str
    test: bool
    case: str
    fields: dict[str, Any]
    at: float
    priced: bool
    posted: bool = False
    sold_cents: int | None = None  # the seller's price of the sale
    attempts: int = 0


def cents(amount: float | None) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value(rounding="ROUND_DOWN")) if amount else 0


async def drive(ex: Any, clock: ManualClock) -> list[Sent]:
    """Ten pings over a day boundary in Los Angeles (23:30 on 1 December, then 00:30 on the 2nd)."""
    traffic: list[Sent] = []

    async def send(key: str, case: str, post: str | None = "post", **fields: Any) -> None:
        seller = {SELLER_KEY: "acme", SELLER_TEST_KEY: "acme", OTHER_KEY: "other"}[key]
        ping = {"vertical": "auto", "zip": "90210", "attributes": {"case": case}, **fields}
        if post == "direct":
            status, answer = await ex.direct({**ping, "lead": lead(zip="90210")}, key=key)
            assert status == 200, answer
            sent = Sent(answer["ping_id"], seller, key == SELLER_TEST_KEY, case, fields, clock(), priced=True,
                        posted=True)
        else:
            status, answer = await ex.ping(ping, key=key)
            assert status == 200, answer
            sent = Sent(answer["ping_id"], seller, key == SELLER_TEST_KEY, case, fields, clock(),
                        priced=answer["status"] == "bid")
            if post:
                status, answer = await ex.post(sent.ping_id, lead(zip="90210"), key=key)
                assert status == 200, answer
                sent.posted = True
        if sent.posted:
            sent.attempts = answer["attempts"]
            if answer["status"] == "sold":
                sent.sold_cents = cents(answer["price"])
        traffic.append(sent)

    clock.now = EVENING
    await send(SELLER_KEY, "A", state="CA", source_id="s1", sub_id="x")
    await send(SELLER_KEY, "B", state="CA", source_id="s2")
    await send(SELLER_KEY, "C", post=None, state="TX", source_id="s1")
    await send(SELLER_KEY, "D", state="CA", source_id="s1", sub_id="x")
    await send(OTHER_KEY, "B", state="CA", source_id="s9")
    await send(SELLER_TEST_KEY, "A", state="CA", source_id="s1")
    await send(SELLER_KEY, "E", post=None, state="NV")
    clock.advance(3600)
    await send(SELLER_KEY, "A", state="NV", source_id="s2")
    await send(OTHER_KEY, "D", state="TX")
    await send(SELLER_KEY, "B", post="direct", state="CA", source_id="=cmd()")
    return traffic


# The truth ------------------------------------------------------------------------------

COUNTERS = ("pings", "priced", "posts", "offers", "accepted", "sold", "bids", "bid_cents", "timeouts", "errors",
            "revenue_cents", "payout_cents")


def facts(traffic: list[Sent], buyers: BuyerServer) -> Found:
    """(ping, campaign, its counts) for every campaign each ping was sent, from the plans and
    what the buyer servers received (their pings and posts) and the seller was told."""
    received = {c: {r.body["ping_id"] for r in buyers.pings.get(c, [])} for c in BUYER_OF}
    offered = {c: {r.body["ping_id"]: r.body["price"] for r in buyers.posts.get(c, [])} for c in BUYER_OF}
    out = []
    for sent in traffic:
        plan = CASES[sent.case]
        sent_to = [c for c in BUYER_OF if sent.ping_id in received[c]]
        fixed = ["c7"] if sent.fields.get("state") == "NV" else []
        bids = {c: cents(plan.bids.get(c)) for c in sent_to if cents(plan.bids.get(c)) > 0}
        bids.update({c: 75 for c in fixed})
        eligible = {c: b for c, b in bids.items() if b >= MIN_BID[sent.seller]}
        top = max(eligible, key=eligible.__getitem__) if eligible else None
        assert sent.priced == (top is not None)
        for c in sent_to + fixed:
            took = c in plan.accept and sent.ping_id in offered[c]
            counts = {"pings": 1, "priced": int(c == top), "posts": int(sent.posted),
                      "offers": int(sent.ping_id in offered[c]), "accepted": int(took), "sold": int(took),
                      "bids": int(c in bids), "bid_cents": bids.get(c, 0), "timeouts": int(c in plan.slow),
                      "errors": int(c in plan.errors), "revenue_cents": cents(offered[c][sent.ping_id]) if took else 0,
                      "payout_cents": sent.sold_cents or 0 if took else 0}
            out.append((sent, c, counts))
        assert sent.attempts == sum(sent.ping_id in offered[c] for c in BUYER_OF)
    return out


def label(sent: Sent, dimension: str, campaign: str | None, zone: zoneinfo.ZoneInfo) -> Any:
    hour = datetime.datetime.fromtimestamp(sent.at // 3600 * 3600, zone)
    return {"hour": hour.isoformat(), "day": hour.date().isoformat(), "seller": sent.seller,
            "source": sent.fields.get("source_id"), "sub_id": sent.fields.get("sub_id"), "vertical": "auto",
            "state": sent.fields.get("state"), "buyer": campaign and BUYER_OF[campaign], "campaign": campaign}[dimension]


def money(value: int) -> Decimal:
    return Decimal(value) / 100


def per(value: int, count: int) -> Decimal:
    return (Decimal(value) / count / 100).quantize(Decimal("0.01"), ROUND_HALF_UP) if count else Decimal(0)


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def metrics(c: dict[str, int]) -> dict[str, Any]:
    """Every metric of docs/reports.md from the counts (returns and conversions: none yet)."""
    return {"pings": c["pings"], "priced": c["priced"], "posts": c["posts"], "sold": c["sold"], "returns": 0,
            "conversions": 0, "payout": money(c["payout_cents"]), "payout_per_post": per(c["payout_cents"], c["posts"]),
            "bids": c["bids"], "avg_bid": per(c["bid_cents"], c["bids"]), "offers": c["offers"],
            "accepted": c["accepted"], "accept_rate": rate(c["accepted"], c["offers"]),
            "spend": money(c["revenue_cents"]), "cost_per_lead": per(c["revenue_cents"], c["sold"]),
            "conversion_rate": 0.0, "timeouts": c["timeouts"], "errors": c["errors"],
            "bid_rate": rate(c["priced"], c["pings"]), "rejected": c["offers"] - c["accepted"],
            "revenue": money(c["revenue_cents"]), "margin": money(c["revenue_cents"] - c["payout_cents"]),
            "revenue_per_post": per(c["revenue_cents"], c["posts"]), "returned_amount": Decimal(0)}


#: Counts that say whether a unit has something (a ping, priced, posted), not how many.
_ONCE = ("pings", "priced", "posts")
Found = list[tuple[Sent, str, dict[str, int]]]


def units(found: Found, traffic: list[Sent], level: str, keep: Any) -> list[tuple[Sent, str | None, dict[str, int]]]:
    """What one level counts: a (ping, campaign) it was sent, a (ping, buyer), or a ping,
    each once; ``keep(sent, campaign)`` says which facts are the caller's."""
    merged: dict[tuple[str, str | None], tuple[Sent, str | None, dict[str, int]]] = {}
    for sent, campaign, counts in found:
        if not keep(sent, campaign):
            continue
        unit = (sent.ping_id, campaign if level == "campaign" else BUYER_OF[campaign] if level == "buyer" else None)
        if unit not in merged:
            merged[unit] = (sent, campaign, dict(counts))
        else:
            into = merged[unit][2]
            for name, value in counts.items():
                into[name] = max(into[name], value) if name in _ONCE else into[name] + value
    if level == "ping":  # a ping no campaign was sent counts all the same
        for sent in traffic:
            if keep(sent, None) and (sent.ping_id, None) not in merged:
                merged[(sent.ping_id, None)] = (sent, None, {**dict.fromkeys(COUNTERS, 0), "pings": 1,
                                                             "posts": int(sent.posted)})
    return list(merged.values())


def truth(found: Found, traffic: list[Sent], who: str, group_by: tuple[str, ...], tz: str, days: tuple[str, str],
          test: bool) -> dict[str, Any]:
    """The report ``who`` should get, computed from the traffic alone."""
    zone = zoneinfo.ZoneInfo(tz)
    role = Role.OPERATOR if who == "ops" else Role.BUYER if who.startswith("b") else Role.SELLER

    def keep(sent: Sent, campaign: str | None) -> bool:
        day = label(sent, "day", None, zone)
        return (days[0] <= day <= days[1] and (test or not sent.test)
                and (role is not Role.SELLER or sent.seller == who)
                and (role is not Role.BUYER or (campaign is not None and BUYER_OF[campaign] == who)))

    def total(selected: list[dict[str, int]]) -> dict[str, Any]:
        counts = {name: sum(c[name] for c in selected) for name in COUNTERS}
        return {n: metrics(counts)[n] for n in METRICS[role]}

    level = "campaign" if "campaign" in group_by else "buyer" if role is Role.BUYER or "buyer" in group_by else "ping"
    totals = total([c for _, _, c in units(found, traffic, "buyer" if role is Role.BUYER else "ping", keep)])
    groups: dict[tuple[Any, ...], list[dict[str, int]]] = {}
    for sent, campaign, counts in units(found, traffic, level, keep):
        groups.setdefault(tuple(label(sent, d, campaign, zone) for d in group_by), []).append(counts)
    rows = [{**dict(zip(group_by, key)), **total(groups[key])}
            for key in sorted(groups, key=lambda k: [(v is not None, v) for v in k])] if group_by else [totals]
    return {"from": days[0], "to": days[1], "tz": tz, "group_by": list(group_by), "rows": rows, "totals": totals}


def numbers(report: Any) -> Any:
    """A report with its money as Decimals (JSON numbers with two decimals)."""
    def fix(row: dict[str, Any]) -> dict[str, Any]:
        return {k: Decimal(str(v)) if isinstance(v, float) and k in MONEY else v for k, v in row.items()}
    return {**report, "rows": [fix(r) for r in report["rows"]], "totals": fix(report["totals"])}


MONEY = {"payout", "payout_per_post", "avg_bid", "spend", "cost_per_lead", "revenue", "margin", "revenue_per_post",
         "returned_amount"}


@pytest.fixture
async def reported(buyers: BuyerServer, exchange: Any) -> tuple[Any, list[Sent], Any]:
    script(buyers)
    clock = ManualClock()
    ex = await exchange(config(buyers), clock=clock)
    traffic = await drive(ex, clock)
    return ex, traffic, facts(traffic, buyers)


async def report(ex: Any, who: str, **params: str) -> tuple[int, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return await ex.call("GET", f"/v1/reports?{query}", key=KEYS[who])


GROUPS: dict[str, list[tuple[str, ...]]] = {
    "ops": [(), ("day",), ("hour",), ("seller",), ("buyer",), ("campaign",), ("source", "sub_id"),
            ("state", "vertical"), ("day", "buyer", "campaign")],
    "acme": [(), ("day",), ("hour",), ("source",), ("sub_id", "state"), ("day", "vertical")],
    "b1": [(), ("day",), ("campaign",), ("seller",), ("hour", "state"), ("source", "vertical")],
}
GROUPS["other"] = GROUPS["acme"]
GROUPS["b2"] = GROUPS["b3"] = GROUPS["b1"]


@pytest.mark.parametrize("who", list(KEYS))
async def test_every_metric_of_every_role_matches_the_traffic(reported, who):
    ex, traffic, found = reported
    for group_by, tz, days, test in itertools.product(
            GROUPS[who], ("America/Los_Angeles", "UTC"), (("2026-12-01", "2026-12-01"), ("2026-12-01", "2026-12-02")),
            (False, True)):
        params = {"from": days[0], "to": days[1], "tz": tz, "group_by": ",".join(group_by)}
        if test:
            params["test"] = "true"
        status, answer = await report(ex, who, **params)
        assert status == 200, answer
        assert numbers(answer) == truth(found, traffic, who, group_by, tz, days, test), (who, params)


async def test_hand_counted_numbers_and_the_day_boundary_in_los_angeles(reported):
    """Counted by hand from the plans, as a check on the check: on 1 December in Los Angeles
    acme made pings 1-4 and 7 (its test ping left out), other ping 5."""
    ex, _, _ = reported
    status, day = await report(ex, "ops", **{"from": "2026-12-01", "to": "2026-12-01"})  # the exchange's zone: LA
    assert status == 200 and day["tz"] == "America/Los_Angeles"
    totals = day["totals"]
    assert (totals["pings"], totals["priced"], totals["posts"], totals["sold"]) == (6, 5, 4, 3)
    # A: c1 rejects 3.00, c3 buys 2.50 (acme gets 2.00); B: c2 buys 4.00 (3.20); D: c1 and c2 reject;
    # other's B: c2 buys 4.00 (4.00; c3's 1.00 is under other's min_bid, still a bid).
    assert (totals["revenue"], totals["payout"], totals["margin"]) == (10.5, 9.2, 1.3)
    assert (totals["offers"], totals["accepted"], totals["rejected"]) == (6, 3, 3)
    assert (totals["timeouts"], totals["errors"]) == (2, 4)  # c5 in A and C; c4 in A, B, C and B
    # pings 1, 2, 4, 5, 7 carry 3, 2, 2, 2, 2 bids: 3+2.5+2 + 4+1 + 5+1 + 4+1 + 1.5+0.75 = 25.75
    assert (totals["bids"], totals["avg_bid"], totals["bid_rate"]) == (11, 2.34, 0.8333)
    status, utc = await report(ex, "ops", **{"from": "2026-12-02", "to": "2026-12-02", "tz": "UTC"})
    assert utc["totals"]["pings"] == 9  # in UTC all of it is on the 2nd (the test ping left out)
    status, by_day = await report(ex, "ops", **{"from": "2026-12-01", "to": "2026-12-02", "group_by": "day"})
    assert [(r["day"], r["pings"]) for r in by_day["rows"]] == [("2026-12-01", 6), ("2026-12-02", 3)]
    status, by_hour = await report(ex, "acme", **{"from": "2026-12-01", "to": "2026-12-02", "group_by": "hour"})
    assert [(r["hour"], r["pings"]) for r in by_hour["rows"]] == [("2026-12-01T23:00:00-08:00", 5),
                                                                  ("2026-12-02T00:00:00-08:00", 2)]


async def test_the_default_range_is_today_in_the_exchanges_zone(reported):
    ex, _, _ = reported  # the clock stands at 00:30 on 2 December in Los Angeles
    status, today = await report(ex, "ops")
    assert status == 200 and (today["from"], today["to"], today["tz"]) == ("2026-12-02", "2026-12-02",
                                                                           "America/Los_Angeles")
    assert today["totals"]["pings"] == 3 and today["rows"] == [today["totals"]] and today["group_by"] == []
    status, tokyo = await report(ex, "ops", tz="Asia/Tokyo")
    assert (tokyo["from"], tokyo["totals"]["pings"]) == ("2026-12-02", 9)  # 16:30 and 17:30 there


async def test_each_role_gets_its_metrics_and_nothing_else(reported):
    ex, _, _ = reported
    for who, role in (("ops", Role.OPERATOR), ("acme", Role.SELLER), ("b2", Role.BUYER)):
        _, answer = await report(ex, who, **{"from": "2026-12-01", "to": "2026-12-02", "group_by": "day"})
        assert list(answer["totals"]) == list(METRICS[role])
        assert all(list(row) == ["day", *METRICS[role]] for row in answer["rows"])
    seller = set(METRICS[Role.SELLER])
    assert not seller & {"spend", "revenue", "margin", "bids", "avg_bid", "cost_per_lead", "revenue_per_post"}
    assert not set(METRICS[Role.BUYER]) & {"payout", "payout_per_post", "margin", "revenue", "bid_rate"}


async def test_a_half_hour_zone_labels_its_hours_by_their_real_start(reported):
    ex, _, _ = reported
    status, answer = await report(ex, "ops", **{"from": "2026-12-02", "to": "2026-12-02", "tz": "Asia/Kolkata",
                                                "group_by": "hour"})
    assert status == 200
    assert [(r["hour"], r["pings"]) for r in answer["rows"]] == [("2026-12-02T12:30:00+05:30", 6),
                                                                 ("2026-12-02T13:30:00+05:30", 3)]


async def test_csv_has_the_rows_and_neutralises_formulas(reported):
    ex, _, _ = reported
    params = {"from": "2026-12-01", "to": "2026-12-02", "group_by": "source"}
    _, as_json = await report(ex, "acme", **params)
    for way in ({"format": "csv"}, {}):
        headers = {} if way else {"Accept": "text/csv"}
        query = "&".join(f"{k}={v}" for k, v in {**params, **way}.items())
        async with ex.session.get(f"{ex.url}/v1/reports?{query}", headers={"Authorization": f"Bearer {SELLER_KEY}",
                                                                         **headers}) as response:
            assert response.status == 200 and response.content_type == "text/csv"
            assert response.headers["Content-Disposition"] == \
                'attachment; filename="pingpost-report-2026-12-01-2026-12-02.csv"'
            lines = list(csv.reader(io.StringIO(await response.text())))
        assert lines[0] == ["source", *METRICS[Role.SELLER]]
        shown = [{k: v for k, v in row.items()} for row in as_json["rows"]]
        assert [line[0] for line in lines[1:]] == ["" if r["source"] is None else
                                                   "'=cmd()" if r["source"] == "=cmd()" else r["source"] for r in shown]
        for line, row in zip(lines[1:], shown):
            assert line[1:] == [f"{row[m]:.2f}" if m in MONEY else str(row[m]) for m in METRICS[Role.SELLER]]
    async with ex.session.get(f"{ex.url}/v1/reports?format=json", headers={
            "Authorization": f"Bearer {SELLER_KEY}", "Accept": "text/csv"}) as response:
        assert response.content_type == "application/json"  # format wins over Accept


async def test_money_is_a_number_of_units_with_at_most_two_decimals(reported):
    ex, _, _ = reported
    async with ex.session.get(f"{ex.url}/v1/reports?from=2026-12-01&to=2026-12-02",
                              headers={"Authorization": f"Bearer {OPS_KEY}"}) as response:
        body = await response.text()
    shown = dict(re.findall(r'"(\w+)":(-?[0-9][0-9.]*)', body.split('"totals":')[1]))
    assert set(shown) == set(METRICS[Role.OPERATOR])
    for name, text in shown.items():
        assert re.fullmatch(r"-?[0-9]+(\.[0-9]{1,2})?" if name in MONEY else r"0(\.[0-9]{1,4})?|1(\.0)?" if "rate" in name
                            else "[0-9]+", text), (name, text)


# Scope: who sees what ----------------------------------------------------------------------


async def test_a_seller_never_sees_another_sellers_rows_or_buyers_money(reported):
    ex, traffic, _ = reported
    for who in ("acme", "other"):
        _, answer = await report(ex, who, **{"from": "2026-12-01", "to": "2026-12-02", "group_by": "source",
                                             "test": "true"})
        mine = {s.fields.get("source_id") for s in traffic if s.seller == who}
        assert {r["source"] for r in answer["rows"]} == mine
        assert answer["totals"]["pings"] == sum(s.seller == who for s in traffic)
    for dimension in ("seller", "buyer", "campaign"):
        status, answer = await report(ex, "acme", group_by=dimension)
        assert_error(status, answer, "forbidden", path="group_by")


async def test_a_buyer_never_sees_another_buyers_campaigns_or_sellers_payouts(reported):
    ex, _, _ = reported
    for who, own in (("b1", ["c1", "c3"]), ("b2", ["c2"]), ("b3", ["c4", "c5", "c7"])):
        _, answer = await report(ex, who, **{"from": "2026-12-01", "to": "2026-12-02", "group_by": "campaign",
                                             "test": "true"})
        assert [r["campaign"] for r in answer["rows"]] == own
    for dimension in ("buyer", "sub_id"):
        status, answer = await report(ex, "b1", group_by=dimension)
        assert_error(status, answer, "forbidden", path="group_by")


async def test_every_endpoint_by_every_role(reported):
    """Wrong role 403, someone else's record 404, no key 401, for every endpoint there is."""
    ex, traffic, _ = reported
    sold = next(s for s in traffic if s.seller == "acme" and s.sold_cents is not None)
    status, trace = await ex.trace(sold.ping_id)
    lead_id = trace["post"]["lead_id"]
    other_ping = next(s for s in traffic if s.seller == "other").ping_id
    only_b1 = next(s for s in traffic if s.case == "E").ping_id  # c1 (b1) and c7 (b3) were sent it; b2 never
    expected = {  # (method, path): {caller: status}
        ("POST", "/v1/ping"): {"ops": 403, "b1": 403, None: 401},
        ("GET", f"/v1/pings/{sold.ping_id}"): {"ops": 200, "acme": 200, "other": 404, "b1": 200, "b2": 200, None: 401},
        ("GET", f"/v1/pings/{other_ping}"): {"acme": 404, "other": 200},
        ("GET", f"/v1/pings/{only_b1}"): {"b1": 200, "b2": 404, "b3": 200},
        ("GET", f"/v1/leads/{lead_id}"): {"ops": 200, "acme": 200, "other": 404, "b1": 403, "b2": 403, None: 401},
        ("GET", "/v1/reports"): {"ops": 200, "acme": 200, "b1": 200, None: 401},
        ("GET", "/v1/reports?group_by=buyer"): {"ops": 200, "acme": 403, "b1": 403},
    }
    for (method, path), answers in expected.items():
        for who, status in answers.items():
            body = {"vertical": "auto", "zip": "90210"} if method == "POST" else None
            got, answer = await ex.call(method, path, body, key=KEYS[who] if who else None)
            assert got == status, (method, path, who, answer)
            if status != 200:
                assert_error(got, answer, {401: "unauthorized", 403: "forbidden", 404: "not_found"}[status])
    _, answer = await ex.call("GET", "/v1/reports", key="nope-not-a-key")
    assert_error(401, answer, "unauthorized")


async def test_a_seller_outside_its_allowed_ips_gets_no_report(buyers, exchange):
    made = config(buyers)
    made["sellers"][0]["allowed_ips"] = ["10.0.0.0/8"]
    ex = await exchange(made)
    assert_error(*(await report(ex, "acme")), "forbidden")
    assert (await report(ex, "other"))[0] == 200


# Parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize("query,path", [
    ("from=2026-13-01", "from"), ("from=yesterday", "from"), ("to=2026-1-1", "to"), ("from=2026-12-02&to=2026-12-01", "to"),
    ("from=2020-01-01&to=2026-01-01", "to"), ("tz=Mars/Olympus", "tz"), ("tz=../../etc/passwd", "tz"), ("tz=", "tz"),
    ("group_by=colour", "group_by"), ("group_by=day,day", "group_by"), ("group_by=", None), ("test=yes", "test"),
    ("format=xml", "format"), ("limit=5", "limit"), ("tz=UTC&tz=UTC", "tz"), ("group_by=campaign,sub_id", "group_by"),
    ("group_by=sub_id,buyer", "group_by"),
])
async def test_bad_parameters_are_422_with_their_name(buyers, exchange, query, path):
    ex = await exchange(config(buyers))
    status, answer = await ex.call("GET", f"/v1/reports?{query}", key=OPS_KEY)
    if path is None:
        assert status == 200
    else:
        assert_error(status, answer, "validation_error", path=path)


async def test_every_problem_is_named_at_once(buyers, exchange):
    ex = await exchange(config(buyers))
    status, answer = await ex.call("GET", "/v1/reports?from=x&tz=nowhere&test=1&extra=2", key=OPS_KEY)
    assert_error(status, answer, "validation_error")
    assert sorted(f["path"] for f in answer["error"]["fields"]) == ["extra", "from", "test", "tz"]


def test_dimensions_of_each_role_are_those_of_the_contract():
    assert DIMENSIONS[Role.SELLER] == ("hour", "day", "source", "sub_id", "vertical", "state")
    assert DIMENSIONS[Role.BUYER] == ("hour", "day", "campaign", "seller", "source", "vertical", "state")
    assert set(DIMENSIONS[Role.OPERATOR]) == {"hour", "day", "seller", "source", "sub_id", "vertical", "state",
                                              "buyer", "campaign"}
