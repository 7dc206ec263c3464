"""What a page shows of a report or a trace: labels, formatted cells, tiles, chart points.

The numbers come in as the report and trace endpoints answer them (plain values, money in
the currency's units); this module only chooses which of a principal's metrics a tile or
column shows and how each reads. It never widens a scope: a metric the principal does
not get is not in its report, and is not shown.
"""

from __future__ import annotations

import datetime
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from markupsafe import Markup
from msgspec import UNSET

from .. import money
from ..ledger import Purchase as Bought
from ..ledger import Return
from ..schema import CampaignOutcome, PingTrace
from . import numbers

LABELS = {
    "hour": "Hour", "day": "Day", "seller": "Seller", "source": "Source", "sub_id": "Sub id",
    "vertical": "Vertical", "state": "State", "buyer": "Buyer", "campaign": "Campaign",
    "pings": "Pings", "priced": "Priced", "bid_rate": "Bid rate", "bids": "Bids", "avg_bid": "Average bid",
    "posts": "Posts", "offers": "Offers", "accepted": "Accepted", "rejected": "Rejected", "accept_rate": "Accept rate",
    "sold": "Sold", "returns": "Returns", "returned_amount": "Returned", "conversions": "Conversions",
    "conversion_rate": "Conversion rate", "timeouts": "Timeouts", "errors": "Errors", "revenue": "Revenue",
    "spend": "Spend", "payout": "Payout", "margin": "Margin", "cost_per_lead": "Cost per lead",
    "payout_per_post": "Payout per post", "revenue_per_post": "Revenue per post",
}
MONEY = frozenset({"avg_bid", "revenue", "spend", "payout", "margin", "cost_per_lead", "payout_per_post",
                   "revenue_per_post", "returned_amount"})
RATES = frozenset({"bid_rate", "accept_rate", "conversion_rate"})

#: The tiles above the charts and the table's columns, in this order, each shown to the
#: principals whose reports carry it.
TILES = ("pings", "priced", "bid_rate", "avg_bid", "posts", "sold", "accept_rate", "revenue", "spend", "payout",
         "margin", "cost_per_lead", "payout_per_post")
COLUMNS = ("pings", "priced", "bids", "avg_bid", "posts", "offers", "accepted", "sold", "returns", "revenue", "spend",
           "payout", "margin")
#: The money a role's chart draws: the first of these its reports carry (the operator's
#: revenue, a buyer's spend, a seller's payout).
MONEY_SERIES = ("revenue", "spend", "payout")
#: A metric whose figure is another's under a second name, left out beside it: what the
#: operator's buyers spend is its revenue.
SAME_AS = {"spend": "revenue"}
#: Report dimensions that are time: the charts' axis, not a table's rows.
TIME = ("hour", "day")


def cell(metric: str, value: Any) -> str:
    if metric in MONEY:
        return numbers.money(value)
    if metric in RATES:
        return numbers.rate(value)
    return numbers.count(value)


class Tile(NamedTuple):
    metric: str
    label: str
    value: str


def shown(wanted: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """The wanted metrics the principal's reports carry, less those that repeat another."""
    return [m for m in wanted if m in metrics and SAME_AS.get(m) not in metrics]


def tiles(metrics: Sequence[str], totals: Mapping[str, Any]) -> list[Tile]:
    return [Tile(m, LABELS[m], cell(m, totals[m])) for m in shown(TILES, metrics)]


class Row(NamedTuple):
    name: str
    cells: list[str]


class Table(NamedTuple):
    columns: list[str]
    rows: list[Row]
    totals: list[str]


def dimension_value(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


def table(dimension: str, metrics: Sequence[str], rows: Iterable[Mapping[str, Any]],
          totals: Mapping[str, Any]) -> Table:
    columns = shown(COLUMNS, metrics)
    return Table(columns, [Row(dimension_value(row[dimension]), [cell(m, row[m]) for m in columns]) for row in rows],
                 [cell(m, totals[m]) for m in columns])


def money_metric(metrics: Sequence[str]) -> str:
    return next(m for m in MONEY_SERIES if m in metrics)


class Chart(NamedTuple):
    metric: str
    caption: str
    svg: Markup


# Time ------------------------------------------------------------------------------------


class Slot(NamedTuple):
    """One bar of a chart: the report's key for it, its axis label and its tooltip."""

    key: str
    label: str
    when: str


def slots(start: datetime.date, end: datetime.date, tz: datetime.tzinfo, unit: str) -> list[Slot]:
    """Every hour or day of the range (inclusive days in ``tz``), keyed as a report's rows
    name them, so a chart has a bar (perhaps of zero) for each. Hours are the counters' own:
    those that start between the range's local midnights (a day of a clock change has 23 or
    25; in a zone half an hour off UTC they start at :30)."""
    if unit == "day":
        dates = [start + datetime.timedelta(days=n) for n in range((end - start).days + 1)]
        return [Slot(d.isoformat(), f"{d:%b} {d.day}", f"{d:%a %b} {d.day} {d.year}") for d in dates]
    first = int(datetime.datetime.combine(start, datetime.time(), tz).timestamp())
    stop = int(datetime.datetime.combine(end + datetime.timedelta(days=1), datetime.time(), tz).timestamp())
    found = []
    for at in range(-(-first // 3600) * 3600, stop, 3600):
        local = datetime.datetime.fromtimestamp(at, tz)
        found.append(Slot(local.isoformat(), f"{local:%H:%M}", f"{local:%a %b} {local.day}, {local:%H:%M} {local:%Z}"))
    return found


# Traces ----------------------------------------------------------------------------------


class Outcome(NamedTuple):
    campaign_id: str
    buyer_id: str
    outcome: str
    bid: str
    ms: str


def _outcome(o: CampaignOutcome) -> Outcome:
    return Outcome(o.campaign_id, o.buyer_id, o.outcome, "" if o.bid is UNSET else numbers.money(o.bid),
                   "" if o.ms is UNSET else f"{o.ms:,.1f} ms")


class PostView(NamedTuple):
    status: str
    attempts: str
    price: str
    lead_id: str
    offers: list[Outcome]


class TraceView(NamedTuple):
    ping_id: str
    status: str
    test: bool
    price: str
    created_at: str
    auction_ms: str
    campaigns: list[Outcome]
    not_pinged: list[tuple[str, str]]
    post: PostView | None


def when(rfc3339: str, tz: datetime.tzinfo) -> str:
    """An answer's UTC time in the page's zone, to the second."""
    at = datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(tz)
    return f"{at:%Y-%m-%d %H:%M:%S %Z}"


def trace_view(trace: PingTrace, tz: datetime.tzinfo) -> TraceView:
    post = None
    if trace.post is not UNSET:
        p = trace.post
        post = PostView(p.status, numbers.count(p.attempts), "—" if p.price is UNSET else numbers.money(p.price),
                        "" if p.lead_id is UNSET else p.lead_id, [_outcome(o) for o in p.offers])
    not_pinged = [] if trace.not_pinged is UNSET else [(reason, numbers.count(n))
                                                       for reason, n in sorted(trace.not_pinged.items())]
    return TraceView(trace.ping_id, trace.status, trace.test, "—" if trace.price is UNSET else numbers.money(trace.price),
                     when(trace.created_at, tz), f"{trace.auction_ms:,.1f} ms", [_outcome(o) for o in trace.campaigns],
                     not_pinged, post)


#: A purchase's or a return's state, as the pages say it.
STATES = {"sold": "Sold", "returned": "Returned", "pending": "Return pending", "denied": "Return denied",
          "approved": "Approved"}


class Purchase(NamedTuple):
    sold_at: str
    lead_id: str
    campaign_id: str
    buyer_id: str
    price: str
    state: str  # a key of STATES
    returnable: bool


def _at(epoch_s: float, tz: datetime.tzinfo) -> str:
    return f"{datetime.datetime.fromtimestamp(epoch_s, tz):%Y-%m-%d %H:%M:%S %Z}"


def purchase(bought: Bought, tz: datetime.tzinfo, returnable: bool) -> Purchase:
    """A sale as a buyer reads it: what it paid (its own bid), when, in the page's zone, and
    what became of its return; ``returnable``: it may file one now."""
    sale, filed = bought.sale, bought.filed
    state = "sold" if filed is None else "returned" if filed.status == "approved" else filed.status
    return Purchase(_at(sale.sold_at, tz), sale.lead_id, sale.campaign_id, sale.buyer_id,
                    numbers.money(money.to_amount(sale.buyer_price_cents)), state, returnable and filed is None)


class FiledReturn(NamedTuple):
    return_id: str
    lead_id: str
    buyer_id: str
    seller_id: str
    campaign_id: str
    price: str
    reason: str
    note: str
    requested_at: str
    state: str
    decided: str


def filed_return(filed: Return, tz: datetime.tzinfo) -> FiledReturn:
    """A return as the operators' queue shows it: the buyer's price, the buyer's words."""
    decided = "" if filed.decided_at is None else f"{_at(filed.decided_at, tz)} by {filed.decided_by}"
    return FiledReturn(filed.return_id, filed.lead_id, filed.buyer_id, filed.seller_id, filed.campaign_id,
                       numbers.money(money.to_amount(filed.buyer_price_cents)), filed.reason, filed.note or "",
                       _at(filed.requested_at, tz), filed.status, decided)
