"""Types of the compiled twin of ``pingpost.targeting`` (built from ``ext/_targeting.pyx``).

Type checkers cannot read a compiled module; this stub gives them its whole API, with the
reference's signatures, since the twin must answer exactly like the reference.
``pingpost.targeting`` builds both classes, handing them what they need of the reference.
"""

from collections.abc import Callable, Sequence

from .schema import PingFields
from .targeting import Bid, CoreInput, Selection

class Core:
    """Built once per config from a ``CoreInput``; ``select`` is ``Index.select``."""

    def __init__(self, inputs: CoreInput) -> None: ...
    def select(self, ping: PingFields, seller_id: str, now: float, blocks: bytes | bytearray,
               last_bids: Sequence[int]) -> Selection: ...

class Ranker:
    """``reference_rank`` in C, made with the reference ranker that it hands the bids whose
    numbers (or their products with an accept rate) do not fit 64 bits."""

    def __init__(self, reference: Callable[[Sequence[Bid], int, int, Sequence[int] | None],
                                           tuple[list[Bid], list[Bid]]]) -> None: ...
    def rank(self, bids: Sequence[Bid], min_bid_cents: int, seed: int,
             accept_ppm: Sequence[int] | None = None) -> tuple[list[Bid], list[Bid]]: ...
