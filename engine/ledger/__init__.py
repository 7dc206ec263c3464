"""The exchange's books: every ping, post and sale, durable before the seller is answered.

``await open(url)`` gives a ``Ledger``:

* ``sqlite:///PATH``: the embedded default (``sqlite:///pingpost-ledger.db``, relative to the
  working directory; ``sqlite:////abs/path`` for an absolute one), written by every worker
  of one host;
* ``postgresql://USER@HOST:PORT/DB``: one ledger shared by every host, behind a durable
  journal on each host (``journal``: its file, ``pingpost-ledger-journal.db`` by default);
* ``none``: no books at all, for benchmarks of the engine alone.

Books that record sales need the operator's key (``key``): a lead's personal data is kept
sealed under it (``pingpost.privacy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

from .base import DEFAULT_URL, Ledger, LedgerError, LedgerUnavailable, SoldCount, SoldLead, is_postgres, sqlite_path
from ..privacy.keys import OperatorKey
from ..schema import Lead
from ..trace import PingRecord, PostRecord
from .codec import Entry, Row, Sale
from .privacy import PrivacyRequest
from .returns import NewReturn, Purchase, PurchaseQuery, Return, ReturnQuery
from .rollups import COUNTERS, RollupQuery, RunningQuery, Span
from .steps import Transaction

__all__ = ["DEFAULT_URL", "Ledger", "LedgerError", "LedgerUnavailable", "NewReturn", "NullLedger", "PrivacyRequest", "Purchase",
           "PurchaseQuery", "Return", "ReturnQuery", "RollupQuery", "RunningQuery", "Sale", "SoldCount", "SoldLead", "Span", "open"]

T = TypeVar("T")


class NullLedger(Ledger):
    """``none``: records go nowhere and nothing is found."""

    url = "none"
    keeps_leads = False

    @property
    def commits(self) -> int:
        return 0

    async def use_key(self, key: OperatorKey) -> None:
        return None

    async def suppressions_since(self, seq: int, limit: int) -> list[Row]:
        return []

    async def record_ping(self, record: PingRecord) -> None:
        return None

    async def record_post(self, record: PingRecord, result: PostRecord, lead: Lead, at: float | None = None) -> None:
        return None

    async def _append(self, entry: Entry) -> None:
        return None

    async def _find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        return [None] * len(lookups)

    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        return {}

    async def rollups(self, query: RollupQuery | RunningQuery) -> list[Row]:
        return [] if query.keys else [(0,) * len(COUNTERS)]

    async def purchases(self, query: PurchaseQuery) -> list[Purchase]:
        return []

    async def returns(self, query: ReturnQuery) -> list[Return]:
        return []

    async def get_return(self, *, return_id: str | None = None, lead_id: str | None = None) -> Return | None:
        return None

    async def _read_steps(self, transaction: Transaction[T]) -> T:
        raise LedgerUnavailable("no books (--ledger none)")

    async def _write_steps(self, transaction: Transaction[T]) -> T:
        raise LedgerUnavailable("no books (--ledger none)")

    async def drop_traffic_before(self, cutoff: float) -> int:
        return 0

    async def close(self) -> None:
        return None


async def open(url: str = DEFAULT_URL, *, journal: str | Path | None = None,  # noqa: A001
               key: OperatorKey | None = None) -> Ledger:
    """Open (creating and migrating as needed) the ledger at ``url``; with the operator's
    ``key``, ready to record sales (``Ledger.use_key``)."""
    books = await _backend(url, journal)
    if key is not None:
        try:
            await books.use_key(key)
        except BaseException:
            await books.close()
            raise
    return books


async def _backend(url: str, journal: str | Path | None) -> Ledger:
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
