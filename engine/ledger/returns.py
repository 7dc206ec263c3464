"""What follows a sale in the books: returns, the money they move, outcomes; a buyer's purchases.

A sale is never edited. A return is a row of its own; approving it books money entries
(the buyer's price credited back to the buyer, and, when the seller's payout is reversed,
the seller's price debited from the seller) and adds to the sale's counters, all in the
transaction that approves it. An outcome keeps only a lead's latest word, and moves the
sale's ``conversions`` counter when the lead turns converted or stops being so.

Every write here is one transaction (``steps``: the same code on SQLite and PostgreSQL) that
reads what it decides from. Filing a return locks its buyer (``BUYER_RETURNS``) before it
counts the month's approved returns and purchases, so two returns at once, on any worker or
host, are decided one after the other and the month's limit holds; ``lead_id`` is unique in
``returns``, so a lead has one return whatever races. Counters are added last, under the
counters' own lock (``rollups.ROLLUP_LOCK``), as the forwarder adds them.
"""

from __future__ import annotations

import enum
from typing import Callable, NamedTuple

import msgspec

from ..schema import Lead, PingFields
from . import codec
from .codec import Row, Sale
from . import rollups
from .rollups import ROLLUP_LOCK, SALE_DIMS, hour_of
from .steps import Lock, Steps, Transaction, q

APPROVED, PENDING, DENIED = "approved", "pending", "denied"
STATUSES = (APPROVED, PENDING, DENIED)
#: A money entry's kind: the buyer's price back to the buyer; the seller's price back from the seller.
BUYER_CREDIT, SELLER_DEBIT = "buyer_credit", "seller_debit"
CONVERTED = "converted"
#: Lock spaces: one buyer's returns (its month's limit); one lead's outcome.
BUYER_RETURNS, LEAD_OUTCOME = 1, 2


class Return(msgspec.Struct, frozen=True, kw_only=True):
    """A return as the books keep it, with the sale's ids, prices (cents) and time copied in."""

    return_id: str
    lead_id: str
    ping_id: str
    buyer_id: str
    seller_id: str
    campaign_id: str
    test: bool
    sold_at: float
    buyer_price_cents: int
    seller_price_cents: int
    reason: str
    note: str | None
    status: str
    requested_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    decision_note: str | None = None


COLUMNS = tuple(field.name for field in msgspec.structs.fields(Return))
_TEST = COLUMNS.index("test")


def return_of(row: Row) -> Return:
    values = list(row)
    values[_TEST] = bool(values[_TEST])
    return Return(**dict(zip(COLUMNS, values)))


class NotYet(enum.Enum):
    """The sale (or its ping) is not in these books yet: with PostgreSQL, still in a host's
    journal. The caller waits for it to be forwarded and tries again."""

    SALE = "not yet in the books"


class NewReturn(NamedTuple):
    """A return to file. ``month`` is the [start, end) of the sale's calendar month, whose
    purchases and approved returns the limit counts; ``rate`` the buyer's
    ``max_return_rate`` as an exact fraction (numerator, denominator)."""

    return_id: str
    sale: Sale
    reason: str
    note: str | None
    at: float
    month: tuple[float, float]
    rate: tuple[int, int]
    reverse_payout: bool


class Purchase(NamedTuple):
    """A sale as its buyer's list shows it: the lead as posted (None once erased), its ping's
    fields (the rest of what the buyer was sent), and its return if one was filed."""

    sale: Sale
    lead: Lead | None
    ping: PingFields | None
    filed: Return | None


class PurchaseQuery(NamedTuple):
    """Sales in [since, until), newest first; of one buyer (None: every buyer); test sales
    too when ``test``; only those after ``before`` (sold_at, lead_id) in that order."""

    since: float
    until: float
    buyer_id: str | None
    test: bool
    before: tuple[float, str] | None
    limit: int


class ReturnQuery(NamedTuple):
    """Returns in the order they were filed, oldest first; of one status, buyer or seller
    when given; only those after ``after`` (requested_at, return_id)."""

    status: str | None
    buyer_id: str | None
    seller_id: str | None
    after: tuple[float, str] | None
    limit: int


_SALE = ", ".join(f"s.{c}" for c in codec.TABLES["sales"])
_RETURN = ", ".join(f"r.{c}" for c in COLUMNS)
_WIDTH = len(codec.TABLES["sales"])
_SELECT_RETURN = f"SELECT {_RETURN} FROM returns r"


#: Opens a lead data row's (lead_id, key_wrapped, data): ``Ledger.open_lead``.
OpenLead = Callable[[str, bytes | None, bytes | None], Lead | None]


def purchases(query: PurchaseQuery, open_lead: OpenLead) -> Transaction[list[Purchase]]:
    def steps() -> Steps[list[Purchase]]:
        where = ["s.sold_at >= ?", "s.sold_at < ?"]
        params: list[object] = [query.since, query.until]
        if query.buyer_id is not None:
            where.append("s.buyer_id = ?")
            params.append(query.buyer_id)
        if not query.test:
            where.append("NOT s.test")
        if query.before is not None:
            where.append("(s.sold_at < ? OR (s.sold_at = ? AND s.lead_id < ?))")
            params += [query.before[0], query.before[0], query.before[1]]
        rows = yield q(f"SELECT {_SALE}, d.key_wrapped, d.data, p.fields, {_RETURN} FROM sales s "
                       "LEFT JOIN lead_data d ON d.lead_id = s.lead_id LEFT JOIN pings p ON p.ping_id = s.ping_id "
                       f"LEFT JOIN returns r ON r.lead_id = s.lead_id WHERE {' AND '.join(where)} "
                       "ORDER BY s.sold_at DESC, s.lead_id DESC LIMIT ?", *params, query.limit)
        return [purchase_of(row, open_lead) for row in rows]
    return steps


def wanted(query: PurchaseQuery, sale: Sale) -> bool:
    """Whether ``purchases(query)`` picks this sale; for sales not yet in a database."""
    return (query.since <= sale.sold_at < query.until and query.buyer_id in (None, sale.buyer_id)
            and (query.test or not sale.test) and (query.before is None or (sale.sold_at, sale.lead_id) < query.before))


def purchase_of(row: Row, open_lead: OpenLead) -> Purchase:
    """A row of ``purchases``: the sale's columns, the lead's data, the ping's fields, the return's."""
    wrapped, data, fields = row[_WIDTH:_WIDTH + 3]
    filed = row[_WIDTH + 3:]
    sale = codec.sale_of(row[:_WIDTH])
    return Purchase(sale, open_lead(sale.lead_id, wrapped, data),
                    None if fields is None else codec.fields_from(fields),
                    None if filed[0] is None else return_of(filed))


def returns(query: ReturnQuery) -> Transaction[list[Return]]:
    def steps() -> Steps[list[Return]]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (("status", query.status), ("buyer_id", query.buyer_id),
                              ("seller_id", query.seller_id)):
            if value is not None:
                where.append(f"r.{column} = ?")
                params.append(value)
        if query.after is not None:
            where.append("(r.requested_at > ? OR (r.requested_at = ? AND r.return_id > ?))")
            params += [query.after[0], query.after[0], query.after[1]]
        rows = yield q(f"{_SELECT_RETURN}{' WHERE ' + ' AND '.join(where) if where else ''} "
                       "ORDER BY r.requested_at, r.return_id LIMIT ?", *params, query.limit)
        return [return_of(row) for row in rows]
    return steps


def find_return(*, return_id: str | None = None, lead_id: str | None = None) -> Transaction[Return | None]:
    """The return of that id, or of that lead."""
    column, key = ("return_id", return_id) if return_id is not None else ("lead_id", lead_id)

    def steps() -> Steps[Return | None]:
        rows = yield q(f"{_SELECT_RETURN} WHERE r.{column} = ?", key)
        return return_of(rows[0]) if rows else None
    return steps


def _ping_made(lead_id: str) -> Steps[float | None]:
    """When the sale's ping was made; None while the sale or its ping is not in these books."""
    rows = yield q("SELECT p.created_at FROM sales s JOIN pings p ON p.ping_id = s.ping_id WHERE s.lead_id = ?",
                   lead_id)
    return float(rows[0][0]) if rows else None


def _count(lead_id: str, made: float, amounts: dict[str, int]) -> Steps[None]:
    """Add ``amounts`` (of ``rollups.AFTER_SALE``) to the sale's counters, on its ping's hour
    and day and in the running totals, under the counters' own lock (taken last: no
    transaction waits for another lock holding it)."""
    yield Lock(ROLLUP_LOCK)
    sale = yield q(SALE_DIMS, lead_id)
    counts: rollups.Counts = {}
    rollups.count_after_sale(counts, hour_of(made), sale[0], amounts)
    for statement, rows in rollups.writes(counts):
        for row in rows:
            yield q(statement, *row)


def _book(filed: Return, at: float, reverse_payout: bool, made: float) -> Steps[None]:
    """An approved return's money: the buyer's credit, the seller's debit if reversed, counters."""
    entries = [(BUYER_CREDIT, filed.buyer_id, filed.buyer_price_cents)]
    if reverse_payout:
        entries.append((SELLER_DEBIT, filed.seller_id, filed.seller_price_cents))
    for kind, party, cents in entries:
        yield q("INSERT INTO money (entry_id, return_id, lead_id, kind, party_id, cents, at, test) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", f"{filed.return_id}:{kind}", filed.return_id, filed.lead_id,
                kind, party, cents, at, filed.test)
    yield from _count(filed.lead_id, made, {"returns": 1, "returned_cents": filed.buyer_price_cents,
                                            "reversed_cents": filed.seller_price_cents if reverse_payout else 0})


def add_return(new: NewReturn) -> Transaction[Return | NotYet]:
    """File a return: the lead's first return if it has one already; else approved while the
    month's approved returns, this one included, stay within the rate of its purchases,
    pending otherwise."""
    sale = new.sale

    def steps() -> Steps[Return | NotYet]:
        yield Lock(BUYER_RETURNS, sale.buyer_id)
        found = yield q(f"{_SELECT_RETURN} WHERE r.lead_id = ?", sale.lead_id)
        if found:
            return return_of(found[0])
        made = yield from _ping_made(sale.lead_id)
        if made is None:
            return NotYet.SALE
        start, end = new.month
        ((approved,),) = yield q("SELECT count(*) FROM returns WHERE buyer_id = ? AND test = ? AND sold_at >= ? "
                                 "AND sold_at < ? AND status = ?", sale.buyer_id, sale.test, start, end, APPROVED)
        ((bought,),) = yield q("SELECT count(*) FROM sales WHERE buyer_id = ? AND test = ? AND sold_at >= ? "
                               "AND sold_at < ?", sale.buyer_id, sale.test, start, end)
        numerator, denominator = new.rate
        approve = (approved + 1) * denominator <= numerator * bought
        filed = Return(return_id=new.return_id, lead_id=sale.lead_id, ping_id=sale.ping_id, buyer_id=sale.buyer_id,
                       seller_id=sale.seller_id, campaign_id=sale.campaign_id, test=sale.test, sold_at=sale.sold_at,
                       buyer_price_cents=sale.buyer_price_cents, seller_price_cents=sale.seller_price_cents,
                       reason=new.reason, note=new.note, status=APPROVED if approve else PENDING,
                       requested_at=new.at, decided_at=new.at if approve else None,
                       decided_by="auto" if approve else None)
        yield q(f"INSERT INTO returns ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                *msgspec.structs.astuple(filed))
        if approve:
            yield from _book(filed, new.at, new.reverse_payout, made)
        return filed
    return steps


def decide_return(return_id: str, approve: bool, by: str, note: str | None, at: float,
                  reverse_payout: bool) -> Transaction[Return | None]:
    """An operator's decision on a pending return (approving books its money); a return
    already decided stays as it was and is answered as it is. None for an unknown id. The
    buyer is locked as for filing, so a return filed meanwhile counts this approval."""
    def steps() -> Steps[Return | None]:
        rows = yield q(f"{_SELECT_RETURN} WHERE r.return_id = ?", return_id)
        if not rows:
            return None
        yield Lock(BUYER_RETURNS, return_of(rows[0]).buyer_id)
        rows = yield q(f"{_SELECT_RETURN} WHERE r.return_id = ?", return_id)
        filed = return_of(rows[0])
        if filed.status != PENDING:
            return filed
        decided = msgspec.structs.replace(filed, status=APPROVED if approve else DENIED, decided_at=at,
                                          decided_by=by, decision_note=note)
        yield q("UPDATE returns SET status = ?, decided_at = ?, decided_by = ?, decision_note = ? WHERE return_id = ?",
                decided.status, at, by, note, return_id)
        if approve:
            made = yield from _ping_made(filed.lead_id)
            assert made is not None, "a return is filed only once its sale and ping are in the books"
            yield from _book(decided, at, reverse_payout, made)
        return decided
    return steps


def set_outcome(sale: Sale, outcome: str, value_cents: int | None, at: float) -> Transaction[None | NotYet]:
    """The lead's latest outcome; ``conversions`` follows it in and out of converted."""
    def steps() -> Steps[None | NotYet]:
        yield Lock(LEAD_OUTCOME, sale.lead_id)
        made = yield from _ping_made(sale.lead_id)
        if made is None:
            return NotYet.SALE
        before = yield q("SELECT outcome FROM outcomes WHERE lead_id = ?", sale.lead_id)
        yield q("INSERT INTO outcomes (lead_id, buyer_id, outcome, value_cents, reported_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (lead_id) DO UPDATE SET outcome = excluded.outcome, value_cents = excluded.value_cents, "
                "reported_at = excluded.reported_at", sale.lead_id, sale.buyer_id, outcome, value_cents, at)
        turned = (outcome == CONVERTED) - (bool(before) and before[0][0] == CONVERTED)
        if turned:
            yield from _count(sale.lead_id, made, {"conversions": turned})
        return None
    return steps
