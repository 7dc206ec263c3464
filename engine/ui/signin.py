"""Failed sign-ins, slowed down.

Failed sign-ins are counted per user name and per client address in the shared store,
so guessing is slowed whichever worker answers and whether the guesser tries many
passwords on one name or one password on many names. The first ``FREE_FAILURES`` in a
``WINDOW_S`` cost nothing; after that each further attempt must wait twice as long as the
one before, up to ``MAX_WAIT_S``, counted from the latest failure. A success clears the
user's count, not the address's: signing in to one's own account does not buy an address
more guesses at someone else's.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from ..store.base import Clock, Failures, Store

FREE_FAILURES = 5
WINDOW_S = 900.0
MAX_WAIT_S = 300.0



def wait_s(failures: Sequence[Failures], now: float) -> float:
    """Seconds before another attempt is heard, the longest that any key asks."""
    waits = [min(2.0 ** (f.failed - FREE_FAILURES), MAX_WAIT_S) - (now - f.latest)
             for f in failures if f.failed >= FREE_FAILURES]
    return max([0.0, *waits])


def _hashed(kind: str, value: str) -> str:
    """The store never holds a user name or an address, only this."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class Throttle:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    @staticmethod
    def _keys(name: str, address: str) -> list[str]:
        return [_hashed("user", name), _hashed("address", address)]

    async def wait_s(self, name: str, address: str) -> float:
        return wait_s(await self.store.failures(self._keys(name, address)), self.clock())

    async def failed(self, name: str, address: str) -> None:
        await self.store.note_failures(self._keys(name, address), WINDOW_S)

    async def succeeded(self, name: str) -> None:
        await self.store.clear_failures([_hashed("user", name)])
