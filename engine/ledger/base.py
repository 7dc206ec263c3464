"""The ledger interface: the exchange's books, written from the auction's own records.

The auction hands over what it already produced (``PingRecord``, ``PostRecord``, the lead)
and awaits the call: it returns only once the rows are durable on this host, so a seller
is never answered for something the books do not hold. Every backend turns a record into
the same rows (``codec``) and only decides where they go (``_append``) and where they are
looked up (``_find``); turning rows back into records is done here, for all of them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import NamedTuple, Sequence

from ..schema import Lead
from ..trace import PingRecord, PostRecord
from . import codec
from .codec import Entry, Row, Sale

#: The embedded default: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///pingpost-ledger.db"

#: Rows retention deletes per transaction, so a large purge never holds the writer for long.
DROP_CHUNK = 5000


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL; None for any other URL."""
    prefix = "sqlite:///"
    return url[len(prefix):] if url.startswith(prefix) and len(url) > len(prefix) else None


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class LedgerError(Exception):
    """The ledger cannot be used as configured (a bad URL, a schema newer than this code)."""


class LedgerUnavailable(LedgerError):
    """This host cannot make a record durable (disk full, read-only, unwritable file), or a
    read cannot be answered right now; the server answers 503 ledger_unavailable."""


class SoldCount(NamedTuple):
    """A campaign's live sales in the store's cap units: leads this hour, leads today and
    the buyers' prices today (the daily budget counts the buyer's price)."""

    hourly: int
    daily: int
    cents_today: int


class Ledger(ABC):
    """The books. One instance per process: its writer is that process's only writer."""

    url: str

    async def record_ping(self, record: PingRecord) -> None:
        """Record a ping as answered; returns once it is durable."""
        await self._append(codec.ping_entry(record))

    async def record_post(self, record: PingRecord, result: PostRecord, lead: Lead, at: float | None = None) -> None:
        """Record a post's result, and for a sale the sale and the lead's data; returns once
        durable. ``at`` is when the post finished (now by default): a post record carries
        no time of its own, and the call follows the cascade within a millisecond."""
        await self._append(codec.post_entry(record, result, lead, time.time() if at is None else at))

    async def get_ping(self, ping_id: str) -> PingRecord | None:
        """The ping as recorded, with its post result if one was recorded (the trace)."""
        ping, post = await self._find([("pings", ping_id), ("posts", ping_id)])
        return None if ping is None else codec.record_of(ping, post)

    async def get_sale(self, lead_id: str) -> Sale | None:
        (row,) = await self._find([("sales", lead_id)])
        return None if row is None else codec.sale_of(row)

    async def get_lead(self, lead_id: str) -> Lead | None:
        """The lead's personal data as posted, None if unknown or erased."""
        (row,) = await self._find([("lead_data", lead_id)])
        return None if row is None else codec.lead_of(row)

    @abstractmethod
    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        """Live (non-test) sales per campaign since the start of the cap hour and day (epoch
        seconds), for refilling a shared store that lost its counts. Campaigns without a sale
        are absent."""

    @abstractmethod
    async def drop_traffic_before(self, cutoff: float) -> int:
        """Retention: drop ping and post rows older than ``cutoff`` that did not sell; sales,
        a sold ping's own ping and post rows, lead data and money rows are kept. Returns the
        number of rows dropped."""

    def backlog(self) -> int:
        """Records durable on this host but not yet in the shared ledger (a metrics gauge)."""
        return 0

    @property
    @abstractmethod
    def commits(self) -> int:
        """Transactions this process's writer committed: record calls batched together (fewer
        commits than records under load), plus its own upkeep (retention, forwarded entries)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish what was handed over, then release files and connections."""

    @abstractmethod
    async def _append(self, entry: Entry) -> None:
        """Make one record call's rows durable, or raise ``LedgerUnavailable``."""

    @abstractmethod
    async def _find(self, lookups: Sequence[tuple[str, str]]) -> list[Row | None]:
        """The row of each (table, key) asked for, by the table's key column."""


def count_sales(counts: dict[str, SoldCount], rows: Sequence[Row], since_hour: float, since_day: float,
                campaign_ids: Sequence[str] | None) -> None:
    """Add sales rows (as ``codec.TABLES["sales"]`` orders them) to ``counts``, the way the
    backends' SQL counts them; for rows not yet in a database."""
    wanted = None if campaign_ids is None else set(campaign_ids)
    for row in rows:
        sale = codec.sale_of(row)
        if sale.test or sale.sold_at < since_day or (wanted is not None and sale.campaign_id not in wanted):
            continue
        hourly, daily, cents = counts.get(sale.campaign_id, SoldCount(0, 0, 0))
        counts[sale.campaign_id] = SoldCount(hourly + (sale.sold_at >= since_hour), daily + 1,
                                             cents + sale.buyer_price_cents)
