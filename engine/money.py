"""Money is integer cents inside the engine; these are the only conversions.

Buyers and config files speak decimal numbers that JSON/TOML hand us as floats. A float
such as 0.29 is really 0.28999..., so multiplying by 100 and flooring would lose a cent.
``repr`` gives the shortest decimal that round-trips, which is the number the buyer wrote,
and ``Decimal`` then does the exact arithmetic the contract asks for (3.00 x 0.7 = 2.10).
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

_HUNDRED = Decimal(100)


def to_cents(amount: float) -> int:
    """Cut a non-negative decimal amount down to whole cents."""
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"not a non-negative finite amount: {amount!r}")
    return int((Decimal(repr(amount)) * _HUNDRED).to_integral_value(ROUND_FLOOR))


def text_to_cents(written: str) -> int:
    """Cut a decimal amount written as text (digits, maybe a point and more digits) down to
    whole cents: a buyer's ``"12.50"`` in its own answer format."""
    return int((Decimal(written) * _HUNDRED).to_integral_value(ROUND_FLOOR))


def share(ratio: float) -> Decimal:
    """The exact decimal a configured ratio (revenue share) was written as."""
    return Decimal(repr(ratio))


def apply_share(cents: int, ratio: Decimal) -> int:
    """``cents x ratio`` cut down to whole cents, exactly."""
    return int((cents * ratio).to_integral_value(ROUND_FLOOR))


def to_amount(cents: int) -> float:
    """Cents back to the decimal number the JSON APIs speak (2.1 for 210)."""
    return cents / 100
