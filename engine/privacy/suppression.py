"""The opt-out list as each worker holds it: a set in memory, checked on every ping and post
without I/O, kept up to date from the books.

The books number the list's entries in the order they commit (``ledger.privacy``), so a
worker that has read up to entry N has every opt-out before it. At start the view reads the
whole list, then it catches up every ``FOLLOW_EVERY_S``: an opt-out taken on any worker of
any host is seen by every other within about a second. The worker that takes one adds it to
its own view at once.

Only the first ``PREFIX_BYTES`` bytes of each keyed hash are held, as an int: a million
entries take about 70 MB with the set's table (the 16-byte hashes as bytes would take 83 MB).
Two different identifiers share a prefix with odds of one in 2**64 for each entry held, so
with a million entries a lookup of someone who never opted out matches by chance once in
about 1.8e13 lookups: at two lookups a ping and 10,000 pings a second, once in some 30 years;
and such a match only refuses that one consumer's leads.

While the list is empty a check is one truth test: no hash is computed. With no books
(``--ledger none``) there is no list.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from ..errors import ApiError, Code
from ..ledger import Ledger, LedgerUnavailable
from ..schema import Lead, PingFields
from .identifiers import Identifiers

log = logging.getLogger("pingpost.privacy")

PREFIX_BYTES = 8
#: Entries one read of the books takes.
CHUNK = 10_000
#: Pause between catch-ups with the books.
FOLLOW_EVERY_S = 0.5


def prefix(digest: bytes) -> int:
    return int.from_bytes(digest[:PREFIX_BYTES], "big")


class Suppression:
    """One worker's view of the opt-out list. ``identifiers`` None: no books, no list."""

    __slots__ = ("identifiers", "_held", "_seq", "loaded", "_failing")

    def __init__(self, identifiers: Identifiers | None) -> None:
        self.identifiers = identifiers
        self._held: set[int] = set()
        self._seq = 0
        #: Whether the view has read the whole list once (``catch_up``).
        self.loaded = identifiers is None
        self._failing = False

    def __len__(self) -> int:
        return len(self._held)

    def add(self, hashes: Iterable[bytes]) -> None:
        self._held.update(prefix(digest) for digest in hashes)

    def ping_opted_out(self, ping: PingFields) -> bool:
        """Whether the ping's ``email_sha256`` or ``phone_sha256`` opted out."""
        held = self._held
        if not held or self.identifiers is None:
            return False
        return any(prefix(digest) in held for digest in self.identifiers.of_ping(ping))

    def lead_opted_out(self, lead: Lead) -> bool:
        """Whether the lead's email or phone opted out (the lead as normalized)."""
        held = self._held
        if not held or self.identifiers is None:
            return False
        return any(prefix(digest) in held for digest in self.identifiers.of_lead(lead))

    def refuse(self, lead: Lead) -> None:
        """A post's check, before any buyer is offered the lead: ``409 opted_out`` for a
        consumer who opted out; ``503 ledger_unavailable`` while the list was never read (the
        shared books unreachable since this worker started), since no lead may be sold to
        anyone without it."""
        if not self.loaded:
            raise LedgerUnavailable("the opt-out list has not been read from the books yet")
        if self.lead_opted_out(lead):
            raise ApiError(Code.OPTED_OUT)

    async def catch_up(self, books: Ledger) -> int:
        """Read every entry after the last one seen; the number read."""
        if self.identifiers is None:
            return 0
        read = 0
        while True:
            rows = await books.suppressions_since(self._seq, CHUNK)
            self.add(bytes(digest) for _, digest in rows)
            read += len(rows)
            if rows:
                self._seq = int(rows[-1][0])
            if len(rows) < CHUNK:
                self.loaded = True
                return read

    async def start(self, books: Ledger) -> None:
        """The whole list into the view before the worker serves. Shared books that cannot
        be reached now (PostgreSQL down at start) do not stop the worker: the view follows
        once they answer, and posts wait for it (``refuse``)."""
        if self.identifiers is None:
            return
        try:
            await self.catch_up(books)
        except LedgerUnavailable as exc:
            self._failing = True
            log.warning("opt-out list not read", extra={"event": {"event": "suppression", "error": str(exc)}})

    async def follow(self, books: Ledger) -> None:
        """Catch up every ``FOLLOW_EVERY_S``, for as long as the worker runs. While the books
        cannot answer (PostgreSQL down) the view keeps what it has: no opt-out can be taken
        then either, since taking one needs the shared books."""
        while self.identifiers is not None:
            try:
                await self.catch_up(books)
            except LedgerUnavailable as exc:
                if not self._failing:
                    log.warning("opt-out list not caught up", extra={"event": {"event": "suppression",
                                                                               "error": str(exc)}})
                self._failing = True
            else:
                if self._failing:
                    log.info("opt-out list caught up", extra={"event": {"event": "suppression", "held": len(self)}})
                self._failing = False
            await asyncio.sleep(FOLLOW_EVERY_S)
