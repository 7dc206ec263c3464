"""Types of the compiled twin of ``pingpost.targeting`` (built from ``ext/_targeting.pyx``).

Type checkers cannot read a compiled module; this stub gives them what
``pingpost.targeting`` uses of it, with the reference's signatures, since the twin must
answer exactly like the reference.
"""

from collections.abc import Iterable, Sequence
from typing import Final

from .schema import PingFields
from .targeting import Bid, Index, Selection

#: The keyed filters, in ``targeting.FILTER_ORDER``: answered per ping from inverted lists.
KEYED_FILTERS: Final[tuple[str, ...]]
#: Key families the keyed filters look up: state, zip, zip prefix, seller, source.
N_FAMILIES: Final[int]
#: Rule op -> its number in the compiled predicates.
OPS: Final[dict[str, int]]

class Core:
    """Built once per config from the reference index; ``select`` is ``Index.select``."""

    def __init__(self, index: Index) -> None: ...
    def select(self, ping: PingFields, seller_id: str, now: float, blocks: bytes | bytearray,
               last_bids: Sequence[int]) -> Selection: ...

def rank(bids: Iterable[Bid], min_bid_cents: int, seed: int) -> tuple[list[Bid], list[Bid]]: ...
