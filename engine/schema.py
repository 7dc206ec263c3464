"""Every message that crosses the exchange's edge, as msgspec Structs.

One Struct per message, built once at import: msgspec decodes and validates in a single
pass, and the same Structs produce the OpenAPI document (``openapi.document()``), so the docs
cannot drift from what the server accepts.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal, Union

from msgspec import UNSET, Meta, Struct, UnsetType

#: Whole numbers are kept to the signed 64-bit range: every buyer and store can hold them.
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Scalar = Union[str, Int64, float, bool]
AttrValue = Union[Scalar, list[Scalar]]
Attributes = Annotated[dict[Annotated[str, Meta(min_length=1, max_length=64)], AttrValue],
                       Meta(max_length=64, description=("At most 64 keys; values are strings, numbers (whole numbers "
                                                        "in the signed 64-bit range), booleans or lists of them."))]
# Patterns end in (?!\n)$: msgspec matches with Python's re, whose $ also matches before a final
# newline ("auto\n" passed); the lookahead keeps them exact there and in the OpenAPI (ECMA) reading.
Vertical = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}(?!\n)$", examples=["auto_insurance"])]
Zip = Annotated[str, Meta(pattern=r"^[0-9]{5}(-[0-9]{4})?(?!\n)$", examples=["90210"])]
StateCode = Annotated[str, Meta(pattern=r"^[A-Za-z]{2}(?!\n)$", examples=["CA"])]
ShortText = Annotated[str, Meta(max_length=64)]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}(?!\n)$")]
Quality = Annotated[int, Meta(ge=0, le=100)]
Name = Annotated[str, Meta(min_length=1, max_length=64)]
LongText = Annotated[str, Meta(max_length=128)]
HttpsUrl = Annotated[str, Meta(pattern=r"^https://[^\s]+(?!\n)$", max_length=2048)]
Email = Annotated[str, Meta(min_length=3, max_length=254)]
Phone = Annotated[str, Meta(min_length=10, max_length=32)]
Amount = Annotated[float, Meta(ge=0)]


#: What each request field must be, in the words of a validation error (``must be ...``): one
#: wording whatever the constraint that failed. A test holds every request field to an entry.
RULES: dict[str, str] = {
    "vertical": "1 to 64 characters of a-z, 0-9 and _",
    "zip": "5 digits or ZIP+4 (12345-6789)",
    "state": "a 2-letter US state or territory code",
    "source_id": "a string of at most 64 characters",
    "sub_id": "a string of at most 64 characters",
    "quality_score": "a whole number from 0 to 100",
    "tcpa_consent": "true or false",
    "email_sha256": "64 hexadecimal characters (a SHA-256)",
    "phone_sha256": "64 hexadecimal characters (a SHA-256)",
    "attributes": "an object of at most 64 attributes, each key 1 to 64 characters",
    "timeout_ms": "a whole number of milliseconds from 1 to 600000",
    "ping_id": "a string of 1 to 64 characters",
    "lead": "an object",
    "first_name": "1 to 64 characters after trimming",
    "last_name": "1 to 64 characters after trimming",
    "email": "a valid email address",
    "phone": "a US phone number: 10 digits, any punctuation, an optional leading +1",
    "address": "a string of at most 128 characters",
    "city": "a string of at most 128 characters",
    "ip_address": "an IPv4 or IPv6 address",
    "dob": "a date written YYYY-MM-DD",
    "consent_cert_url": "an https URL of at most 2048 characters",
    "lead_id": "a string of 1 to 64 characters",
    "reason": "a string of 1 to 64 characters",
    "note": "a string of at most 1000 characters",
    "outcome": "one of contacted, converted, no_contact, bad_data",
    "value": "a number from 0 up",
}
ATTRIBUTE_RULE = "a string, a number, true or false, or a list of them"
WHOLE_NUMBER_RULE = f"a whole number from {-(2**63)} to {2**63 - 1}"
NUMBER_RULE = "a number a 64-bit float can hold"


class Described(Struct, kw_only=True, forbid_unknown_fields=True):
    """The optional non-personal fields a ping carries and a lead may repeat."""

    state: StateCode | UnsetType = UNSET
    source_id: ShortText | UnsetType = UNSET
    sub_id: ShortText | UnsetType = UNSET
    quality_score: Quality | UnsetType = UNSET
    tcpa_consent: bool | UnsetType = UNSET
    email_sha256: Sha256 | UnsetType = UNSET
    phone_sha256: Sha256 | UnsetType = UNSET
    attributes: Attributes | UnsetType = UNSET


class PingFields(Described, kw_only=True, forbid_unknown_fields=True):
    """The non-personal description of a lead that buyers bid on."""

    vertical: Vertical
    zip: Zip


class PingRequest(PingFields, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/ping."""

    timeout_ms: Annotated[int, Meta(ge=1, le=600_000)] | UnsetType = UNSET


class Lead(Described, kw_only=True, forbid_unknown_fields=True):
    """The full lead of a post; the ping's fields may be repeated and must then agree."""

    first_name: Name
    last_name: Name
    email: Email
    phone: Phone
    zip: Zip | UnsetType = UNSET
    vertical: Vertical | UnsetType = UNSET
    address: LongText | UnsetType = UNSET
    city: LongText | UnsetType = UNSET
    ip_address: Annotated[str, Meta(max_length=64)] | UnsetType = UNSET
    dob: datetime.date | UnsetType = UNSET
    consent_cert_url: HttpsUrl | UnsetType = UNSET


class PostLead(Lead, kw_only=True, forbid_unknown_fields=True):
    """The lead of POST /v1/post: its zip is required here (it must equal the ping's)."""

    zip: Zip


class PostRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/post."""

    ping_id: Annotated[str, Meta(min_length=1, max_length=64)]
    lead: PostLead


class DirectPostRequest(PingRequest, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/leads: ping fields at the top level plus the lead."""

    lead: Lead


class PingResponse(Struct, kw_only=True, omit_defaults=True):
    ping_id: str
    status: Literal["bid", "no_bid"]
    expires_at: str
    auction_ms: float
    price: float | UnsetType = UNSET


class PostResponse(Struct, kw_only=True, omit_defaults=True):
    ping_id: str
    status: Literal["sold", "unsold"]
    attempts: int
    price: float | UnsetType = UNSET
    lead_id: str | UnsetType = UNSET


class LeadStatus(Struct, kw_only=True, omit_defaults=True):
    """GET /v1/leads/{lead_id}: a sold lead as its seller sees it, never its personal data."""

    lead_id: str
    ping_id: str
    status: Literal["sold", "returned"]
    price: float
    sold_at: str
    returned_at: str | UnsetType = UNSET


# The buyers' own API ------------------------------------------------------------------

LeadId = Annotated[str, Meta(min_length=1, max_length=64)]
Note = Annotated[str, Meta(max_length=1000)]
Outcome = Literal["contacted", "converted", "no_contact", "bad_data"]
ReturnStatus = Literal["approved", "pending", "denied"]


class ReturnRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/buyer/returns: a lead the buyer bought, one of its return reasons."""

    lead_id: LeadId
    reason: Annotated[str, Meta(min_length=1, max_length=64)]
    note: Note | UnsetType = UNSET


class DecisionRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/returns/{return_id}/approve or /deny (the body is optional)."""

    note: Note | UnsetType = UNSET


class OutcomeRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/buyer/outcomes: what became of a lead the buyer bought; the latest counts."""

    lead_id: LeadId
    outcome: Outcome
    value: Amount | UnsetType = UNSET


class OutcomeAnswer(Struct, kw_only=True, omit_defaults=True):
    lead_id: str
    outcome: Outcome
    value: float | UnsetType = UNSET


class ReturnAnswer(Struct, kw_only=True, omit_defaults=True):
    """A return: filed by its buyer, approved at once or pending, decided by an operator."""

    return_id: str
    lead_id: str
    status: ReturnStatus
    reason: str
    buyer_id: str
    seller_id: str
    campaign_id: str
    price: float
    sold_at: str
    requested_at: str
    note: str | UnsetType = UNSET
    decided_at: str | UnsetType = UNSET
    decided_by: str | UnsetType = UNSET
    decision_note: str | UnsetType = UNSET


class ReturnList(Struct, kw_only=True):
    """GET /v1/returns: oldest first; ``next_cursor`` null on the last page."""

    returns: list[ReturnAnswer]
    next_cursor: str | None


class ConsumerRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/privacy/opt-outs and /v1/privacy/deletions: the consumer, by email or phone
    or both (at least one), normalized as in a lead."""

    email: Email | UnsetType = UNSET
    phone: Phone | UnsetType = UNSET


class OptOutAnswer(Struct, kw_only=True):
    request_id: str


class DeletionAnswer(Struct, kw_only=True):
    request_id: str
    leads_erased: Annotated[int, Meta(description="Leads whose personal data this request made unreadable")]


PrivacyKind = Literal["opt_out", "deletion", "retention"]


class PrivacyRequestAnswer(Struct, kw_only=True):
    """One entry of the privacy request log: what was done and when, never whose."""

    request_id: str
    kind: Annotated[PrivacyKind, Meta(description=(
        "opt_out and deletion: an operator's request; retention: the exchange's own erasure of leads "
        "past [privacy] keep_lead_days"))]
    received_at: str
    completed_at: str | None
    leads_erased: int


class PrivacyRequestList(Struct, kw_only=True):
    """GET /v1/privacy/requests: oldest first; ``next_cursor`` null on the last page."""

    requests: list[PrivacyRequestAnswer]
    next_cursor: str | None


class Purchase(Struct, kw_only=True, omit_defaults=True):
    """A lead the buyer bought, with the lead as it was posted to it (null once erased)."""

    lead_id: str
    campaign_id: str
    ping_id: str
    price: float
    sold_at: str
    status: Literal["sold", "returned"]
    test: bool
    lead: dict[str, Any] | None
    erased: bool | UnsetType = UNSET
    returned_at: str | UnsetType = UNSET


class PurchaseList(Struct, kw_only=True):
    """GET /v1/buyer/leads: newest first; ``next_cursor`` null on the last page."""

    leads: list[Purchase]
    next_cursor: str | None


class FieldError(Struct):
    path: str
    message: str


class ErrorDetail(Struct):
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorResponse(Struct):
    error: ErrorDetail


class Try(Struct, kw_only=True):
    """One try of a post offer: a post that could not be sent is tried again."""

    outcome: str
    ms: float


class CampaignOutcome(Struct, kw_only=True, omit_defaults=True):
    """What happened to one campaign in one ping or post (the per-lead trace)."""

    campaign_id: str
    buyer_id: str
    outcome: str
    bid: float | UnsetType = UNSET
    ms: float | UnsetType = UNSET
    tries: Annotated[list[Try], Meta(description=(
        "Every try of a post offer, when there was more than one: a post that failed before it "
        "could reach the buyer (no connection, no address) is tried again"))] | UnsetType = UNSET


class PostTrace(Struct, kw_only=True, omit_defaults=True):
    status: Literal["sold", "unsold"]
    attempts: int
    offers: list[CampaignOutcome]
    price: float | UnsetType = UNSET
    lead_id: str | UnsetType = UNSET


#: How a ping's bids are ordered (``[exchange] ranking``): by the bid, or by its expected
#: worth, the bid times the campaign's recent accept rate.
Ranking = Literal["bid", "expected"]


class PingTrace(Struct, kw_only=True, omit_defaults=True):
    """GET /v1/pings/{ping_id}: why a lead sold or did not."""

    ping_id: str
    status: Literal["bid", "no_bid"]
    test: bool
    created_at: str
    expires_at: str
    auction_ms: float
    ranking: Annotated[Ranking, Meta(description=(
        "How the bids were ordered: by bid, or by expected worth (bid times the campaign's recent "
        "accept rate); either way the price is the top-ranked bidder's own bid times the seller's share"))]
    campaigns: list[CampaignOutcome]
    not_pinged: Annotated[dict[str, int], Meta(description=(
        "Campaigns not pinged, counted by reason; given instead of one entry each when there are "
        "more than 64 of them"))] | UnsetType = UNSET
    price: float | UnsetType = UNSET
    post: PostTrace | UnsetType = UNSET


class Health(Struct):
    status: str


# Buyer protocol (section 3) -------------------------------------------------------------


class BuyerPing(Struct, kw_only=True, omit_defaults=True):
    """What every buyer of one ping receives alike; ``buyers.PingBody`` puts each buyer's
    ``campaign_id`` and ``tmax_ms`` in front of these fields."""

    ping_id: str
    vertical: str
    zip: str
    seller_id: str
    test: bool
    state: str | UnsetType = UNSET
    source_id: str | UnsetType = UNSET
    sub_id: str | UnsetType = UNSET
    quality_score: int | UnsetType = UNSET
    tcpa_consent: bool | UnsetType = UNSET
    email_sha256: str | UnsetType = UNSET
    phone_sha256: str | UnsetType = UNSET
    attributes: dict[str, Any] | UnsetType = UNSET


class BidAnswer(Struct, kw_only=True):
    """A buyer's bid. Extra fields are ignored: buyers add their own tracking data."""

    bid: float | None = None
    bid_id: str | None = None


class BuyerPost(Struct, kw_only=True, omit_defaults=True):
    ping_id: str
    campaign_id: str
    price: float
    test: bool
    lead: dict[str, Any]
    bid_id: str | None = None


class PostAnswer(Struct, kw_only=True):
    accepted: bool
    lead_id: str | None = None
    reason: str | None = None
