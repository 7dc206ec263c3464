"""``GET /v1/buyer/leads``: a buyer's purchases from the books, newest first, a page at a time.

Each purchase carries the lead as it was posted to the buyer (the ping's fields with the
lead's over them, as the buyer's post had it) and its status: ``returned`` once a return
of it was approved. A lead whose personal data was erased is listed with ``lead: null`` and
``erased: true``; the sale itself stays. Pages are cut by a cursor (``cursor``), not an
offset, so sales made while a buyer pages never shift what it has yet to read.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Iterable

import msgspec

from . import cursor, money, reports
from .access import Principal, Role
from .auction import buyer_lead
from .errors import refused
from .ledger import Ledger, Purchase, PurchaseQuery
from .ledger.returns import APPROVED
from .schema import FieldError
from .schema import Purchase as PurchaseView
from .schema import PurchaseList
from .trace import rfc3339

PARAMETERS = ("from", "to", "tz", "cursor", "limit", "test")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def limit_of(given: dict[str, str], problems: list[FieldError]) -> int:
    """``limit``: 1 to ``MAX_LIMIT`` items a page, ``DEFAULT_LIMIT`` when not given."""
    text = given.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT:
        return int(text)
    problems.append(FieldError("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
    return DEFAULT_LIMIT


def parse(params: Iterable[tuple[str, str]], principal: Principal, default_tz: str) -> PurchaseQuery:
    """The page asked for: ``from`` and ``to`` inclusive days in ``tz`` (the exchange's zone
    unless given; no bound when left out), ``cursor`` from the previous page, ``limit``,
    ``test=true`` to list test purchases too. Every bad parameter at once: 422."""
    principal.require(Role.BUYER)
    problems: list[FieldError] = []
    given = reports.read_params(params, PARAMETERS, "this list", problems)
    since, until, position, limit = days_and_page(given, default_tz, problems)
    test = given.get("test", "false")
    if test not in ("true", "false"):
        problems.append(FieldError("test", "must be true or false"))
    if problems:
        raise refused(problems)
    return PurchaseQuery(since, until, principal.buyer_id, test == "true", position, limit)


def days_and_page(given: dict[str, str], default_tz: str,
                  problems: list[FieldError]) -> tuple[float, float, cursor.Position | None, int]:
    """A list's [since, until) in epoch seconds from ``from`` and ``to``, inclusive days in
    ``tz`` (the exchange's zone unless given), no bound for one left out; and its page, the
    ``cursor`` and ``limit``. Bad ones go to ``problems`` (the values are then meaningless)."""
    zone = reports.zone_of(given.get("tz", default_tz), problems)
    start, end = reports.date_of(given, "from", problems), reports.date_of(given, "to", problems)
    if start is not None and end is not None and end < start:
        problems.append(FieldError("to", "must not be before from"))
    position = cursor.decode(given["cursor"], problems) if "cursor" in given else None
    limit = limit_of(given, problems)
    if zone is None:
        return 0.0, math.inf, position, limit
    return (_midnight(start, zone) if start is not None else 0.0,
            _midnight(end + datetime.timedelta(days=1), zone) if end is not None else math.inf, position, limit)


def _midnight(day: datetime.date, zone: datetime.tzinfo) -> float:
    return datetime.datetime.combine(day, datetime.time(), zone).timestamp()


async def page(ledger: Ledger, query: PurchaseQuery) -> PurchaseList:
    """One page, and the cursor of the next when there is one (one more row is read to know)."""
    found = await ledger.purchases(query._replace(limit=query.limit + 1))
    shown = found[:query.limit]
    last = shown[-1].sale if len(found) > query.limit else None
    return PurchaseList(leads=[view(purchase) for purchase in shown],
                        next_cursor=None if last is None else cursor.encode((last.sold_at, last.lead_id)))


def view(purchase: Purchase) -> PurchaseView:
    sale, filed = purchase.sale, purchase.filed
    returned = filed is not None and filed.status == APPROVED
    shown = PurchaseView(lead_id=sale.lead_id, campaign_id=sale.campaign_id, ping_id=sale.ping_id,
                         price=money.to_amount(sale.buyer_price_cents), sold_at=rfc3339(sale.sold_at),
                         status="returned" if returned else "sold", test=sale.test, lead=posted(purchase))
    if shown.lead is None:
        shown.erased = True
    if returned and filed is not None and filed.decided_at is not None:
        shown.returned_at = rfc3339(filed.decided_at)
    return shown


def posted(purchase: Purchase) -> dict[str, Any] | None:
    """The lead as its buyer's post carried it; None once its personal data is erased."""
    lead = purchase.lead
    if lead is None:
        return None
    if purchase.ping is None:  # its ping still on its way to the shared books (another host's journal)
        return {k: v for k, v in msgspec.structs.asdict(lead).items() if v is not msgspec.UNSET}
    return buyer_lead(purchase.ping, lead)

