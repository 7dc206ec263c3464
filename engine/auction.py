"""The ping auction and the post cascade: pure orchestration.

Data flows one way: eligibility (``targeting``) -> fan-out (``buyers``) -> ranking ->
the record (the books, ``ledger``, and the store); then, for a post: lock -> cascade over
the ranked bids, each offer reserving its cap first -> the result, in the books first.
Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Awaitable, TypeVar

import msgspec

from . import ids, money
from .buyers import BuyerClient, Call
from .config import Buyer, Campaign, Config, Seller, Vertical
from .errors import ApiError, Code, refused
from .formats.campaign import CampaignFormat, PingContext, PostContext, format_of
from .formats.pingpost import PingBody
from .formats.results import Answer, PostResult
from .journal import Journal, Write
from .ledger import Ledger, LedgerUnavailable, NullLedger
from .metrics import Metrics
from .privacy.suppression import Suppression
from .schema import CampaignOutcome, FieldError, Lead, PingFields, Try
from .store.base import Clock, Numbering, Reservation, Store, StoreUnavailable
from .targeting import Bid, Index, Selection, build_index, rank
from .trace import PingRecord, PostRecord, RankedBid

log = logging.getLogger("pingpost.auction")
T = TypeVar("T")

#: Time a store call may take past the seller's deadline (a healthy store needs about 1 ms).
STORE_GRACE_S = 0.05
#: Why no campaign was pinged for a consumer who opted out (a ``not_pinged`` reason).
OPTED_OUT = "opted_out"

_PING_FIELDS = PingFields.__struct_fields__


@dataclass(frozen=True, slots=True)
class SellerView:
    """A seller as the auction needs it: money rules in exact units."""

    seller: Seller
    share: Decimal
    min_bid_cents: int

    @classmethod
    def of(cls, seller: Seller) -> "SellerView":
        return cls(seller, money.share(seller.revenue_share), money.to_cents(seller.min_bid))


def lead_keys(lead: Lead) -> list[str]:
    """Duplicate-history keys: hashes of the normalized phone and email, never the values."""
    return ["p:" + hashlib.sha256(lead.phone.encode()).hexdigest(),
            "e:" + hashlib.sha256(lead.email.encode()).hexdigest()]


def buyer_lead(ping: PingFields, lead: Lead) -> dict[str, Any]:
    """The lead a buyer receives: the ping's fields with the lead's over them, attributes merged."""
    merged: dict[str, Any] = msgspec.structs.asdict(ping)
    for name in Lead.__struct_fields__:
        value = getattr(lead, name)
        if value is not msgspec.UNSET:
            merged[name] = value
    if isinstance(ping.attributes, dict) and isinstance(lead.attributes, dict):
        merged["attributes"] = {**ping.attributes, **lead.attributes}
    return {k: v for k, v in merged.items() if v is not msgspec.UNSET}


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything the engine derives from a config, built before any of it is used, so
    that swapping a config in (``Exchange.adopt``) is assignments only: a config that cannot
    be built leaves the running one whole."""

    config: Config
    index: Index
    campaigns: dict[str, Campaign]
    buyers: dict[str, Buyer]
    dedupe_buyers: list[str]
    sellers: dict[str, SellerView]
    verticals: dict[str, Vertical]
    formats: list[CampaignFormat]  # in the index's order of campaigns
    numbering: Numbering


def prepare(config: Config) -> Prepared:
    """Build what ``config`` needs. It changes nothing, so ``server.reload`` runs it off
    the event loop (the index is the slow part) and ``pingpost check`` runs it alone."""
    index = build_index(config)
    return Prepared(
        config=config, index=index, campaigns={c.id: c for c in config.campaigns},
        buyers={b.id: b for b in config.buyers}, dedupe_buyers=[b.id for b in config.buyers if b.dedupe_days > 0],
        sellers={s.id: SellerView.of(s) for s in config.sellers}, verticals={v.id: v for v in config.verticals},
        formats=[format_of(c) for c in index.campaigns],
        numbering=Numbering.of(config.campaigns, config.exchange))


class Auction:
    """One ping's auction while it runs: its clock, what each campaign did, the bids so far."""

    __slots__ = ("seller", "test", "ping", "campaigns", "accept_ppm", "started", "deadline", "now", "ping_id",
                 "outcomes", "not_pinged", "bids", "bid_ids", "timed_out")

    def __init__(self, seller: SellerView, test: bool, ping: PingFields, budget_ms: int,
                 campaigns: list[Campaign], accept_ppm: list[int] | None, now: float) -> None:
        self.seller = seller
        self.test = test
        self.ping = ping
        self.campaigns = campaigns
        #: The accept rates bids are weighed by (``expected`` ranking), numbered like ``campaigns``; None: by bid.
        self.accept_ppm = accept_ppm
        self.started = time.perf_counter()
        self.deadline = self.started + budget_ms / 1000
        self.now = now
        self.ping_id = ids.ordered()
        self.outcomes: dict[int, CampaignOutcome] = {}
        self.not_pinged: dict[str, int] | None = None
        self.bids: list[Bid] = []
        self.bid_ids: dict[int, str] = {}
        self.timed_out: list[str] = []

    def not_selected(self, selection: Selection) -> None:
        """Why each campaign not pinged is not. Past ``targeting.DETAIL_LIMIT`` of them the
        selection only counts them by reason, and so does the record: a ping costs
        microseconds, not milliseconds, and records stay small."""
        campaigns = self.campaigns
        for i, reason in selection.reasons:
            self.outcomes[i] = CampaignOutcome(campaign_id=campaigns[i].id, buyer_id=campaigns[i].buyer, outcome=reason)
        self.not_pinged = selection.counts or None

    def bid(self, i: int, cents: int, bid_id: str | None, ms: float) -> CampaignOutcome:
        c = self.campaigns[i]
        self.bids.append(Bid(i, cents, c.priority))
        if bid_id is not None:
            self.bid_ids[i] = bid_id
        outcome = self.outcomes[i] = CampaignOutcome(campaign_id=c.id, buyer_id=c.buyer, outcome="bid",
                                                     bid=money.to_amount(cents), ms=ms)
        return outcome

    def no_bid(self, i: int, reason: str, ms: float) -> CampaignOutcome:
        c = self.campaigns[i]
        if reason == "timeout":
            self.timed_out.append(c.id)
        outcome = self.outcomes[i] = CampaignOutcome(campaign_id=c.id, buyer_id=c.buyer, outcome=reason, ms=ms)
        return outcome


class Exchange:
    """One worker's auction engine over a config, a store and a buyer client."""

    def __init__(self, config: Config, store: Store, client: BuyerClient, metrics: Metrics,
                 clock: Clock = time.time, ledger: Ledger | None = None) -> None:
        self.store = store
        self.ledger: Ledger = ledger if ledger is not None else NullLedger()
        self.clock = clock
        self.client = client
        self.metrics = metrics
        self.journal = Journal()
        vault = self.ledger.vault
        #: The opt-out list as this worker holds it; followed from the books by the app.
        self.suppression = Suppression(vault.identifiers if vault is not None else None)
        self.adopt(prepare(config))

    def adopt(self, prepared: Prepared) -> None:
        """Swap in a prepared config whole, the store's numbering and the buyer formats with
        it; there is no await here, so every request sees the old config or the new one."""
        self.index: Index = prepared.index
        self.config = prepared.config
        self.campaigns: dict[str, Campaign] = prepared.campaigns
        self.buyers: dict[str, Buyer] = prepared.buyers
        self.dedupe_buyers = prepared.dedupe_buyers
        self.sellers = prepared.sellers
        self.verticals = prepared.verticals
        self.formats = prepared.formats
        self.post_formats = {c.id: f for c, f in zip(prepared.index.campaigns, prepared.formats)}
        self.store.adopt(prepared.numbering)

    async def find_ping(self, ping_id: str) -> PingRecord | None:
        """The ping's record, with its post: from the store while it holds the ping, then from
        the books (for ``[ledger] keep_days``); the books also answer while the store is
        unreachable. Whose it is, the caller's access decides."""
        try:
            record = await self.store.get_ping(ping_id)
        except StoreUnavailable:
            record = None
        return record if record is not None else await self.ledger.get_ping(ping_id)

    # Ping --------------------------------------------------------------------------------

    async def ping(self, seller: SellerView, test: bool, ping: PingFields, timeout_ms: int | None) -> PingRecord:
        """One auction within the seller's budget: who is asked, what they answer, the
        ranking, the record kept, then the metrics and the log line."""
        index = self.index
        accept_ppm = self.store.accept_ppm if self.config.exchange.ranking == "expected" else None
        auction = Auction(seller, test, ping, self._budget_ms(timeout_ms), index.campaigns, accept_ppm, self.clock())
        calls, called = self._calls(auction, index, self._eligible(auction, index))
        if calls:
            answers = await self.client.fan_out(calls, max(auction.deadline - time.perf_counter(), 0))
            self._read_answers(auction, called, answers)
        record = self._ranked(auction)
        await self._keep_ping(auction, record)
        self._observe_ping(record, len(calls))
        return record

    def _eligible(self, auction: Auction, index: Index) -> list[int]:
        """Who may be pinged: targeting's selection, or nobody for a consumer who opted out
        (every campaign of the vertical counted as not pinged for that reason)."""
        ping = auction.ping
        if self.suppression.ping_opted_out(ping):
            auction.not_pinged = {OPTED_OUT: len(index.by_vertical.get(ping.vertical, ()))}
            return []
        selection = index.select(ping, auction.seller.seller.id, auction.now, self.store.blocks, self.store.last_bids)
        auction.not_selected(selection)
        return selection.eligible

    def _budget_ms(self, timeout_ms: int | None) -> int:
        """The exchange's auction budget, or the seller's ``timeout_ms`` when that is shorter."""
        budget_ms = self.config.exchange.auction_timeout_ms
        return budget_ms if timeout_ms is None else min(budget_ms, timeout_ms)

    def _calls(self, auction: Auction, index: Index, eligible: list[int]) -> tuple[list[Call], list[int]]:
        """The buyer calls of the eligible campaigns (and their numbers), in their order; a
        fixed-price campaign bids its price at once. Each call may take what is left of the
        budget, at most its campaign's own timeout. This is where a buyer's ping request is
        rendered: every buyer of the default protocol shares one encoding of the ping
        (``PingBody``), a custom format makes its own from one context per ping."""
        campaigns = auction.campaigns
        formats = self.formats
        calls: list[Call] = []
        called: list[int] = []
        body: PingBody | None = None
        context: PingContext | None = None
        for i in eligible:
            c = campaigns[i]
            fixed = index.fixed_cents[i]
            if fixed >= 0:
                auction.bid(i, fixed, None, 0.0)
                continue
            tmax = min(c.timeout_ms, int((auction.deadline - time.perf_counter()) * 1000))
            target = formats[i].ping_target
            if target is not None:
                if body is None:
                    body = PingBody(auction.ping, auction.ping_id, auction.seller.seller.id, auction.test)
                calls.append((target, body.to(c.id, tmax), tmax / 1000))
            else:
                if context is None:
                    context = PingContext(auction.ping, auction.ping_id, auction.seller.seller.id, auction.test,
                                          auction.now)
                target, made = formats[i].ping(context, c.id, tmax)
                calls.append((target, made, tmax / 1000))
            called.append(i)
        return calls, called

    def _read_answers(self, auction: Auction, called: list[int], answers: list[Answer | None]) -> None:
        """Each called campaign's outcome, and its bid if it made one: this is where a
        buyer's ping answer is read, by its campaign's format. A call still pending at the
        deadline (None) is a timeout, whatever its own limit."""
        formats = self.formats
        for i, answer in zip(called, answers):
            if answer is None:
                outcome = auction.no_bid(i, "timeout", round((time.perf_counter() - auction.started) * 1000, 2))
            else:
                result = formats[i].read_bid(answer)
                if result.cents is not None:
                    outcome = auction.bid(i, result.cents, result.bid_id, answer.ms)
                else:
                    outcome = auction.no_bid(i, result.outcome, answer.ms)
            self.metrics.campaign_outcome(outcome.campaign_id, outcome.outcome)

    def _ranked(self, auction: Auction) -> PingRecord:
        """The bids ranked into the ping's record, by bid or by expected worth (bid x accept
        rate): bids under the seller's minimum are dropped, and the price is the seller's
        share of the top-ranked bid, its real bid whatever ranked it."""
        seller = auction.seller
        ranked, dropped = rank(auction.bids, seller.min_bid_cents, random.getrandbits(64), auction.accept_ppm)
        for bid in dropped:
            auction.outcomes[bid.campaign].outcome = "below_min_bid"
        campaigns = auction.campaigns
        now = auction.now
        return PingRecord(
            ping_id=auction.ping_id, seller_id=seller.seller.id, test=auction.test, created_at=now,
            expires_at=now + self.config.exchange.ping_ttl_s,
            auction_ms=round((time.perf_counter() - auction.started) * 1000, 2), ping=auction.ping,
            bids=[RankedBid(campaigns[b.campaign].id, b.cents, auction.bid_ids.get(b.campaign)) for b in ranked],
            outcomes=list(auction.outcomes.values()), not_pinged=auction.not_pinged,
            price_cents=money.apply_share(ranked[0].cents, seller.share) if ranked else None,
            ranking="bid" if auction.accept_ppm is None else "expected",
        )

    async def _keep_ping(self, auction: Auction, record: PingRecord) -> None:
        """The one place a finished ping record is kept: in the books (durable before the
        seller hears of it) and in the store (within the seller's deadline), side by side,
        so the answer waits for the slower of the two, not their sum. The campaigns that
        timed out (for benching) and every bid seen (the last known bids) go to the store
        in the same call. A ping the books hold but the store refused is answered 503:
        the books may know more than was answered, never less."""
        campaigns = auction.campaigns
        # One task for the books while this one waits for the store, not a gather of two.
        booked = asyncio.ensure_future(self.ledger.record_ping(record))
        refused: Exception | None = None
        saving = self.store.save_ping(record, 2 * self.config.exchange.ping_ttl_s, auction.timed_out,
                                      [(campaigns[b.campaign].id, b.cents) for b in auction.bids])
        try:
            await (saving if self.store.in_process else within(auction.deadline, saving))
        except Exception as exc:
            refused = exc
        await booked  # the books' failure first
        if refused is not None:
            raise refused

    def _observe_ping(self, record: PingRecord, pinged: int) -> None:
        """The metrics and the one log line of a ping kept."""
        self.metrics.auction_seconds.observe(record.auction_ms / 1000)
        self.metrics.ping_answered(record.status)
        price = record.price_cents
        log.info("ping", extra={"event": {
            "event": "ping", "ping_id": record.ping_id, "seller": record.seller_id, "test": record.test,
            "status": record.status, "price": money.to_amount(price) if price is not None else None,
            "pinged": pinged, "bids": len(record.bids), "auction_ms": record.auction_ms}})

    # Post --------------------------------------------------------------------------------

    async def post(self, seller: SellerView, ping_id: str, lead: Lead) -> PostRecord:
        """Post a lead for an earlier ping: idempotent per ping, one cascade at a time.

        The lock and the duplicate check go to the store together (one round trip). The
        books are asked only when the store cannot tell: it is unreachable, it forgot the
        ping, or a post held the lock before without storing a result. While this host
        cannot write its books, no cascade starts: no buyer buys a lead the books cannot hold.
        A consumer who opted out is refused first, whatever the ping."""
        self.suppression.refuse(lead)
        journaled = self.journal.result(ping_id, seller.seller.id)
        if journaled is not None:
            return journaled
        if not self.ledger.writable:
            raise LedgerUnavailable("the books could not take the last record")
        keys = lead_keys(lead)
        post_timeout_s = self.config.exchange.post_timeout_ms / 1000
        try:
            opened, duplicates = await within(time.perf_counter() + post_timeout_s, asyncio.gather(
                self.store.open_post(ping_id, post_timeout_s + 5), self._duplicates(keys)))
        except StoreUnavailable:
            # Another worker or host may have sold it and still be waiting for the store:
            # the books have every finished post, so they answer a re-post meanwhile.
            found = await self._booked_post(ping_id, seller)
            if found is not None:
                return found
            raise
        record = opened.record
        if record is None or record.seller_id != seller.seller.id:
            if opened.acquired:  # another seller's try must not hold the owner's lock
                await self.store.unlock_post(ping_id)
            found = await self._booked_post(ping_id, seller)
            if found is not None:
                return found  # the store forgot the ping; the books did not
            raise ApiError(Code.NOT_FOUND)
        if opened.result is not None:
            return opened.result
        if not opened.acquired:
            raise ApiError(Code.POST_IN_PROGRESS)
        if opened.retried:
            found = await self._booked_post(ping_id, seller)
            if found is not None:
                # A cascade finished whose result the store never took (its worker could
                # not reach the store, then the lock expired): it never runs again.
                await self.store.finish_post(ping_id, found)
                return found
        try:
            check_post(record, lead, self.clock(), self.verticals.get(record.ping.vertical))
        except ApiError:
            await self.store.unlock_post(ping_id)
            raise
        return await self._cascade(seller, record, lead, keys, duplicates)

    async def _booked_post(self, ping_id: str, seller: SellerView) -> PostRecord | None:
        """The ping's post result as the books hold it, if the ping is this seller's. When
        the books cannot answer (PostgreSQL down and the post not in this host's journal)
        the store's lock decides alone."""
        try:
            found = await self.ledger.get_ping(ping_id)
        except LedgerUnavailable:
            return None
        return found.post if found is not None and found.seller_id == seller.seller.id else None

    async def direct(self, seller: SellerView, test: bool, ping: PingFields, timeout_ms: int | None,
                     lead: Lead) -> tuple[PingRecord, PostRecord]:
        """Both phases in one call; the result is stored so the ping_id can be re-posted. A
        consumer who opted out is refused before any buyer is pinged."""
        self.suppression.refuse(lead)
        record = await self.ping(seller, test, ping, timeout_ms)
        if not self.ledger.writable:
            raise LedgerUnavailable("the books could not take the last record")
        keys = lead_keys(lead)
        duplicates = await self._duplicates(keys) if record.bids else set()
        return record, await self._cascade(seller, record, lead, keys, duplicates)

    async def _duplicates(self, keys: list[str]) -> set[str]:
        """Buyers (of those that dedupe) that already accepted this phone or email."""
        return await self.store.duplicate_buyers(self.dedupe_buyers, keys) if self.dedupe_buyers else set()

    async def _cascade(self, seller: SellerView, record: PingRecord, lead: Lead, keys: list[str],
                       duplicates: set[str]) -> PostRecord:
        """The lead down the ranked bids, then the result observed and kept, whatever ends the cascade."""
        cascade = Cascade(seller, record, lead, keys, duplicates, self.config.exchange.post_timeout_ms)
        try:
            await self._offer_in_turn(cascade, buyer_lead(record.ping, lead))
        finally:
            # Even when the cascade is cut short, what happened is logged first (the sale
            # survives in the log if the store is lost), then kept.
            self._observe_post(cascade)
            await self._keep_post(cascade)
        return cascade.result

    async def _offer_in_turn(self, cascade: Cascade, lead: dict[str, Any]) -> None:
        """Offer the lead down the ranked bids until a buyer takes it."""
        for bid in cascade.record.bids:
            campaign = self.campaigns.get(bid.campaign_id)
            if campaign is None:
                continue  # removed from the config since the ping
            if await self._offer(cascade, campaign, bid, lead):
                return

    async def _offer(self, cascade: Cascade, campaign: Campaign, bid: RankedBid, lead: dict[str, Any]) -> bool:
        """One offer, recorded as it ends: a duplicate, past the deadline, capped, or sent;
        True when the buyer took the lead. The reservation's commit or release, and a live
        offer's outcome for the accept rates (``expected`` ranking), are deferred to ride
        along with the next round trip."""
        offer = cascade.offer(campaign, bid.cents)
        if campaign.buyer in cascade.duplicates:
            return False
        remaining = cascade.deadline - time.perf_counter()
        if remaining <= 0:
            offer.outcome = "skipped:post_deadline"
            return False
        reservation = None
        if not cascade.record.test:
            try:
                reservation = await self._reserve(cascade, campaign.id, bid.cents)
            except TimeoutError:
                offer.outcome = "skipped:post_deadline"
                return False
            if reservation is None:
                offer.outcome = "capped"
                return False
            remaining = cascade.deadline - time.perf_counter()
        cascade.result.attempts += 1
        try:
            verdict, ms, tries = await self._post_to(cascade, campaign, bid, lead,
                                                     min(campaign.post_timeout_ms / 1000, remaining))
        except BaseException:
            if reservation is not None:
                cascade.deferred.append(partial(self.store.release, reservation))
            raise
        offer.outcome = verdict.outcome
        offer.ms = ms
        if tries:
            offer.tries = tries
        self.metrics.post_outcome(campaign.id, verdict.outcome)
        if not cascade.record.test and self.config.exchange.ranking == "expected":
            cascade.deferred.append(partial(self.store.count_offer, cascade.record.ping_id, campaign.id,
                                            verdict.accepted, self.clock()))
        if not verdict.accepted:
            if reservation is not None:
                cascade.deferred.append(partial(self.store.release, reservation))
            return False
        if reservation is not None:
            cascade.deferred.append(partial(self.store.commit, reservation))
            buyer = self.buyers[campaign.buyer]
            if buyer.dedupe_days > 0:
                cascade.deferred.append(partial(self.store.remember, buyer.id, cascade.keys, buyer.dedupe_days))
        cascade.sold(bid.cents, verdict.lead_id)
        return True

    async def _reserve(self, cascade: Cascade, campaign_id: str, cents: int) -> Reservation | None:
        """The campaign's caps take one more lead worth ``cents``, or None at a cap; the
        deferred writes go in the same round trip. ``TimeoutError`` when the post's deadline
        passes first (a store that lost its counts waits for the ledger's recount, and Redis
        for the refilled counts to settle): the
        reservation is given up, and the deferred writes, which may have run, stay deferred
        (running them again changes nothing)."""
        reserving = self.store.reserve(campaign_id, cents, self.clock(), cascade.record.ping_id)
        reservation: Reservation | None
        reservation, *_ = await asyncio.gather(by(cascade.deadline, reserving), *(write() for write in cascade.deferred))
        cascade.deferred.clear()
        return reservation

    async def _post_to(self, cascade: Cascade, campaign: Campaign, bid: RankedBid, lead: dict[str, Any],
                       timeout_s: float) -> tuple[PostResult, float, list[Try]]:
        """The lead posted to one buyer: this is where a buyer's post request is rendered
        and its answer read, by its campaign's format. Every try is returned when there was
        more than one (a post that could not be sent is tried again, see ``deliver``)."""
        record = cascade.record
        fmt = self.post_formats[campaign.id]
        target, body = fmt.post(PostContext(record.ping_id, campaign.id, record.seller_id, record.test, bid.cents,
                                            bid.bid_id, lead, self.clock()))
        started = time.perf_counter()
        answers = await self.client.deliver(target, body, timeout_s)
        result = fmt.read_post(answers[-1])
        if len(answers) == 1:
            return result, answers[0].ms, []
        tries = [Try(outcome=("rejected:" + a.failure) if a.failure else result.outcome, ms=a.ms) for a in answers]
        return result, round((time.perf_counter() - started) * 1000, 2), tries

    def _observe_post(self, cascade: Cascade) -> None:
        """The metrics and the one log line of a post, sold or not."""
        record, result = cascade.record, cascade.result
        elapsed = time.perf_counter() - cascade.started
        self.metrics.post_seconds.observe(elapsed)
        self.metrics.post_answered(result.status)
        log.info("post", extra={"event": {
            "event": "post", "ping_id": record.ping_id, "seller": record.seller_id, "test": record.test,
            "status": result.status, "attempts": result.attempts, "lead_id": result.lead_id,
            "campaign": result.offers[-1].campaign_id if result.status == "sold" else None,
            "price": money.to_amount(result.price_cents) if result.price_cents is not None else None,
            "post_ms": round(elapsed * 1000, 2)}})

    async def _keep_post(self, cascade: Cascade) -> None:
        """The one place a post's final result is kept: first in the books (durable before
        anything else learns of it, so whatever the store loses, the books can answer a
        re-post), then on the ping's record in the store, with the lock freed and every
        deferred write (releases, the commit, the duplicate history) done in one round trip.

        A sale the store cannot take now is kept in the journal and written when the store
        is back: the buyer has bought the lead. A sale the books cannot take (the disk
        filled since the ping) is answered 503, stored all the same so that no cascade
        runs again, and booked by the journal once there is room."""
        record, result, deferred = cascade.record, cascade.result, cascade.deferred
        sold = result.status == "sold"
        at = self.clock()

        def book() -> Awaitable[None]:
            return self.ledger.record_post(record, result, cascade.lead, at)

        def write() -> Awaitable[Any]:
            return asyncio.gather(*(each() for each in deferred), self.store.finish_post(record.ping_id, result))

        try:
            await book()
        except LedgerUnavailable:
            if not sold:
                await asyncio.gather(*(each() for each in deferred), self.store.unlock_post(record.ping_id),
                                     return_exceptions=True)
                raise
            try:
                await write()
            except StoreUnavailable:
                self.journal.add(record.ping_id, record.seller_id, result, book=book, store=write)
            else:
                self.journal.add(record.ping_id, record.seller_id, result, book=book)
            raise LedgerUnavailable("the lead was sold but the books cannot hold it yet; they will") from None
        try:
            await write()
        except StoreUnavailable:
            if not sold:
                raise
            self.journal.add(record.ping_id, record.seller_id, result, store=write)


class Cascade:
    """One post going down the ranked bids: its result so far, and the store writes that
    need no answer (releases, the commit, the duplicate history), deferred to ride along
    with the next round trip."""

    __slots__ = ("seller", "record", "lead", "keys", "duplicates", "started", "deadline", "result", "deferred")

    def __init__(self, seller: SellerView, record: PingRecord, lead: Lead, keys: list[str], duplicates: set[str],
                 timeout_ms: int) -> None:
        self.seller = seller
        self.record = record
        self.lead = lead
        self.keys = keys
        self.duplicates = duplicates
        self.started = time.perf_counter()
        self.deadline = self.started + timeout_ms / 1000
        self.result = PostRecord(status="unsold", attempts=0, offers=[])
        self.deferred: list[Write] = []

    def offer(self, campaign: Campaign, cents: int) -> CampaignOutcome:
        """The next offer's outcome, a duplicate until it is more."""
        offer = CampaignOutcome(campaign_id=campaign.id, buyer_id=campaign.buyer, outcome="duplicate",
                                bid=money.to_amount(cents))
        self.result.offers.append(offer)
        return offer

    def sold(self, cents: int, buyer_lead_id: str | None) -> None:
        """The lead is sold at ``cents``: the seller's price is its share of it."""
        result = self.result
        result.status = "sold"
        result.price_cents = money.apply_share(cents, self.seller.share)
        result.lead_id = ids.ordered()
        result.buyer_lead_id = buyer_lead_id


async def by(deadline: float, work: Awaitable[T]) -> T:
    """``work``, or ``TimeoutError`` once the deadline (``perf_counter`` time) passes: what a
    post's offer may wait for, which is not a store failure (see ``within``)."""
    async with asyncio.timeout(max(deadline - time.perf_counter(), 0)):
        return await work


async def within(deadline: float, work: Awaitable[T]) -> T:
    """A store call bounded by the seller's deadline (``perf_counter`` time) plus a little:
    a store that stops answering costs the seller a 503, never the deadline."""
    try:
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0) + STORE_GRACE_S):
            return await work
    except TimeoutError:
        raise StoreUnavailable("the store did not answer within the deadline") from None


def check_post(record: PingRecord, lead: Lead, now: float, declared: Vertical | None) -> None:
    """Refusals that need the ping: no bid to sell to, expired, a lead that is not the one pinged,
    or attributes the ping's vertical (``declared``, if it declares them) does not take."""
    if record.price_cents is None:
        raise ApiError(Code.NO_BID)
    if now >= record.expires_at:
        raise ApiError(Code.PING_EXPIRED)
    check_same_lead(record.ping, lead, "lead")
    if declared is not None and isinstance(lead.attributes, dict):
        problems = declared.problems(lead.attributes, "lead.attributes")
        if problems:
            raise refused(problems)


def check_same_lead(ping: PingFields, lead: Lead, path: str) -> None:
    """Fields the lead repeats must be the ones the buyers bid on. Both come normalized
    (``server.ping_of``, ``server.lead_of``: 5-digit zip, upper-case state)."""
    for name in _PING_FIELDS:
        repeated = getattr(lead, name, msgspec.UNSET)
        if repeated is msgspec.UNSET or name == "attributes":
            continue
        pinged = getattr(ping, name)
        if pinged is not msgspec.UNSET and repeated != pinged:
            raise ApiError(Code.PING_MISMATCH, f"{path}.{name} differs from the ping",
                           [FieldError(f"{path}.{name}", "differs from the ping")])
