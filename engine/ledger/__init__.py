"""The exchange's books: every ping, post and sale, durable before the seller is answered.

``await open(url)`` gives a ``Ledger``:

* ``sqlite:///PATH``: the embedded default (``sqlite:///pingpost-ledger.db``, relative to the
  working directory; ``sqlite:////abs/path`` for an absolute one), written by every worker
  of one host;
* ``postgresql://USER@HOST:PORT/DB``: one ledger shared by every host, behind a durable
  journal on each host (``journal``: its file, ``pingpost-ledger-journal.db`` by default);
* ``none``: no books at all, for benchmarks of the engine alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .base import DEFAULT_URL, Ledger, LedgerError, LedgerUnavailable, SoldCount, is_postgres, sqlite_path
from .codec import Entry, Row, Sale

__all__ = ["DEFAULT_URL", "Ledger", "LedgerError", "LedgerUnavailable", "NullLedger", "Sale", "SoldCount", "open"]


class NullLedger(Ledger):
    """``none``: records go nowhere and nothing is found."""

    url = "none"

    @property
    def commits(self) -> int:
        return 0

    async def _append(self, entry: Entry) -> None:
        return None

    async def _find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        return [None] * len(lookups)

    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        return {}

    async def drop_traffic_before(self, cutoff: float) -> int:
        return 0

    async def close(self) -> None:
        return None


async def open(url: str = DEFAULT_URL, *, journal: str | Path | None = None) -> Ledger:  # noqa: A001
    """Open (creating and migrating as needed) the ledger at ``url``."""
    if url == "none":
        return NullLedger()
    path = sqlite_path(url)
    if path is not None:
        from .sqlite import SqliteLedger
        return await SqliteLedger.open(url, path)
    if is_postgres(url):
        from .postgres import DEFAULT_JOURNAL, PostgresLedger
        return await PostgresLedger.open(url, str(journal) if journal is not None else DEFAULT_JOURNAL)
    raise LedgerError(f"not a ledger URL: {url!r} (sqlite:///PATH, postgresql://USER@HOST:PORT/DB or none)")
