"""Numbers as a person reads them: thousands separators, the currency, percentages.

One place for every number the dashboard prints, so a table, a chart's axis and its
tooltips never disagree on how 1234.5 looks.
"""

from __future__ import annotations

import math

#: The exchange's money is in dollars and cents (its amounts have two decimals).
CURRENCY = "$"


def count(value: float) -> str:
    """``1,234``; a count is whole, so a float (a sum read back as such) is rounded."""
    return f"{round(value):,}"


def money(value: float) -> str:
    """``$1,234.50``; a negative amount (a margin) as ``-$3.00``."""
    sign = "-" if value < 0 and round(abs(value), 2) else ""
    return f"{sign}{CURRENCY}{abs(value):,.2f}"


def rate(value: float) -> str:
    """A ratio of 0 to 1 as ``12.3%``."""
    return f"{value * 100:.1f}%"


def compact(value: float, is_money: bool = False) -> str:
    """A chart axis label: ``950``, ``12k``, ``1.5M`` (with the currency for money)."""
    prefix = CURRENCY if is_money else ""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            scaled = value / limit
            text = f"{scaled:.0f}" if scaled == math.floor(scaled) else f"{scaled:.1f}"
            return f"{prefix}{text}{suffix}"
    if is_money and value != math.floor(value):
        return f"{prefix}{value:,.2f}"
    return f"{prefix}{value:,.0f}"
