"""Sales the store could not record when they happened.

A buyer that accepted a lead has bought it, whatever the store says next. If recording
the sale fails (Redis lost between the buyer's answer and the write), the seller is still
told "sold", the result is kept here, and the writes (the cap commit, the duplicate
history, the post result) are retried until the store takes them. Until then a re-post
to this worker is answered from here, so the lead is not offered again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from .store.base import StoreUnavailable
from .trace import PostRecord

log = logging.getLogger("pingpost.journal")

#: Pause between attempts to hand the pending sales to the store.
RETRY_S = 0.25

Write = Callable[[], Awaitable[Any]]


class Journal:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, PostRecord, Write]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def result(self, ping_id: str, seller_id: str) -> PostRecord | None:
        """The sale of this ping, if it is still waiting for the store."""
        found = self._pending.get(ping_id)
        return found[1] if found is not None and found[0] == seller_id else None

    def add(self, ping_id: str, seller_id: str, result: PostRecord, write: Write) -> None:
        """Keep a sale whose ``write`` failed; ``write`` must be safe to repeat."""
        self._pending[ping_id] = (seller_id, result, write)
        log.warning("sale not recorded yet", extra={"event": {"event": "journal", "ping_id": ping_id,
                                                              "pending": len(self._pending)}})
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_until_empty())

    async def _flush(self) -> None:
        for ping_id, (_, _, write) in list(self._pending.items()):
            try:
                await write()
            except StoreUnavailable:
                return
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
