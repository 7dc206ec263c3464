"""Who is calling, and what they may see: the one place that decides it.

Every caller becomes a ``Principal``: an operator (the exchange's staff), a seller or a
buyer, found from an API key (``Access.by_key``) or, for the dashboard, from a signed-in
user's name (``Access.user``, ``Access.sign_in``). The principal carries its scope: which
roles an endpoint takes (``require``), the views of records it may have (``trace``,
``lead``: someone else's record is ``404 not_found``, never a filtered copy the handler
made), and the report dimensions, metrics and row filter it gets. Handlers never filter by
hand; they ask the principal. An ``Access`` is built once per config and swapped whole on
reload, like the rest of the config.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

from . import money
from .config import ROLE, Config
from .errors import ApiError, Code
from .ledger import Sale
from .schema import CampaignOutcome, LeadStatus, PingTrace, PostTrace
from .trace import PingRecord, rfc3339, to_trace, was_offered, was_sent


class Role(enum.StrEnum):
    OPERATOR = "operator"
    SELLER = "seller"
    BUYER = "buyer"


#: Report dimensions each role may group by, in the order a report lists them.
DIMENSIONS: dict[Role, tuple[str, ...]] = {
    Role.OPERATOR: ("hour", "day", "seller", "source", "sub_id", "vertical", "state", "buyer", "campaign"),
    Role.SELLER: ("hour", "day", "source", "sub_id", "vertical", "state"),
    Role.BUYER: ("hour", "day", "campaign", "seller", "source", "vertical", "state"),
}
_EVERYONE = ("pings", "priced", "posts", "sold", "returns", "conversions")
_SELLER = ("payout", "payout_per_post")
_BUYER = ("bids", "avg_bid", "offers", "accepted", "accept_rate", "spend", "cost_per_lead", "conversion_rate",
          "timeouts", "errors")
#: Report metrics each role gets, in the order a report lists them: a seller never sees
#: buyers' spend, revenue or margin; a buyer never sees sellers' payouts or the margin.
METRICS: dict[Role, tuple[str, ...]] = {
    Role.OPERATOR: _EVERYONE + _SELLER + _BUYER + ("bid_rate", "rejected", "revenue", "margin", "revenue_per_post",
                                                   "returned_amount"),
    Role.SELLER: _EVERYONE + _SELLER,
    Role.BUYER: _EVERYONE + _BUYER,
}

@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for, and through that what it may see.

    ``id`` is the operator's, seller's or buyer's id (for a signed-in operator, the user's
    name); ``test`` marks a seller's test key; ``user`` is the dashboard user's name, None
    for an API key."""

    role: Role
    id: str
    test: bool = False
    user: str | None = None

    def require(self, *roles: Role) -> None:
        """Refuse (403 forbidden) a principal of any other role."""
        if self.role not in roles:
            raise ApiError(Code.FORBIDDEN, f"a {self.role} may not use this: it is for "
                                           f"{' or '.join(str(r) for r in roles)}s")

    @property
    def seller_id(self) -> str | None:
        """The seller whose records alone this principal sees; None for everyone else."""
        return self.id if self.role is Role.SELLER else None

    @property
    def buyer_id(self) -> str | None:
        """The buyer whose records alone this principal sees; None for everyone else."""
        return self.id if self.role is Role.BUYER else None

    @property
    def dimensions(self) -> tuple[str, ...]:
        return DIMENSIONS[self.role]

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.role]

    def trace(self, record: PingRecord | None) -> PingTrace:
        """The ping's trace as this principal may see it; 404 when it is not theirs.

        An operator sees it all and a seller its own pings whole. A buyer sees a ping one
        of its campaigns was sent, through its own campaigns only: their outcomes, its own
        offers in the post, ``sold`` only when it bought (with its own price), and nothing
        of other buyers, the seller's price or the campaigns left out."""
        if record is not None:
            if self.role is Role.OPERATOR or (self.role is Role.SELLER and record.seller_id == self.id):
                return to_trace(record)
            if self.role is Role.BUYER:
                trace = _buyer_trace(record, self.id)
                if trace is not None:
                    return trace
        raise ApiError(Code.NOT_FOUND, "no such ping for this caller")

    def lead(self, sale: Sale | None, returned_at: float | None = None) -> LeadStatus:
        """A sold lead's status for its seller (and an operator): the seller's price, no
        personal data; ``returned`` once a return of it was approved (at ``returned_at``).
        Buyers have their purchases in their own API, not here (403)."""
        self.require(Role.SELLER, Role.OPERATOR)
        if sale is None or (self.role is Role.SELLER and sale.seller_id != self.id):
            raise ApiError(Code.NOT_FOUND, "no such lead for this caller")
        status = LeadStatus(lead_id=sale.lead_id, ping_id=sale.ping_id, status="sold",
                            price=money.to_amount(sale.seller_price_cents), sold_at=rfc3339(sale.sold_at))
        if returned_at is not None:
            status.status = "returned"
            status.returned_at = rfc3339(returned_at)
        return status

    def purchase(self, sale: Sale | None) -> Sale:
        """A sale this buyer may act on (return it, tell its outcome): its own purchase only;
        anyone else's, like an unknown lead, is 404. Other roles are 403."""
        self.require(Role.BUYER)
        if sale is None or sale.buyer_id != self.id:
            raise ApiError(Code.NOT_FOUND, "no such lead for this buyer")
        return sale


def _buyer_trace(record: PingRecord, buyer_id: str) -> PingTrace | None:
    campaigns = [o for o in record.outcomes if o.buyer_id == buyer_id]
    if not any(was_sent(o.outcome) for o in campaigns):
        return None
    own = {o.campaign_id for o in campaigns}
    trace = PingTrace(ping_id=record.ping_id, status="bid" if any(b.campaign_id in own for b in record.bids)
                      else "no_bid", test=record.test, created_at=rfc3339(record.created_at),
                      expires_at=rfc3339(record.expires_at), auction_ms=record.auction_ms, ranking=record.ranking,
                      campaigns=campaigns)
    post = record.post
    offers: list[CampaignOutcome] = [o for o in post.offers if o.buyer_id == buyer_id] if post is not None else []
    if post is not None and offers:
        bought = post.status == "sold" and post.offers[-1].buyer_id == buyer_id
        trace.post = PostTrace(status="sold" if bought else "unsold", offers=offers,
                               attempts=sum(1 for o in offers if was_offered(o.outcome)))
        if bought:
            cents = next(b.cents for b in record.bids if b.campaign_id == post.offers[-1].campaign_id)
            trace.post.price = money.to_amount(cents)
            if post.lead_id is not None:
                trace.post.lead_id = post.lead_id
    return trace


def api_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>`` (the scheme in any case),
    else ``X-API-Key``; an Authorization header of another scheme leaves X-API-Key to speak."""
    key = headers.get("X-API-Key")
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    return key or None


class Access:
    """Keys and users to principals, built once per config (read-only after)."""

    def __init__(self, config: Config) -> None:
        self._keys: dict[str, Principal] = {}
        for seller in config.sellers:
            self._keys.update({k: Principal(Role.SELLER, seller.id) for k in seller.api_keys})
            self._keys.update({k: Principal(Role.SELLER, seller.id, test=True) for k in seller.test_api_keys})
        for buyer in config.buyers:
            self._keys.update({k: Principal(Role.BUYER, buyer.id) for k in buyer.api_keys})
        for operator in config.operators:
            self._keys.update({k: Principal(Role.OPERATOR, operator.id) for k in operator.api_keys})
        self._users: dict[str, tuple[Principal, str]] = {}
        for user in config.users:
            self._users[user.name] = (_user_principal(user.name, user.role), user.password_hash)

    def by_key(self, key: str | None) -> Principal | None:
        """The key's principal; None for a missing or unknown key (401)."""
        return self._keys.get(key) if key else None

    def user(self, name: str) -> Principal | None:
        """A dashboard user's principal by name (any case), as the config says now: a
        session resolves its user through this on every request, so a user removed or given
        another role by a reload loses the old scope at once. None for an unknown user."""
        found = self._users.get(name.strip().lower())
        return None if found is None else found[0]

    def sign_in(self, name: str, password: str) -> Principal | None:
        """The user's principal if the password matches its argon2id hash, else None.

        Deliberately slow (an argon2id verification, tens of milliseconds of CPU and 64 MiB):
        call it off the event loop (``asyncio.to_thread``). An unknown name costs the same
        as a wrong password, so timing does not tell which names exist."""
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError
        found = self._users.get(name.strip().lower())
        hashed = found[1] if found is not None else _unknown_user_hash()
        try:
            PasswordHasher().verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return None
        return found[0] if found is not None else None


def _user_principal(name: str, role: str) -> Principal:
    match = ROLE.match(role)
    assert match is not None, "roles are checked when the config loads"
    if match["seller"] is not None:
        return Principal(Role.SELLER, match["seller"], user=name)
    if match["buyer"] is not None:
        return Principal(Role.BUYER, match["buyer"], user=name)
    return Principal(Role.OPERATOR, name, user=name)


_UNKNOWN: list[str] = []


def _unknown_user_hash() -> str:
    """A hash no password matches, made once with the same parameters as real ones."""
    if not _UNKNOWN:
        import os

        from argon2 import PasswordHasher
        _UNKNOWN.append(PasswordHasher().hash(os.urandom(32).hex()))
    return _UNKNOWN[0]
