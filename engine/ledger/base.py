"""The ledger interface: the exchange's books, written from the auction's own records.

The auction hands over what it already produced (``PingRecord``, ``PostRecord``, the lead)
and awaits the call: it returns only once the rows are durable on this host, so a seller
is never answered for something the books do not hold. Every backend turns a record into
the same rows (``codec``) and only decides where they go (``_append``) and where they are
looked up (``_find``); turning rows back into records is done here, for all of them.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import Iterable, NamedTuple, Sequence, TypeVar

from ..privacy.keys import KeyProblem, OperatorKey, Unreadable
from ..privacy.vault import Vault, first_identifier_key
from ..schema import Lead
from ..trace import PingRecord, PostRecord
from . import codec, privacy, returns
from .codec import Entry, Row, Sale
from .privacy import PrivacyRequest
from .returns import NewReturn, NotYet, Purchase, PurchaseQuery, Return, ReturnQuery
from .rollups import RollupQuery, RunningQuery
from .steps import Transaction

T = TypeVar("T")

#: How often a write that found its sale not yet in the books (still in a journal) tries again.
RETRY_NOT_YET_S = 0.05

#: The embedded default: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///pingpost-ledger.db"


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


class SoldLead(NamedTuple):
    """One of today's live sales, as a store that lost its counts needs it: the ping it was
    sold under (a reservation's token), whether it is of the cap hour, the buyer's price."""

    ping_id: str
    this_hour: bool
    cents: int


class SoldCount(NamedTuple):
    """A campaign's live sales today, one by one, so that a refill can leave out the ones
    the store still counts itself; and their sums in the store's cap units: leads this hour,
    leads today and the buyers' prices today (the daily budget counts the buyer's price)."""

    sales: tuple[SoldLead, ...] = ()

    @property
    def hourly(self) -> int:
        return sum(lead.this_hour for lead in self.sales)

    @property
    def daily(self) -> int:
        return len(self.sales)

    @property
    def cents_today(self) -> int:
        return sum(lead.cents for lead in self.sales)


class Ledger(ABC):
    """The books. One instance per process: its writer is that process's only writer."""

    url: str
    #: How long a write of what follows a sale waits for the sale to reach the books (0: it is
    #: there, or never will be).
    wait_for_sale_s = 0.0
    #: Seals and opens the leads' personal data (``use_key``); None in books opened without
    #: the operator's key, which can record no sale.
    vault: Vault | None = None
    #: Whether these books keep sales and so leads' personal data (what needs the key).
    keeps_leads = True

    async def use_key(self, key: OperatorKey) -> None:
        """Open the books' own keys with the operator's key (making them in new books), and
        seal any lead data that books made before encryption hold in clear."""
        wrapped = await self._books_key(key)
        try:
            self.vault = Vault(key, wrapped)
        except Unreadable:
            raise KeyProblem(f"the operator key ({key.id}) is not the one the books at {self.url} were made with: "
                             "start with that key, or rotate to a new one with `pingpost ledger rotate-key`") from None
        await self._seal_plain()

    async def _books_key(self, key: OperatorKey) -> bytes:
        return await self._write_steps(privacy.books_key(first_identifier_key(key), time.time()))

    async def _seal_plain(self) -> None:
        assert self.vault is not None
        while await self._write_steps(privacy.seal_plain(self.vault)):
            pass

    async def record_ping(self, record: PingRecord) -> None:
        """Record a ping as answered; returns once it is durable."""
        await self._append(codec.ping_entry(record))

    async def record_post(self, record: PingRecord, result: PostRecord, lead: Lead, at: float | None = None) -> None:
        """Record a post's result, and for a sale the sale and the lead's data; returns once
        durable. ``at`` is when the post finished (now by default): a post record carries
        no time of its own, and the call follows the cascade within a millisecond."""
        await self._append(codec.post_entry(record, result, lead, time.time() if at is None else at, self.vault))

    async def get_ping(self, ping_id: str) -> PingRecord | None:
        """The ping as recorded, with its post result if one was recorded (the trace)."""
        ping, post = await self._find([("pings", ping_id), ("posts", ping_id)])
        return None if ping is None else codec.record_of(ping, post)

    async def get_post(self, ping_id: str) -> PostRecord | None:
        """The ping's post result as recorded: what a re-post is answered with when the
        store cannot say, and what keeps a cascade from running twice."""
        (row,) = await self._find([("posts", ping_id)])
        return None if row is None else codec.post_of(row)

    async def get_sale(self, lead_id: str) -> Sale | None:
        (row,) = await self._find([("sales", lead_id)])
        return None if row is None else codec.sale_of(row)

    async def get_lead(self, lead_id: str) -> Lead | None:
        """The lead's personal data as posted, None if unknown or erased."""
        (row,) = await self._find([("lead_data", lead_id)])
        return None if row is None else self.open_lead(row[0], row[2], row[3])

    def open_lead(self, lead_id: str, wrapped: bytes | None, data: bytes | None) -> Lead | None:
        """A lead data row's lead; None once erased."""
        if data is None:
            return None
        if self.vault is None:
            raise LedgerError("these books were opened without the operator's key: leads do not open")
        return self.vault.open(lead_id, wrapped, data)

    # Privacy ----------------------------------------------------------------------------

    async def opt_out(self, request_id: str, hashes: Sequence[bytes], at: float) -> None:
        await self._write_steps(privacy.opt_out(request_id, hashes, at))

    async def delete(self, request_id: str, hashes: Sequence[bytes], at: float) -> privacy.Erasure:
        """Opt out and erase every lead with one of ``hashes`` (``privacy.delete``)."""
        erasure = await self._write_steps(privacy.delete(request_id, hashes, at))
        await self._scrub()
        return erasure

    async def erase_leads_before(self, request_id: str, cutoff: float, at: float) -> int:
        """Retention of personal data: erase every lead posted before ``cutoff``."""
        erased = 0
        while chunk := await self._write_steps(privacy.erase_before(request_id, cutoff, at)):
            erased += chunk
        if erased:
            await self._scrub()
        return erased

    async def suppressions_since(self, seq: int, limit: int) -> list[Row]:
        return await self._read_steps(privacy.suppressions_since(seq, limit))

    async def privacy_requests(self, since: float, until: float, limit: int,
                               after: tuple[float, str] | None = None) -> list[PrivacyRequest]:
        return await self._read_steps(privacy.requests(since, until, limit, after))

    async def rotate_key(self, old: OperatorKey, new: OperatorKey) -> int:
        """Re-wrap every key the books keep from ``old`` to ``new``: the number re-wrapped."""
        done, after = 0, ""
        while True:
            count, last = await self._write_steps(privacy.rewrap(old, new, after))
            done += count
            if last is None:
                return done
            after = last

    async def _scrub(self) -> None:
        """After an erasure: leave no old copy of an erased row in the database's files where
        the backend can see to that."""
        return None

    # What follows a sale ----------------------------------------------------------------

    async def purchases(self, query: PurchaseQuery) -> list[Purchase]:
        """Sales newest first, each with its lead as posted (None once erased) and its return."""
        return await self._read_steps(returns.purchases(query, self.open_lead))

    async def returns(self, query: ReturnQuery) -> list[Return]:
        return await self._read_steps(returns.returns(query))

    async def get_return(self, *, return_id: str | None = None, lead_id: str | None = None) -> Return | None:
        """The return of that id, or the one of that lead."""
        return await self._read_steps(returns.find_return(return_id=return_id, lead_id=lead_id))

    async def add_return(self, new: NewReturn) -> Return:
        """File a return, decided in the transaction that files it (``returns.add_return``):
        the lead's earlier return when it has one."""
        return await self._here(returns.add_return(new))

    async def decide_return(self, return_id: str, approve: bool, by: str, note: str | None, at: float,
                            reverse_payout: bool) -> Return | None:
        return await self._write_steps(returns.decide_return(return_id, approve, by, note, at, reverse_payout))

    async def set_outcome(self, sale: Sale, outcome: str, value_cents: int | None, at: float) -> None:
        await self._here(returns.set_outcome(sale, outcome, value_cents, at))

    async def _here(self, transaction: Transaction[T | NotYet]) -> T:
        """Run a write that needs its sale in the books; while the sale is on its way (a
        journal still holds it) try again, for ``wait_for_sale_s`` at most."""
        deadline = time.monotonic() + self.wait_for_sale_s
        while True:
            result = await self._write_steps(transaction)
            if not isinstance(result, NotYet):
                return result
            if time.monotonic() >= deadline:
                raise LedgerUnavailable("the sale is not in the shared books yet; retry")
            await asyncio.sleep(RETRY_NOT_YET_S)

    @abstractmethod
    async def _read_steps(self, transaction: Transaction[T]) -> T:
        """Run a reading transaction (``steps``) where the books are."""

    @abstractmethod
    async def _write_steps(self, transaction: Transaction[T]) -> T:
        """Run a writing transaction (``steps``) where the books are, durable when it returns."""

    @abstractmethod
    async def sold_counts(self, since_hour: float, since_day: float,
                          campaign_ids: Sequence[str] | None = None) -> dict[str, SoldCount]:
        """Live (non-test) sales per campaign since the start of the cap hour and day (epoch
        seconds), for refilling a shared store that lost its counts. Campaigns without a sale
        are absent."""

    @abstractmethod
    async def rollups(self, query: RollupQuery | RunningQuery) -> list[Row]:
        """Counter sums (``rollups.select``): one row per group, the keys then every counter
        of ``rollups.COUNTERS`` (with no keys, exactly one row, zeros when nothing counted);
        what reports read instead of the traffic."""

    @abstractmethod
    async def drop_traffic_before(self, cutoff: float) -> int:
        """Retention: drop ping and post rows older than ``cutoff`` that did not sell; sales,
        a sold ping's own ping and post rows, lead data and money rows are kept. Returns the
        number of rows dropped."""

    @property
    def writable(self) -> bool:
        """False from a failed commit on this host until the next one succeeds (disk full,
        read-only): a post is refused before its cascade then, so no buyer buys a lead
        the books cannot hold. A flag, no I/O: pings keep trying, and find the room again."""
        return True

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


def tally_sales(rows: Iterable[Row], since_hour: float, since_day: float,
                campaign_ids: Sequence[str] | None) -> dict[str, SoldCount]:
    """Sales rows (as ``codec.TABLES["sales"]`` orders them) counted per campaign: the one
    count of both backends and of the journal's rows not yet in a database. Each campaign's
    sales are in ping order, so reads of the same sales compare equal, whichever order the
    rows came in."""
    wanted = None if campaign_ids is None else set(campaign_ids)
    sales: dict[str, list[SoldLead]] = {}
    for row in rows:
        sale = codec.sale_of(row)
        if sale.test or sale.sold_at < since_day or (wanted is not None and sale.campaign_id not in wanted):
            continue
        sales.setdefault(sale.campaign_id, []).append(
            SoldLead(sale.ping_id, sale.sold_at >= since_hour, sale.buyer_price_cents))
    return {campaign_id: SoldCount(tuple(sorted(leads))) for campaign_id, leads in sales.items()}
