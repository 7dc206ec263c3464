"""Random ids (a ping's, a sold lead's, a return's): 12 bytes of the OS's CSPRNG as 24 hex digits;
a ping's and a sold lead's behind the time they were made (``ordered``).

Every ping takes one, and ``os.urandom`` is a ``getrandom`` system call per call (1.8% of a
5-http ping's native profile). The bytes are drawn a few kilobytes at a time instead and each
used once: the same source, the same unpredictability. A forked worker starts without its
parent's bytes, so no two processes ever hand out the same ids. Called on the event loop only.
"""

from __future__ import annotations

import os
import time

SIZE = 12
#: Bytes drawn per system call: a whole number of ids.
POOL = SIZE * 341


class _Pool:
    __slots__ = ("data", "at")

    def __init__(self) -> None:
        self.data = b""
        self.at = 0

    def forget(self) -> None:
        self.data, self.at = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def token() -> str:
    """A new id: 24 lower-case hex digits."""
    pool = _pool
    at = pool.at
    if at >= len(pool.data):
        pool.data, at = os.urandom(POOL), 0
    pool.at = at + SIZE
    return pool.data[at:at + SIZE].hex()


def ordered() -> str:
    """A new id that sorts after the ones made before it (to the millisecond, between processes
    whose clocks agree): 12 hex digits of the epoch milliseconds, then a ``token``. The ids of a
    ping and of a sold lead key the books' rows, and a random key lands each new row on a random
    page of the key's index, an ordered one at its end: fewer pages written a commit, and none
    read back once a large ledger's index is no longer in memory. Exactly as hard to guess as a
    ``token``."""
    return f"{time.time_ns() // 1_000_000:012x}{token()}"
