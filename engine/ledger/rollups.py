"""Hourly and daily counters and running totals, kept by the ledger as records are committed.

Reports read these, never the traffic tables. A record's counts are worked out here, in
Python, from its rows (``count_rows``: only the outcomes and bids are decoded), added up in
memory across every record of a few seconds (``Counts``), and written with one upsert per
key (``writes``): a key's counts of many pings cost one statement, not one per campaign per
commit. When the counts are written, and how each record counts exactly once, is the
backends' affair (docs/ledger.md, "Rollups").

Counters are kept at three levels, so that a count of pings is never a sum of sends:

* ``PINGS`` (buyer and campaign ``''``): every ping and post, for operators and sellers;
* ``BUYERS`` (campaign ``''``): what a buyer's campaigns together were sent, once per ping;
* ``CAMPAIGNS``: what each campaign was sent.

The buyer and campaign levels are kept without sub_id (``''``): a buyer does not group by it,
and a seller's sub_ids times every campaign would multiply the rows the writer keeps.

The buyer and campaign levels are also kept as running totals (``rollup_running``: a row per
series and hour, everything from the series' start through that hour), so a sum over any
range is two lookups per buyer or campaign, however long the range.

Every count lands on the hour (and day) its ping was made, a post's and a sale's too, so each
hour's row is one funnel. Hours and days are UTC; a report turns them into the caller's time
zone. What follows a sale (an approved return, its credit and reversed payout, a lead's
outcome turning to or from converted) is added to the sale's own rows (``count_after_sale``)
in the transaction that records it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import msgspec

from ..schema import CampaignOutcome
from ..trace import (ACCEPTED, BID_OUTCOMES, SENT_OUTCOMES, SENT_PREFIX, PingRecord, PostRecord, RankedBid, was_offered,
                     was_sent)
from . import codec
from .codec import Row

PINGS, BUYERS, CAMPAIGNS = 0, 1, 2

#: With PostgreSQL, one transaction at a time adds to the counters, under this advisory lock
#: ("rollups" as an integer, apart from the migrations'): a new running row starts from the
#: latest one, which no other transaction may be changing meanwhile.
ROLLUP_LOCK = int.from_bytes(b"rollups", "big")

#: Grain -> (table, seconds per bucket).
GRAINS: dict[str, tuple[str, int]] = {"hour": ("rollup_hours", 3600), "day": ("rollup_days", 86400)}

#: A counter row's key, in primary-key order.
KEY = ("level", "bucket", "seller_id", "source_id", "sub_id", "vertical", "state", "buyer_id", "campaign_id", "test")
#: Every counter, in the order reads return them.
COUNTERS = ("pings", "priced", "posts", "offers", "accepted", "sold", "bids", "bid_cents", "timeouts", "errors",
            "revenue_cents", "payout_cents", "returns", "returned_cents", "reversed_cents", "conversions")
(_PINGS, _PRICED, _POSTS, _OFFERS, _ACCEPTED, _SOLD, _BIDS, _BID_CENTS, _TIMEOUTS, _ERRORS, _REVENUE,
 _PAYOUT) = range(12)
_WIDTH = len(COUNTERS)

#: A series of running totals: a buyer's campaigns together (level 1), or one campaign (level 2).
SERIES = ("level", "buyer_id", "campaign_id", "test")

#: A counter row's key (``KEY``), or a series' and an hour (``SERIES`` and a bucket).
Key = tuple[Any, ...]
#: Counts by key, added up across records before they are written.
Counts = dict[Key, list[int]]


_outcomes = msgspec.json.Decoder(list[CampaignOutcome]).decode
_bids = msgspec.json.Decoder(list[RankedBid]).decode
_PING = {name: at for at, name in enumerate(codec.TABLES["pings"])}
_POST = {name: at for at, name in enumerate(codec.TABLES["posts"])}


class _Ping(NamedTuple):
    """What counting needs of a ping row, decoded once: its hour, its dimensions (the buyer
    and campaign levels are kept without sub_id, which only the top level is grouped by),
    the campaign whose bid made the price, and the campaigns it was sent."""

    hour: int
    dims: tuple[str, str, str, str, str]
    test: bool
    top: str | None
    sent: list[CampaignOutcome]
    bids: list[RankedBid]


class _Post(NamedTuple):
    status: str
    price_cents: int | None
    lead_id: str | None
    offers: list[CampaignOutcome]


def _ping(row: Row) -> _Ping:
    bids = _bids(row[_PING["bids"]])
    return _Ping(int(row[_PING["created_at"]] // 3600 * 3600),
                 (row[_PING["seller_id"]], row[_PING["source_id"]] or "", row[_PING["sub_id"]] or "",
                  row[_PING["vertical"]], row[_PING["state"]] or ""),
                 bool(row[_PING["test"]]), bids[0].campaign_id if row[_PING["price_cents"]] is not None and bids
                 else None, [o for o in _outcomes(row[_PING["outcomes"]]) if was_sent(o.outcome)], bids)


def _ping_of(record: PingRecord) -> _Ping:
    """The same from the record the ledger was handed: nothing to decode."""
    ping, bids = record.ping, record.bids
    return _Ping(int(record.created_at // 3600 * 3600),
                 (record.seller_id, ping.source_id or "", ping.sub_id or "", ping.vertical, ping.state or ""),
                 record.test, bids[0].campaign_id if record.price_cents is not None and bids else None,
                 [o for o in record.outcomes if o.outcome in SENT_OUTCOMES or o.outcome.startswith(SENT_PREFIX)], bids)


def _rows(counts: Counts, ping: _Ping) -> Callable[[int, str, str], list[int]]:
    """The counter row of a level, buyer and campaign for this ping's hour and dimensions."""
    hour, (seller, source, sub, vertical, state), test = ping.hour, ping.dims, ping.test

    def row(level: int, buyer: str, campaign: str) -> list[int]:
        key = (level, hour, seller, source, sub if level == PINGS else "", vertical, state, buyer, campaign, test)
        found = counts.get(key)
        if found is None:
            found = counts[key] = [0] * _WIDTH
        return found
    return row


def _count_ping(counts: Counts, ping: _Ping) -> None:
    row = _rows(counts, ping)
    whole = row(PINGS, "", "")
    whole[_PINGS] += 1
    whole[_PRICED] += ping.top is not None
    buyers: dict[str, list[int]] = {}
    for o in ping.sent:
        buyer = buyers.get(o.buyer_id)
        if buyer is None:
            buyer = buyers[o.buyer_id] = row(BUYERS, o.buyer_id, "")
            buyer[_PINGS] += 1
        own = row(CAMPAIGNS, o.buyer_id, o.campaign_id)
        own[_PINGS] += 1
        if o.campaign_id == ping.top:
            own[_PRICED] += 1
            buyer[_PRICED] += 1
        outcome = o.outcome
        if outcome in BID_OUTCOMES:
            cents = round(o.bid * 100) if isinstance(o.bid, float) else 0
            for counted in (whole, buyer, own):
                counted[_BIDS] += 1
                counted[_BID_CENTS] += cents
        elif outcome == "timeout":
            for counted in (whole, buyer, own):
                counted[_TIMEOUTS] += 1
        elif outcome.startswith("error:"):
            for counted in (whole, buyer, own):
                counted[_ERRORS] += 1


def _count_post(counts: Counts, ping: _Ping, post: _Post) -> None:
    row = _rows(counts, ping)
    whole = row(PINGS, "", "")
    whole[_POSTS] += 1
    buyers: set[str] = set()
    for o in ping.sent:
        row(CAMPAIGNS, o.buyer_id, o.campaign_id)[_POSTS] += 1
        if o.buyer_id not in buyers:
            buyers.add(o.buyer_id)
            row(BUYERS, o.buyer_id, "")[_POSTS] += 1
    offers = post.offers
    for offer in offers:
        if was_offered(offer.outcome):
            for counted in (whole, row(BUYERS, offer.buyer_id, ""), row(CAMPAIGNS, offer.buyer_id, offer.campaign_id)):
                counted[_OFFERS] += 1
                counted[_ACCEPTED] += offer.outcome == ACCEPTED
    price = post.price_cents
    if post.status == "sold" and post.lead_id is not None and price is not None:
        bought = offers[-1]
        buyer_cents = next(bid.cents for bid in ping.bids if bid.campaign_id == bought.campaign_id)
        for counted in (whole, row(BUYERS, bought.buyer_id, ""), row(CAMPAIGNS, bought.buyer_id, bought.campaign_id)):
            counted[_SOLD] += 1
            counted[_REVENUE] += buyer_cents
            counted[_PAYOUT] += price


def _upsert(table: str, key: tuple[str, ...]) -> str:
    columns = (*key, *COUNTERS)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTERS))


_SAME = " AND ".join(f"{{a}}.{k} = {{b}}.{k}" for k in SERIES)


def _latest(before: str, a: str) -> str:
    """The bucket of series ``a``'s latest running row before ``before``."""
    return (f"(SELECT max(x.bucket) FROM rollup_running x WHERE {_SAME.format(a='x', b=a)} "
            f"AND x.bucket < {before})")


_UPSERTS = {grain: _upsert(table, KEY) for grain, (table, _) in GRAINS.items()}
_SERIES_ROW = f"INSERT INTO rollup_series ({', '.join(SERIES)}) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
#: A series' row for an hour, starting from its latest row before it (or zeros).
_RUNNING_ROW = (f"INSERT INTO rollup_running ({', '.join(SERIES)}, bucket, {', '.join(COUNTERS)}) "
                f"SELECT n.*, {', '.join(f'coalesce(p.{c}, 0)' for c in COUNTERS)} FROM (SELECT "
                "CAST(? AS SMALLINT) AS level, CAST(? AS TEXT) AS buyer_id, CAST(? AS TEXT) AS campaign_id, "
                "CAST(? AS BOOLEAN) AS test, CAST(? AS BIGINT) AS bucket) n "
                f"LEFT JOIN rollup_running p ON {_SAME.format(a='p', b='n')} AND p.bucket = {_latest('n.bucket', 'n')} "
                "WHERE true ON CONFLICT DO NOTHING")
#: A count of an hour reaches every running row from that hour on.
_RUNNING_ADD = (f"UPDATE rollup_running SET {', '.join(f'{c} = {c} + ?' for c in COUNTERS)} "
                "WHERE level = ? AND buyer_id = ? AND campaign_id = ? AND test = ? AND bucket >= ?")


def writes(counts: Counts) -> list[tuple[str, list[tuple[object, ...]]]]:
    """The statements (``?`` placeholders) and rows that add ``counts`` to every counter: the
    hourly and daily rows, then the running totals (every row an hour needs first, then the
    additions, so that a new row starts from what was there before these counts)."""
    days: Counts = {}
    running: Counts = {}
    for key, row in counts.items():
        for into, at in ((days, (key[0], key[1] // 86400 * 86400, *key[2:])),
                         (running, (key[0], key[7], key[8], key[9], key[1]) if key[0] != PINGS else None)):
            if at is None:
                continue
            total = into.get(at)
            if total is None:
                into[at] = row.copy()
            else:
                for i, value in enumerate(row):
                    total[i] += value
    ordered = sorted(running)
    return [
        (_UPSERTS["hour"], [(*key, *row) for key, row in counts.items()]),
        (_UPSERTS["day"], [(*key, *row) for key, row in days.items()]),
        (_SERIES_ROW, sorted({series[:4] for series in ordered})),
        (_RUNNING_ROW, ordered),
        (_RUNNING_ADD, [(*running[series], *series) for series in ordered]),
    ]


#: SQLite: the rowid of each table counted through.
MARKS = "rollup_marks"

#: The counters what follows a sale moves (an approved return, its money; a conversion won or lost).
AFTER_SALE = ("returns", "returned_cents", "reversed_cents", "conversions")
#: What a sale's counts are kept by: its ping's dimensions, its buyer and campaign.
SALE_DIMS = ("SELECT p.seller_id, p.source_id, p.sub_id, p.vertical, p.state, p.test, s.buyer_id, s.campaign_id "
             "FROM sales s JOIN pings p ON p.ping_id = s.ping_id WHERE s.lead_id = ?")


def hour_of(created_at: float) -> int:
    """The hourly bucket of a ping made at ``created_at``: where its counts land."""
    return int(created_at // 3600) * 3600


def count_after_sale(counts: Counts, hour: int, sale: Row, amounts: dict[str, int]) -> None:
    """What follows a sale (``amounts`` of ``AFTER_SALE``), on the sale's own rows at every
    level: its ping's hour (``hour``) and dimensions (``sale``, a row of ``SALE_DIMS``)."""
    seller, source, sub, vertical, state, test, buyer, campaign = sale
    for level, who, what, sub_id in ((PINGS, "", "", sub or ""), (BUYERS, buyer, "", ""), (CAMPAIGNS, buyer, campaign, "")):
        row = counts.setdefault((level, hour, seller, source or "", sub_id, vertical, state or "", who, what, bool(test)),
                                [0] * _WIDTH)
        for name, value in amounts.items():
            row[COUNTERS.index(name)] += value


def count_rows(counts: Counts, ping: Row | None, post: Row | None) -> None:
    """A ping (``post`` None) or a post of it, from the rows the books hold (a few dictionary
    lookups per campaign it was sent: this runs for every record). A post counts for the
    buyers and campaigns its ping was sent (the post of a ping it was sent), its offers, and
    the sale for the one that bought. A ping row retention already dropped counts nothing."""
    if ping is None:
        return
    if post is None:
        _count_ping(counts, _ping(ping))
    else:
        _count_post(counts, _ping(ping), _Post(post[_POST["status"]], post[_POST["price_cents"]],
                                              post[_POST["lead_id"]], _outcomes(post[_POST["offers"]])))


def count_records(counts: Counts, record: PingRecord, result: PostRecord | None) -> None:
    """``count_rows`` from the records the rows were made of."""
    if result is None:
        _count_ping(counts, _ping_of(record))
    else:
        _count_post(counts, _ping_of(record), _Post(result.status, result.price_cents, result.lead_id, result.offers))


def upgrade(postgres: bool) -> tuple[str, ...]:
    """Migration 5: from counting in every commit to counting behind the rows. The buyer and
    campaign levels lose sub_id (their rows merged into the ones without it), and SQLite's
    marks start past every row already there (books before it counted each row in its commit)."""
    made: list[str] = []
    kept = [k if k != "sub_id" else "''" for k in KEY]
    for table, _ in GRAINS.values():
        made.append(f"INSERT INTO {table} ({', '.join(KEY)}, {', '.join(COUNTERS)}) "
                    f"SELECT {', '.join(kept)}, {', '.join(f'sum({c})' for c in COUNTERS)} FROM {table} "
                    f"WHERE level > 0 AND sub_id <> '' GROUP BY {', '.join(k for k in KEY if k != 'sub_id')} "
                    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
                    + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTERS))
        made.append(f"DELETE FROM {table} WHERE level > 0 AND sub_id <> ''")
    if not postgres:
        made.append(f"CREATE TABLE {MARKS} (name TEXT PRIMARY KEY, counted_through INTEGER NOT NULL)")
        made.append(f"INSERT INTO {MARKS} SELECT 'pings', coalesce(max(rowid), 0) FROM pings")
        made.append(f"INSERT INTO {MARKS} SELECT 'posts', coalesce(max(rowid), 0) FROM posts")
    return tuple(made)


class Span(NamedTuple):
    """Buckets of one grain whose start is in [start, end), epoch seconds."""

    grain: str
    start: int
    end: int


class RollupQuery(NamedTuple):
    """Counter sums of one level over spans, grouped by ``keys`` (columns of ``KEY``)."""

    level: int
    spans: tuple[Span, ...]
    keys: tuple[str, ...]
    seller_id: str | None = None
    buyer_id: str | None = None
    test: bool = False


class RunningQuery(NamedTuple):
    """Counter sums of level 1 or 2 over the buckets starting in [start, end), from the running
    totals: two lookups per series whatever the range's length. Grouped by ``keys``, a
    subset of (buyer_id, campaign_id)."""

    level: int
    start: int
    end: int
    keys: tuple[str, ...]
    buyer_id: str | None = None
    test: bool = False


def select(query: RollupQuery | RunningQuery) -> tuple[str, list[object]]:
    """The read of a query, with ``?`` placeholders: (statement, parameters). The level goes
    in as a literal so that the planner can use the partial index."""
    keys = ", ".join(f"r.{k}" for k in query.keys)
    if isinstance(query, RunningQuery):
        assert set(query.keys) <= {"buyer_id", "campaign_id"} and query.level in (BUYERS, CAMPAIGNS)
        differences = ", ".join(f"CAST(coalesce(sum(e.{c} - coalesce(s.{c}, 0)), 0) AS BIGINT)" for c in COUNTERS)
        where = [f"r.level = {query.level}"]
        params: list[object] = [query.end, query.start]
        if query.buyer_id is not None:
            where.append("r.buyer_id = ?")
            params.append(query.buyer_id)
        if not query.test:
            where.append("NOT r.test")
        # Each series' two buckets first (materialized, so that every planner walks the series
        # and looks their rows up by key, never the other way round).
        statement = (f"WITH r AS MATERIALIZED (SELECT {', '.join(f'r.{k}' for k in SERIES)}, "
                     f"{_latest('?', 'r')} AS last, {_latest('?', 'r')} AS before "
                     f"FROM rollup_series r WHERE {' AND '.join(where)}) "
                     f"SELECT {keys + ', ' if keys else ''}{differences} FROM r "
                     f"JOIN rollup_running e ON {_SAME.format(a='e', b='r')} AND e.bucket = r.last "
                     f"LEFT JOIN rollup_running s ON {_SAME.format(a='s', b='r')} AND s.bucket = r.before")
        return statement + (f" GROUP BY {keys}" if keys else ""), params
    assert all(k in KEY for k in query.keys) and query.level in (PINGS, BUYERS, CAMPAIGNS)
    columns = ", ".join((*query.keys, *COUNTERS))
    parts: list[str] = []
    params = []
    for span in query.spans:
        where = [f"level = {query.level}", "bucket >= ?", "bucket < ?"]
        params += [span.start, span.end]
        if query.seller_id is not None:
            where.append("seller_id = ?")
            params.append(query.seller_id)
        if query.buyer_id is not None:
            where.append("buyer_id = ?")
            params.append(query.buyer_id)
        if not query.test:
            where.append("NOT test")
        parts.append(f"SELECT {columns} FROM {GRAINS[span.grain][0]} WHERE {' AND '.join(where)}")
    if not parts:
        parts.append(f"SELECT {columns} FROM rollup_hours WHERE 1 = 0")
    sums = ", ".join(f"CAST(coalesce(sum({c}), 0) AS BIGINT)" for c in COUNTERS)
    statement = f"SELECT {keys + ', ' if keys else ''}{sums} FROM ({' UNION ALL '.join(parts)}) r"
    return statement + (f" GROUP BY {keys}" if keys else ""), params
