"""The terms both targeting implementations speak, defined once.

The reference (``pingpost.targeting``) and its compiled twin (``pingpost._targeting``)
must agree on the store's block codes, the order filters are tried in, the reason texts
and when a selection stops naming campaigns one by one. Both read them from here: the
twin derives its C layout (filter bits, reason kinds, block kinds) from these values when
it is imported, and raises ``TermsError`` then if they break an assumption of that layout,
so a change here either reaches both sides or stops the engine from starting. Plain
Python importing nothing of the package, so the twin can read it without importing the
reference.
"""

from __future__ import annotations

from typing import Final

#: A campaign's byte in the store's block array: 0, what a new ``bytearray`` holds, is
#: open; every other byte is a block and says which (``BLOCK_REASON``).
OPEN: Final = 0
CAPPED: Final = 1
BENCHED: Final = 2
#: The reason a blocked campaign is not pinged, per block code.
BLOCK_REASON: Final[dict[int, str]] = {CAPPED: "capped", BENCHED: "benched"}

#: Filters in the order they are tried (``Index.failed_filter`` spells it out); the first
#: that fails is the recorded reason. The compiled twin answers the keyed filters (those
#: that look a key of the ping up in a list) together, so they come first, then
#: ``min_quality``, ``schedule`` and ``rules``.
FILTER_ORDER: Final = ("states", "exclude_states", "zips", "exclude_zips", "zip_prefixes", "sellers",
                       "exclude_sellers", "sources", "exclude_sources", "min_quality", "schedule", "rules")

#: A filtered campaign's reason is ``FILTERED`` + the filter's name, or for a rule
#: ``FILTERED`` + ``RULE`` + the rule's field (``filtered:rule:vehicle_year``).
FILTERED: Final = "filtered:"
RULE: Final = "rule:"
#: The reason of a campaign that passed but was cut by ``max_buyers_per_ping``.
OVER_MAX: Final = "skipped:max_buyers"

#: Campaigns not selected that a ``Selection`` names one by one; past this many (a vertical
#: of thousands of campaigns) it counts them by reason instead: building, keeping and
#: freeing one tuple per campaign was most of a select's cost, and the per-lead trace
#: keeps no more detail than this anyway.
DETAIL_LIMIT: Final = 64

#: A schedule is a bitmap of one byte per minute of the week, Monday 00:00 = 0.
MINUTES_PER_WEEK: Final = 7 * 24 * 60


class TermsError(Exception):
    """These terms break an assumption of the compiled twin's layout: raised when the twin
    is imported (not an ``ImportError``, so the reference does not silently serve)."""
