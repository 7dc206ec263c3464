"""Returns: a buyer hands back a lead it bought; the books approve it at once while the
buyer's month stays within its return rate, an operator decides the rest.

The rules, all in the exchange's time zone (``[exchange] timezone``):

* **Window.** A lead sold on a local day can be returned until the end of the local day
  ``return_window_days`` later (7: sold on a Monday, returnable through the next Monday,
  whatever the clock changes between); 0 means no returns.
* **Reasons.** One of the buyer's ``return_reasons``.
* **One per lead.** Asking again answers the first return, as it stands now.
* **The month's limit.** A return is approved at once while the buyer's approved returns of
  leads sold in that lead's calendar month, this one included, stay within
  ``max_return_rate`` of its purchases that month; otherwise it is pending. The books decide
  it in the transaction that files it, under a lock of the buyer, so returns racing each
  other on any worker or host never take a month past its limit.

An approved return is money, never an edited sale: the buyer's price credited back to it
and, when the seller's ``returns_reverse_payout`` (the default), the seller's price taken
back from the seller's payout, both as entries in the books (``ledger.returns``).
"""

from __future__ import annotations

import datetime
import zoneinfo
from typing import TYPE_CHECKING, Iterable

from . import cursor, ids, money, reports
from .access import Principal, Role
from .config import Buyer
from .errors import ApiError, Code, refused
from .ledger import NewReturn, Return, ReturnQuery
from .ledger.returns import STATUSES
from .purchases import limit_of
from .schema import FieldError, ReturnAnswer, ReturnList, ReturnRequest
from .trace import rfc3339

if TYPE_CHECKING:
    from .auction import Exchange

PARAMETERS = ("status", "cursor", "limit")


def window_closes(sold_at: float, days: int, zone: datetime.tzinfo) -> float:
    """When the return window of a lead sold at ``sold_at`` closes: the local midnight that
    ends the day ``days`` after the day of the sale (the sale itself, for 0: no returns)."""
    if days == 0:
        return sold_at
    last = datetime.datetime.fromtimestamp(sold_at, zone).date() + datetime.timedelta(days=days + 1)
    return datetime.datetime.combine(last, datetime.time(), zone).timestamp()


def month_of(sold_at: float, zone: datetime.tzinfo) -> tuple[float, float]:
    """The [start, end) of the local calendar month of ``sold_at``."""
    day = datetime.datetime.fromtimestamp(sold_at, zone).date()
    first = day.replace(day=1)
    after = (first + datetime.timedelta(days=32)).replace(day=1)
    return (datetime.datetime.combine(first, datetime.time(), zone).timestamp(),
            datetime.datetime.combine(after, datetime.time(), zone).timestamp())


def exact_rate(rate: float) -> tuple[int, int]:
    """The rate as the configured decimal, an exact fraction: 0.29 is 29/100, not 0.28999..."""
    return money.share(rate).as_integer_ratio()


def _zone(exchange: Exchange) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(exchange.config.exchange.timezone)


def _reverses(exchange: Exchange, seller_id: str) -> bool:
    seller = exchange.sellers.get(seller_id)
    return seller.seller.returns_reverse_payout if seller is not None else True


def check_reason(buyer: Buyer, reason: str) -> None:
    if reason not in buyer.return_reasons:
        raise refused([FieldError("reason", "must be one of " + ", ".join(buyer.return_reasons))])


async def file(exchange: Exchange, principal: Principal, request: ReturnRequest) -> Return:
    """A buyer's return of its lead: 422 for a reason not its own, 404 for a lead not its own,
    the lead's first return when it has one, 409 once the window closed; else filed, and
    approved or pending by the month's limit."""
    principal.require(Role.BUYER)
    buyer = exchange.buyers[principal.id]
    check_reason(buyer, request.reason)
    ledger = exchange.ledger
    sale = principal.purchase(await ledger.get_sale(request.lead_id))
    earlier = await ledger.get_return(lead_id=sale.lead_id)
    if earlier is not None:
        return earlier
    now, zone = exchange.clock(), _zone(exchange)
    closes = window_closes(sale.sold_at, buyer.return_window_days, zone)
    if now >= closes:
        raise ApiError(Code.RETURN_WINDOW_CLOSED, "this lead cannot be returned: " + (
            f"its return window closed at {rfc3339(closes)}" if buyer.return_window_days else
            "this buyer's contract takes no returns"))
    note = request.note if isinstance(request.note, str) else None
    return await ledger.add_return(NewReturn(ids.token(), sale, request.reason, note, now,
                                             month_of(sale.sold_at, zone), exact_rate(buyer.max_return_rate),
                                             _reverses(exchange, sale.seller_id)))


async def decide(exchange: Exchange, principal: Principal, return_id: str, approve: bool,
                 note: str | None) -> Return:
    """An operator's approval or denial of a pending return; a return already decided is
    answered as it stands (decisions are final). 404 for an unknown return."""
    principal.require(Role.OPERATOR)
    ledger = exchange.ledger
    filed = await ledger.get_return(return_id=return_id)
    decided = None if filed is None else await ledger.decide_return(
        return_id, approve, principal.id, note, exchange.clock(), _reverses(exchange, filed.seller_id))
    if decided is None:
        raise ApiError(Code.NOT_FOUND, "no such return")
    return decided


def parse(params: Iterable[tuple[str, str]], principal: Principal) -> ReturnQuery:
    """``GET /v1/returns``: an operator's every return, a buyer's own; ``status`` one of
    approved, pending, denied; ``cursor`` and ``limit`` as for purchases."""
    principal.require(Role.OPERATOR, Role.BUYER)
    problems: list[FieldError] = []
    given = reports.read_params(params, PARAMETERS, "this list", problems)
    status = given.get("status")
    if status is not None and status not in STATUSES:
        problems.append(FieldError("status", "must be one of " + ", ".join(STATUSES)))
    position = cursor.decode(given["cursor"], problems) if "cursor" in given else None
    limit = limit_of(given, problems)
    if problems:
        raise refused(problems)
    return ReturnQuery(status, principal.buyer_id, None, position, limit)


async def page(exchange: Exchange, query: ReturnQuery) -> ReturnList:
    found = await exchange.ledger.returns(query._replace(limit=query.limit + 1))
    shown = found[:query.limit]
    last = shown[-1] if len(found) > query.limit else None
    return ReturnList(returns=[view(filed) for filed in shown],
                      next_cursor=None if last is None else cursor.encode((last.requested_at, last.return_id)))


def view(filed: Return) -> ReturnAnswer:
    """A return as its buyer and the operators see it (``price``: the buyer's)."""
    shown = ReturnAnswer(return_id=filed.return_id, lead_id=filed.lead_id, status=filed.status,  # type: ignore[arg-type]
                         reason=filed.reason, buyer_id=filed.buyer_id, seller_id=filed.seller_id,
                         campaign_id=filed.campaign_id, price=money.to_amount(filed.buyer_price_cents),
                         sold_at=rfc3339(filed.sold_at), requested_at=rfc3339(filed.requested_at))
    for name in ("note", "decided_by", "decision_note"):
        value = getattr(filed, name)
        if value is not None:
            setattr(shown, name, value)
    if filed.decided_at is not None:
        shown.decided_at = rfc3339(filed.decided_at)
    return shown
