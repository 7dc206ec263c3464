"""``POST /v1/buyer/outcomes``: what became of a lead a buyer bought.

Only the latest outcome of a lead counts: the books keep one per lead, and a lead whose
latest outcome is ``converted`` is a conversion in reports (``conversions``,
``conversion_rate``), on the hour of its ping like the sale itself. ``value`` is what the
conversion was worth to the buyer, in the currency's units, kept to the cent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from . import money
from .access import Principal
from .schema import OutcomeAnswer, OutcomeRequest

if TYPE_CHECKING:
    from .auction import Exchange


async def tell(exchange: Exchange, principal: Principal, request: OutcomeRequest) -> OutcomeAnswer:
    """Record the outcome of the buyer's own lead (404 for any other)."""
    sale = principal.purchase(await exchange.ledger.get_sale(request.lead_id))
    value = None if request.value is msgspec.UNSET else money.to_cents(request.value)
    await exchange.ledger.set_outcome(sale, request.outcome, value, exchange.clock())
    answer = OutcomeAnswer(lead_id=sale.lead_id, outcome=request.outcome)
    if value is not None:
        answer.value = money.to_amount(value)
    return answer
