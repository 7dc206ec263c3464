"""``GET /v1/reports``: the caller's numbers over days in a time zone, from the rollups.

``parse`` turns the query's parameters into a ``ReportQuery`` (every bad one named at once:
422 validation_error, the parameter as the field path; a dimension outside the caller's role
is 403), ``build`` reads the counters the ledger keeps (never the traffic) for the
principal's scope and computes its role's metrics, ``to_csv`` writes a report as CSV.

Counters are kept per UTC hour and per UTC day. A report's days are the caller's: a day is
every hourly bucket that starts between its local midnights (23, 24 or 25 of them across a
change of clocks). Whole UTC days inside the range are read from the daily counters when
the report does not group by hour, or groups by day where the local day is that UTC day;
the rest from the hourly ones. In a zone whose offset is not a whole number of hours (India,
Nepal, Newfoundland...) an hourly bucket starts at, say, 00:30 local time, and the day runs
from 00:30 to 00:30: hours are labelled with their real local start.
"""

from __future__ import annotations

import csv
import datetime
import io
import zoneinfo
from dataclasses import dataclass
from typing import Any, Awaitable, Iterable

import msgspec

from . import money
from .access import METRICS, Principal, Role
from .errors import ApiError, Code, refused
from .ledger import Ledger, RollupQuery, RunningQuery, Span
from .ledger.rollups import BUYERS, CAMPAIGNS, COUNTERS, PINGS
from .schema import FieldError

#: The longest range one report covers, in days.
MAX_DAYS = 731
#: Every dimension and the rollup column it groups (hour and day group by bucket).
COLUMNS = {"hour": "bucket", "day": "bucket", "seller": "seller_id", "source": "source_id", "sub_id": "sub_id",
           "vertical": "vertical", "state": "state", "buyer": "buyer_id", "campaign": "campaign_id"}
PARAMETERS = ("from", "to", "tz", "group_by", "test", "format")
#: The keys the running totals are kept by (besides their level).
_SERIES = {"buyer_id", "campaign_id"}

_money = money.to_amount


def _per(cents: int, count: int) -> float:
    """Money per item, rounded half up (away from zero) to the cent; 0 when there is no item."""
    if not count:
        return 0.0
    whole = (2 * abs(cents) + count) // (2 * count)
    return _money(whole if cents >= 0 else -whole)


def _rate(part: int, whole: int) -> float:
    """A share from 0 to 1, to four decimals; 0 when the whole is 0."""
    return round(part / whole, 4) if whole else 0.0


#: The metrics that are money: in JSON numbers of units with at most two decimals, as every
#: amount of the API (12.5 is 12.50); in CSV written with two.
MONEY = frozenset({"payout", "payout_per_post", "avg_bid", "spend", "cost_per_lead", "revenue", "margin",
                   "revenue_per_post", "returned_amount"})


def metrics_of(counters: tuple[int, ...]) -> dict[str, Any]:
    """Every metric of a group, from its counters (in ``rollups.COUNTERS`` order), in the
    operator's order. One function with locals, not a table of lambdas: a report of 10,000
    campaigns computes it 10,000 times."""
    (pings, priced, posts, offers, accepted, sold, bids, bid_cents, timeouts, errors, revenue_cents, payout_cents,
     returns, returned_cents, reversed_cents, conversions) = counters
    spend = revenue_cents - returned_cents  # what buyers pay: their prices, net of returned prices credited back
    payout = payout_cents - reversed_cents  # what sellers are paid: their prices, net of reversed payouts
    spent = _money(spend)
    return {
        "pings": pings, "priced": priced, "posts": posts, "sold": sold, "returns": returns, "conversions": conversions,
        "payout": _money(payout), "payout_per_post": _per(payout, posts),
        "bids": bids, "avg_bid": _per(bid_cents, bids), "offers": offers, "accepted": accepted,
        "accept_rate": _rate(accepted, offers), "spend": spent, "cost_per_lead": _per(spend, sold),
        "conversion_rate": _rate(conversions, sold), "timeouts": timeouts, "errors": errors,
        "bid_rate": _rate(priced, pings), "rejected": offers - accepted, "revenue": spent,
        "margin": _money(spend - payout), "revenue_per_post": _per(spend, posts),
        "returned_amount": _money(returned_cents),
    }


assert tuple(metrics_of((0,) * len(COUNTERS))) == METRICS[Role.OPERATOR]
assert all(set(names) <= set(METRICS[Role.OPERATOR]) for names in METRICS.values())


@dataclass(frozen=True, slots=True)
class ReportQuery:
    start: datetime.date
    end: datetime.date
    tz: str
    group_by: tuple[str, ...]
    test: bool
    csv: bool


def parse(params: Iterable[tuple[str, str]], principal: Principal, default_tz: str, now: float,
          accept: str = "") -> ReportQuery:
    """The report asked for. ``params`` are the query's (name, value) pairs in order; ``accept``
    the Accept header (``text/csv`` asks for CSV unless ``format`` says otherwise)."""
    problems: list[FieldError] = []
    given = read_params(params, PARAMETERS, "reports", problems)
    tz = given.get("tz", default_tz)
    zone = zone_of(tz, problems)
    today = datetime.datetime.fromtimestamp(now, zone or datetime.timezone.utc).date()
    start, end = date_of(given, "from", problems), date_of(given, "to", problems)
    if start is None and end is None:
        start = end = today
    elif start is None:
        start = end
    elif end is None:
        end = max(start, today)
    if start is not None and end is not None:
        if end < start:
            problems.append(FieldError("to", "must not be before from"))
        elif (end - start).days >= MAX_DAYS:
            problems.append(FieldError("to" if "to" in given else "from",
                                       f"the range must be at most {MAX_DAYS} days"))
    group_by = _group_by(given.get("group_by", ""), principal, problems)
    test = given.get("test", "false")
    if test not in ("true", "false"):
        problems.append(FieldError("test", "must be true or false"))
    fmt = given.get("format")
    if fmt not in (None, "json", "csv"):
        problems.append(FieldError("format", "must be json or csv"))
    if problems:
        raise refused(problems)
    assert start is not None and end is not None
    return ReportQuery(start, end, tz, group_by, test == "true",
                       fmt == "csv" or (fmt is None and "text/csv" in accept.lower()))


def read_params(params: Iterable[tuple[str, str]], allowed: tuple[str, ...], what: str,
                problems: list[FieldError]) -> dict[str, str]:
    """A query's parameters by name; one not in ``allowed``, or given twice, goes to ``problems``."""
    given: dict[str, str] = {}
    for name, value in params:
        if name not in allowed:
            problems.append(FieldError(name, f"is not a parameter of {what}: " + ", ".join(allowed)))
        elif name in given:
            problems.append(FieldError(name, "is given more than once"))
        given[name] = value
    return given


def zone_of(name: str, problems: list[FieldError]) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        problems.append(FieldError("tz", "must be a time zone name, such as America/New_York or UTC"))
        return None


def date_of(given: dict[str, str], name: str, problems: list[FieldError]) -> datetime.date | None:
    value = given.get(name)
    if value is None:
        return None
    try:
        if len(value) == 10:
            return datetime.date.fromisoformat(value)
    except ValueError:
        pass
    problems.append(FieldError(name, "must be a date written YYYY-MM-DD"))
    return None


def _group_by(value: str, principal: Principal, problems: list[FieldError]) -> tuple[str, ...]:
    """The dimensions asked for; one the caller's role may not group by is 403 (it asks to see
    what is not the caller's), a word that is no dimension 422."""
    if not value:
        return ()
    dims = tuple(value.split(","))
    unknown = [d for d in dims if d not in COLUMNS]
    if unknown:
        problems.append(FieldError("group_by", f"unknown dimension {unknown[0]!r}: one of {', '.join(COLUMNS)}"))
    elif len(set(dims)) != len(dims):
        problems.append(FieldError("group_by", "names a dimension more than once"))
    elif "sub_id" in dims and ("buyer" in dims or "campaign" in dims):
        problems.append(FieldError("group_by", "sub_id cannot be combined with buyer or campaign: a buyer's and a "
                                               "campaign's counters are kept without it"))
    else:
        outside = [d for d in dims if d not in principal.dimensions]
        if outside:
            raise ApiError(Code.FORBIDDEN, f"a {principal.role} may not group by {outside[0]}",
                           [FieldError("group_by", f"a {principal.role} groups by {', '.join(principal.dimensions)}")])
    return dims


# Building --------------------------------------------------------------------------------


class Report(msgspec.Struct, kw_only=True):
    """The answer: ``rows`` one per group with data (with no group_by, one row: the totals),
    each its dimensions then its metrics; ``totals`` the caller's over the whole range."""

    from_: str = msgspec.field(name="from")
    to: str
    tz: str
    group_by: list[str]
    rows: list[dict[str, Any]]
    totals: dict[str, Any]


def _days(query: ReportQuery, zone: datetime.tzinfo) -> list[tuple[int, int]]:
    """Each day's [start, end) in epoch seconds: from its local midnight to the next."""
    def midnight(day: datetime.date) -> int:
        return int(datetime.datetime.combine(day, datetime.time(), zone).timestamp())
    count = (query.end - query.start).days + 1
    edges = [midnight(query.start + datetime.timedelta(days=i)) for i in range(count + 1)]
    return list(zip(edges, edges[1:]))


def spans(days: list[tuple[int, int]], by: str | None) -> tuple[Span, ...]:
    """Which counters to read: hourly ones for grouping by hour; else daily ones for whole UTC
    days inside the range (grouping by day: for local days that are UTC days), hourly around them."""
    start, end = days[0][0], days[-1][1]
    if by == "hour":
        pieces = [Span("hour", start, end)]
    elif by == "day":
        pieces = [Span("day" if s % 86400 == 0 and e - s == 86400 else "hour", s, e) for s, e in days]
    else:
        first, last = -(-start // 86400) * 86400, end // 86400 * 86400
        pieces = ([Span("hour", start, first), Span("day", first, last), Span("hour", last, end)] if first < last
                  else [Span("hour", start, end)])
    merged: list[Span] = []
    for piece in pieces:
        if piece.start >= piece.end:
            continue
        if merged and merged[-1].grain == piece.grain and merged[-1].end == piece.start:
            merged[-1] = Span(piece.grain, merged[-1].start, piece.end)
        else:
            merged.append(piece)
    return tuple(merged)


def _level(principal: Principal, group_by: tuple[str, ...]) -> int:
    if "campaign" in group_by:
        return CAMPAIGNS
    if principal.role is Role.BUYER or "buyer" in group_by:
        return BUYERS
    return PINGS


def _metrics(counters: tuple[int, ...], names: tuple[str, ...]) -> dict[str, Any]:
    every = metrics_of(counters)
    return every if names == METRICS[Role.OPERATOR] else {name: every[name] for name in names}


async def build(ledger: Ledger, principal: Principal, query: ReportQuery) -> Report:
    """The report for ``principal``: its level of counters (a buyer's own, never a sum of
    other buyers'), filtered to its rows, its role's metrics only."""
    zone = zoneinfo.ZoneInfo(query.tz)
    days = _days(query, zone)
    by = "hour" if "hour" in query.group_by else "day" if "day" in query.group_by else None
    keys = tuple(dict.fromkeys(COLUMNS[d] for d in query.group_by))
    names = principal.metrics

    def read(level: int, by: str | None, keys: tuple[str, ...]) -> Awaitable[list[tuple[Any, ...]]]:
        """A buyer's or a campaign's counters over the whole range, grouped by no more than
        buyer and campaign, from the running totals (two lookups each, however long the
        range); the rest from the hourly and daily counters."""
        if level != PINGS and by is None and set(keys) <= _SERIES:
            return ledger.rollups(RunningQuery(level, days[0][0], days[-1][1], keys, principal.buyer_id, query.test))
        return ledger.rollups(RollupQuery(level, spans(days, by), keys, principal.seller_id, principal.buyer_id,
                                          query.test))

    (total,) = await read(BUYERS if principal.role is Role.BUYER else PINGS, None, ())
    totals = _metrics(tuple(total), names)
    if not query.group_by:
        rows = [totals]
    else:
        found = await read(_level(principal, query.group_by), by, keys)
        rows = _rows(found, keys, query.group_by, zone, names)
    return Report(from_=query.start.isoformat(), to=query.end.isoformat(), tz=query.tz,
                  group_by=list(query.group_by), rows=rows, totals=totals)


def _rows(found: list[tuple[Any, ...]], keys: tuple[str, ...], group_by: tuple[str, ...], zone: datetime.tzinfo,
          names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Groups of counter rows: buckets turned into the caller's hours or days (several hourly
    and daily buckets fall in one day, whose counters are added up), sorted by the dimensions
    in the order asked (an hour by its start, a day by its date, an absent value first)."""
    positions = [keys.index(COLUMNS[d]) for d in group_by]
    days = [i for i, d in enumerate(group_by) if d == "day"]
    ordinals: dict[int, int] = {}
    width = len(keys)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for found_row in found:
        label = [found_row[p] for p in positions]
        for i in days:
            bucket = label[i]
            if bucket not in ordinals:
                ordinals[bucket] = datetime.datetime.fromtimestamp(bucket, zone).date().toordinal()
            label[i] = ordinals[bucket]
        key = tuple(label)
        if not any(found_row[width:]):
            continue  # a series of the running totals with nothing in the range
        sums = groups.get(key)
        if sums is None:
            groups[key] = list(found_row[width:])
        else:
            groups[key] = [a + b for a, b in zip(sums, found_row[width:])]
    rows: list[dict[str, Any]] = []
    for key in sorted(groups):
        row: dict[str, Any] = {d: _shown(d, value, zone) for d, value in zip(group_by, key)}
        row.update(_metrics(tuple(groups[key]), names))
        rows.append(row)
    return rows


def _shown(dimension: str, value: Any, zone: datetime.tzinfo) -> str | None:
    if dimension == "hour":
        return datetime.datetime.fromtimestamp(value, zone).isoformat()
    if dimension == "day":
        return datetime.date.fromordinal(value).isoformat()
    return value or None


_encode = msgspec.json.Encoder().encode


def to_json(report: Report) -> bytes:
    return _encode(report)


#: A cell starting with one of these is formula-like to a spreadsheet: written with a ' in front.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def to_csv(report: Report) -> bytes:
    """The rows as CSV: a header line (dimensions, then metrics) and one line per row; absent
    values empty. With no group_by the one row is the totals. Text a spreadsheet would read as
    a formula (a seller's source_id, say) is prefixed with '."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = [*report.group_by, *report.totals]
    writer.writerow(columns)
    for row in report.rows:
        writer.writerow([_cell(row[c], c in MONEY) for c in columns])
    return out.getvalue().encode()


def _cell(value: Any, is_money: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA) else value
    return f"{value:.2f}" if is_money else str(value)


def csv_name(report: Report) -> str:
    return f"pingpost-report-{report.from_}-{report.to}.csv"

