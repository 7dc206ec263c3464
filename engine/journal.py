"""Sales that the books or the store could not record when they happened.

A buyer that accepted a lead has bought it, whatever happens next. If the store cannot
take the sale (Redis lost between the buyer's answer and the write), the seller is still
told "sold", and the store's writes (the cap commit, the duplicate history, the post
result) are retried here until the store takes them; meanwhile a re-post to this worker
is answered from here, so the lead is not offered again. If the books cannot take it
(the disk filled since the ping), the seller is told 503, the record is retried here
until it is durable, and until then a re-post is answered 503 too: a 200 is only ever
given for a sale in the books.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .ledger import LedgerUnavailable
from .store.base import StoreUnavailable
from .trace import PostRecord

log = logging.getLogger("pingpost.journal")

#: Pause between attempts to hand the pending sales over.
RETRY_S = 0.25

Write = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class _Sale:
    seller_id: str
    result: PostRecord
    book: Write | None
    store: Write | None


class Journal:
    def __init__(self) -> None:
        self._pending: dict[str, _Sale] = {}
        self._flusher: asyncio.Task[None] | None = None

    def result(self, ping_id: str, seller_id: str) -> PostRecord | None:
        """The sale of this ping, if it is still waiting here; ``LedgerUnavailable`` while
        the books do not hold it yet."""
        found = self._pending.get(ping_id)
        if found is None or found.seller_id != seller_id:
            return None
        if found.book is not None:
            raise LedgerUnavailable("this lead's sale is not in the books yet")
        return found.result

    def add(self, ping_id: str, seller_id: str, result: PostRecord, *, book: Write | None = None,
            store: Write | None = None) -> None:
        """Keep a sale whose record (``book``) or store writes (``store``) failed; each is
        safe to repeat, and the books are written before the store."""
        self._pending[ping_id] = _Sale(seller_id, result, book, store)
        log.warning("sale not recorded yet", extra={"event": {
            "event": "journal", "ping_id": ping_id, "books": book is None, "store": store is None,
            "pending": len(self._pending)}})
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_until_empty())

    async def _flush(self) -> None:
        for ping_id, sale in list(self._pending.items()):
            try:
                if sale.book is not None:
                    await sale.book()
                    sale.book = None
                if sale.store is not None:
                    await sale.store()
                    sale.store = None
            except (StoreUnavailable, LedgerUnavailable):
                continue
            del self._pending[ping_id]
            log.info("sale recorded", extra={"event": {"event": "journal", "ping_id": ping_id,
                                                       "pending": len(self._pending)}})

    async def _flush_until_empty(self) -> None:
        while self._pending:
            await asyncio.sleep(RETRY_S)
            await self._flush()

    async def close(self) -> None:
        """One last attempt at shutdown; what still fails stays in the post log lines."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._flush()
