"""The seller API's error answers: one table of codes, and one exception raised anywhere
below the server.

``Code`` is the only list of error codes: the server raises them, the OpenAPI document
lists them per status (``openapi.document``), docs/api.md documents each, and the tests
read their statuses from here.
"""

from __future__ import annotations

import enum

from .schema import ErrorDetail, ErrorResponse, FieldError


class Code(enum.StrEnum):
    """An error code, with its HTTP status and the message it is answered with when the
    raise site has nothing more precise to say."""

    status: int
    message: str

    def __new__(cls, code: str, status: int, message: str) -> Code:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.message = message
        return member

    MALFORMED_JSON = "malformed_json", 400, "the body is not UTF-8 JSON"
    MALFORMED_REQUEST = "malformed_request", 400, "not a valid HTTP/1.1 request"
    UNAUTHORIZED = "unauthorized", 401, "missing or unknown API key"
    FORBIDDEN = "forbidden", 403, "this address may not use this key"
    NOT_FOUND = "not_found", 404, "no such ping for this seller"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "this method is not allowed here"
    REQUEST_TIMEOUT = "request_timeout", 408, "the body did not arrive in time"
    POST_IN_PROGRESS = "post_in_progress", 409, "this ping is being posted; retry for the result"
    NO_BID = "no_bid", 409, "this ping got no bid and cannot be posted"
    OPTED_OUT = "opted_out", 409, "this lead's consumer opted out: no buyer is offered it"
    RETURN_WINDOW_CLOSED = "return_window_closed", 409, "the lead's return window has closed"
    PING_EXPIRED = "ping_expired", 410, "the ping expired; send a new ping"
    PAYLOAD_TOO_LARGE = "payload_too_large", 413, "the body is too large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415, "send Content-Type: application/json"
    VALIDATION_ERROR = "validation_error", 422, "a field breaks its rule"
    PII_IN_PING = "pii_in_ping", 422, "personal data is not accepted in a ping"
    PING_MISMATCH = "ping_mismatch", 422, "the lead differs from the ping"
    INTERNAL_ERROR = "internal_error", 500, "internal error"
    OVERLOADED = "overloaded", 503, "too many auctions in flight; retry shortly"
    SHUTTING_DOWN = "shutting_down", 503, "this exchange is shutting down; retry elsewhere"
    STORE_UNAVAILABLE = "store_unavailable", 503, "the shared store is unreachable; retry"
    LEDGER_UNAVAILABLE = "ledger_unavailable", 503, "the exchange cannot record this now; retry"


class ApiError(Exception):
    """A refusal in the seller API's error shape; its status is its code's."""

    def __init__(self, code: Code, message: str | None = None, fields: list[FieldError] | None = None) -> None:
        self.code = code
        self.status = code.status
        self.message = code.message if message is None else message
        self.fields = fields or []
        super().__init__(self.message)

    def body(self) -> ErrorResponse:
        return ErrorResponse(ErrorDetail(self.code.value, self.message, self.fields))


def refused(fields: list[FieldError]) -> ApiError:
    """A 422 validation_error naming every bad field at once."""
    return ApiError(Code.VALIDATION_ERROR, "; ".join(f"{f.path}: {f.message}" for f in fields), fields)
