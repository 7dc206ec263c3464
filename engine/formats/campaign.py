"""Each campaign's format, built once per config: how its ping and post are made and read.

The default protocol's ping is the hot path of every benchmark: every such buyer of one
ping gets one shared body (``pingpost.PingBody``) sent to its ``ping_target``, so the auction
makes that body itself, once per ping, without a call per buyer. A custom format makes each
request from one context per ping (``PingContext``: the values its fields read, built at
most once per ping) or per offer (``PostContext``).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from .. import http1, money
from ..schema import PingFields
from . import pingpost
from .results import Answer, BidResult, PostResult
from .stage import CompiledStage, compile_stage

if TYPE_CHECKING:
    from ..config import Campaign

Request = tuple[http1.Target, bytes]


def _today(now: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()


class PingContext:
    """One ping as every buyer's request is made from it."""

    __slots__ = ("ping", "ping_id", "seller_id", "test", "now", "_values", "_today")

    def __init__(self, ping: PingFields, ping_id: str, seller_id: str, test: bool, now: float) -> None:
        self.ping = ping
        self.ping_id = ping_id
        self.seller_id = seller_id
        self.test = test
        self.now = now
        self._values: dict[str, Any] | None = None
        self._today: datetime.date | None = None

    def values(self) -> dict[str, Any]:
        """The ping's fields and the exchange's own, as a custom format's fields read them."""
        if self._values is None:
            fields = {k: v for k, v in msgspec.structs.asdict(self.ping).items() if v is not msgspec.UNSET}
            self._values = {**fields, "ping_id": self.ping_id, "seller_id": self.seller_id, "test": self.test}
        return self._values

    def today(self) -> datetime.date:
        """The date (UTC) an age is counted to."""
        if self._today is None:
            self._today = _today(self.now)
        return self._today


class PostContext:
    """One offer of a lead to one campaign."""

    __slots__ = ("ping_id", "campaign_id", "seller_id", "test", "cents", "reference", "lead", "now")

    def __init__(self, ping_id: str, campaign_id: str, seller_id: str, test: bool, cents: int,
                 reference: str | None, lead: dict[str, Any], now: float) -> None:
        self.ping_id = ping_id
        self.campaign_id = campaign_id
        self.seller_id = seller_id
        self.test = test
        self.cents = cents
        self.reference = reference
        self.lead = lead
        self.now = now

    def values(self) -> dict[str, Any]:
        values = {**self.lead, "ping_id": self.ping_id, "campaign_id": self.campaign_id, "seller_id": self.seller_id,
                  "test": self.test, "price": money.to_amount(self.cents)}
        if self.reference is not None:
            values["reference"] = self.reference
        return values


class CampaignFormat:
    """The two pure functions per message of one campaign. ``ping_target``: where the
    default protocol's shared ping body goes; None when the format makes each ping request
    itself (``ping``)."""

    __slots__ = ("ping_target",)

    def __init__(self, ping_target: http1.Target | None) -> None:
        self.ping_target = ping_target

    def ping(self, context: PingContext, campaign_id: str, tmax_ms: int) -> Request:
        raise NotImplementedError

    def read_bid(self, answer: Answer) -> BidResult:
        raise NotImplementedError

    def post(self, context: PostContext) -> Request:
        raise NotImplementedError

    def read_post(self, answer: Answer) -> PostResult:
        raise NotImplementedError


class Pingpost(CampaignFormat):
    """The exchange's own protocol: one body per ping for every such buyer."""

    __slots__ = ("post_target",)

    def __init__(self, campaign: Campaign) -> None:
        headers = {**campaign.headers, "Content-Type": "application/json"}
        super().__init__(None if campaign.ping_url is None else http1.Target.of(campaign.ping_url, headers))
        # A lead is never sent twice: no resend on a connection the buyer dropped.
        self.post_target = http1.Target.of(campaign.post_url, headers, resend=False)

    read_bid = staticmethod(pingpost.read_bid)

    def post(self, context: PostContext) -> Request:
        return self.post_target, pingpost.post_body(context.ping_id, context.reference, context.campaign_id,
                                                    context.cents, context.test, context.lead)

    read_post = staticmethod(pingpost.read_post)


class Custom(CampaignFormat):
    """A buyer's own API, as its campaign's ``ping`` and ``post`` describe it."""

    __slots__ = ("ping_stage", "post_stage")

    def __init__(self, campaign: Campaign) -> None:
        assert campaign.post is not None  # the config refuses a custom campaign without one
        super().__init__(None)
        self.ping_stage: CompiledStage | None = None
        if campaign.ping is not None and campaign.ping_url is not None:
            self.ping_stage = compile_stage(campaign.ping, "ping", campaign.ping_url, campaign.headers)
        self.post_stage = compile_stage(campaign.post, "post", campaign.post_url, campaign.headers)

    def ping(self, context: PingContext, campaign_id: str, tmax_ms: int) -> Request:
        assert self.ping_stage is not None
        values = {**context.values(), "campaign_id": campaign_id, "tmax_ms": tmax_ms}
        return self.ping_stage.request.render(values, context.today())

    def read_bid(self, answer: Answer) -> BidResult:
        assert self.ping_stage is not None
        return self.ping_stage.answer.read_bid(answer)

    def post(self, context: PostContext) -> Request:
        return self.post_stage.request.render(context.values(), _today(context.now))

    def read_post(self, answer: Answer) -> PostResult:
        return self.post_stage.answer.read_post(answer)


def format_of(campaign: Campaign) -> CampaignFormat:
    return Custom(campaign) if campaign.format == "custom" else Pingpost(campaign)

