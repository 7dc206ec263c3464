"""The seller-facing HTTP app: auth, address rules, limits, decoding and the error shape.

Everything per-request that can be prepared once is prepared in ``make_app``: decoders,
key lookups, proxy networks, the OpenAPI bytes. Handlers decode with msgspec in one pass,
normalize, and hand typed values to ``auction.Exchange``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from functools import partial
from typing import Any, Awaitable, Callable, TypeVar, cast

import msgspec
from aiohttp import web

from . import ids, money, normalize, outcomes, purchases, reports, returns
from .access import Access, Principal, Role, api_key
from .auction import Exchange, SellerView, check_same_lead, prepare
from .buyers import BuyerClient
from .config import Config, Vertical
from .connections import DIRECT, BodyTimeout, Handler, parser_reason
from .errors import ApiError, Code, refused
from .ledger import Ledger, LedgerUnavailable, NullLedger
from .ledger.returns import APPROVED
from .metrics import CONTENT_TYPE, Metrics
from .openapi import document
from .privacy import keys
from .privacy import requests as privacy
from .schema import (ATTRIBUTE_RULE, NUMBER_RULE, RULES, WHOLE_NUMBER_RULE, ConsumerRequest, DecisionRequest,
                     DirectPostRequest, FieldError, Health, Lead, OutcomeRequest, PingFields, PingRequest, PingResponse,
                     PostRequest, PostResponse, ReturnRequest)
from .store.base import Clock, Store, StoreUnavailable
from .trace import PingRecord, PostRecord, rfc3339
from .ui import make_dashboard

log = logging.getLogger("pingpost.server")

MAX_BODY = 64 * 1024
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_PING_FIELDS = PingFields.__struct_fields__

EXCHANGE = web.AppKey("exchange", Exchange)


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(payload), status=status, content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), error.status)


# Decoding ----------------------------------------------------------------------------------
#
# The hot path decodes and validates in one msgspec pass, then normalizes. Only when that fails
# is the body read again as plain JSON and checked field by field (``_explain``), so that the
# seller learns every bad field at once, each in the words of ``schema.RULES``.

#: The fields stored in their normalized form; the function answers None for an invalid value.
_NORMALIZED: dict[str, Callable[[str], str | None]] = {
    "first_name": normalize.name, "last_name": normalize.name, "email": normalize.email,
    "phone": normalize.phone, "state": normalize.state, "ip_address": normalize.ip_address,
}
#: The ping's free texts, searched for personal data (the other fields have a fixed form).
_PING_TEXTS = ("vertical", "source_id", "sub_id")
_INT64 = range(-(2**63), 2**63)
Verticals = dict[str, Vertical]


class _TooLarge:
    """A number of the body that no float holds (``1e400``): explained, never accepted."""


def _plain_float(text: str) -> float | _TooLarge:
    value = float(text)
    return value if math.isfinite(value) else _TooLarge()


_decode_plain = msgspec.json.Decoder(float_hook=_plain_float).decode
_UNREAD = object()


def _malformed(message: str | None = None) -> ApiError:
    return ApiError(Code.MALFORMED_JSON, message)


def _plain_json(body: bytes) -> Any:
    """The body as plain JSON values, for explaining a validation error. msgspec validates
    while it parses, so a body can fail validation before its bad syntax or bytes are
    reached: those are 400 malformed_json all the same, and so is a body nested deeper than
    the plain decoder goes (about a thousand levels; no request nests more than four).
    ``_UNREAD`` for an integer of thousands of digits, which no decoder reads."""
    try:
        return _decode_plain(body)
    except RecursionError:
        raise _malformed("the body nests arrays or objects too deeply") from None
    except msgspec.ValidationError:  # a subclass of DecodeError: test it first
        return _UNREAD
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _malformed() from None


def _field_error(exc: msgspec.ValidationError) -> ApiError:
    """msgspec's own first error, when the plain document cannot be read to explain it:
    "... - at `$.lead.zip`" becomes path ``lead.zip`` with that field's rule."""
    message, _, where = str(exc).partition(" - at `")
    path = where.removeprefix("key` in `").rstrip("`").removeprefix("$").lstrip(".").partition("[")[0]
    if "out of range" in message:
        rule = WHOLE_NUMBER_RULE if message.startswith("Integer") else NUMBER_RULE
    else:
        rule = RULES.get(path.rpartition(".")[2], "valid JSON of this request's shape")
    return refused([FieldError(path or "$", f"must be {rule}")])


def _scalar_problem(value: Any) -> str | None:
    """What an attribute value (or list item) must be instead, or None when it is fine."""
    kind = type(value)
    if kind is str or kind is float or kind is bool:
        return None
    if kind is int:
        return None if value in _INT64 else WHOLE_NUMBER_RULE
    return NUMBER_RULE if kind is _TooLarge else ATTRIBUTE_RULE


def _explain_attributes(value: Any, path: str, declared: Vertical | None) -> list[FieldError]:
    if not isinstance(value, dict) or len(value) > 64 or not all(1 <= len(key) <= 64 for key in value):
        return [FieldError(path, f"must be {RULES['attributes']}")]
    problems: list[FieldError] = []
    fine: dict[str, Any] = {}
    for key, item in value.items():
        items = enumerate(item) if type(item) is list else ((None, item),)
        found = [FieldError(f"{path}.{key}" + ("" if i is None else f"[{i}]"), f"must be {rule}")
                 for i, x in items if (rule := _scalar_problem(x)) is not None]
        if found:
            problems += found
        else:
            fine[key] = item
    return problems + (declared.problems(fine, path) if declared is not None else [])


def _explain(raw: Any, struct: type[msgspec.Struct], path: str, verticals: Verticals,
             vertical: Vertical | None = None) -> list[FieldError]:
    """Every problem of a plain JSON document as a request Struct, in the body's order (the
    missing fields last): shapes, normalized forms and a declared vertical's attributes."""
    if not isinstance(raw, dict):
        return [FieldError(path or "$", "must be an object")]
    named = raw.get("vertical")
    vertical = verticals.get(named, vertical) if isinstance(named, str) else vertical
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    problems: list[FieldError] = []
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        info = fields.get(key)
        if info is None:
            problems.append(FieldError(where, "is not a field of this request"))
        elif key == "attributes":
            problems += _explain_attributes(value, where, vertical)
        elif isinstance(info.type, type) and issubclass(info.type, msgspec.Struct):
            problems += _explain(value, info.type, where, verticals, vertical)
        else:
            try:
                converted = msgspec.convert(value, info.type)
            except msgspec.ValidationError:
                problems.append(FieldError(where, f"must be {RULES[key]}"))
                continue
            fix = _NORMALIZED.get(key)
            if fix is not None and fix(converted) is None:
                problems.append(FieldError(where, f"must be {RULES[key]}"))
    problems += [FieldError(f"{path}.{key}" if path else key, "is required")
                 for key, info in fields.items() if info.required and key not in raw]
    return problems


def _pii_paths(raw: Any) -> list[str]:
    """Personal data at the top level of a plain ping or in its attributes (``_ping_pii``'s rules)."""
    if not isinstance(raw, dict):
        return []
    paths = normalize.personal_attributes(raw)
    attributes = raw.get("attributes")
    if isinstance(attributes, dict):
        paths += [f"attributes.{p}" for p in normalize.personal_attributes(attributes)]
    return paths


def _ping_pii(ping: PingFields) -> list[str]:
    """Personal data in a decoded ping: in its free texts, or in its attributes' keys and values.
    The clean ping, nearly every one, costs two calls: its keys as one cached set, and one loop
    over its texts and attribute values."""
    attributes = ping.attributes if type(ping.attributes) is dict else {}
    if normalize.no_personal_key(tuple(attributes)) and normalize.no_personal_text(
            (ping.vertical, ping.source_id, ping.sub_id, *attributes.values())):
        return []
    paths = [name for name in _PING_TEXTS if type(text := getattr(ping, name)) is str and normalize.personal_text(text)]
    return paths + [f"attributes.{p}" for p in normalize.personal_attributes(attributes)]


def _pii_error(paths: list[str]) -> ApiError:
    return ApiError(Code.PII_IN_PING, fields=[FieldError(p, Code.PII_IN_PING.message) for p in paths])


def decode(decoder: msgspec.json.Decoder[T], body: bytes, ping_fields: bool, verticals: Verticals) -> T:
    """Decode and validate in one pass; a ping's personal-data check wins over other errors."""
    try:
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raw = _plain_json(body)
        if raw is _UNREAD:
            raise _field_error(exc) from None
        paths = _pii_paths(raw) if ping_fields else []
        if paths:
            raise _pii_error(paths) from None
        problems = _explain(raw, cast(type[msgspec.Struct], decoder.type), "", verticals)
        raise (refused(problems) if problems else _field_error(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8 in a string
        raise _malformed() from None
    if ping_fields:
        paths = _ping_pii(value)  # type: ignore[arg-type]
        if paths:
            raise _pii_error(paths)
    return value


def refuse(problems: list[FieldError]) -> None:
    """One 422 for every problem ``ping_of`` and ``lead_of`` found, if they found any."""
    if problems:
        raise refused(problems)


def ping_of(request: PingRequest, verticals: Verticals, problems: list[FieldError]) -> PingFields:
    """The ping as buyers see it: ZIP+4 cut to five digits, state upper-case and checked, and a
    declared vertical's attributes checked; problems go to ``problems``."""
    values = {name: getattr(request, name) for name in _PING_FIELDS}
    values["zip"] = normalize.zip5(request.zip)
    if isinstance(request.state, str):
        values["state"] = normalize.state(request.state)
        if values["state"] is None:
            problems.append(FieldError("state", f"must be {RULES['state']}"))
    declared = verticals.get(request.vertical)
    if declared is not None and isinstance(request.attributes, dict):
        problems += declared.problems(request.attributes, "attributes")
    return PingFields(**values)


def lead_of(lead: Lead, path: str, declared: Vertical | None, problems: list[FieldError]) -> Lead:
    """The lead with every field in its stored form; problems (named under ``path``) go to
    ``problems``. ``declared``: the vertical whose attributes the lead's must be, if known."""
    changes: dict[str, Any] = {}
    for name, fix in _NORMALIZED.items():
        value = getattr(lead, name)
        if isinstance(value, str):
            changes[name] = fix(value)
            if changes[name] is None:
                problems.append(FieldError(f"{path}.{name}", f"must be {RULES[name]}"))
    if isinstance(lead.zip, str):
        changes["zip"] = normalize.zip5(lead.zip)
    for name in ("address", "city"):
        value = getattr(lead, name)
        if isinstance(value, str):
            changes[name] = value.strip()
    if declared is not None and isinstance(lead.attributes, dict):
        problems += declared.problems(lead.attributes, f"{path}.attributes")
    return msgspec.structs.replace(lead, **changes)


def ping_answer(record: PingRecord) -> PingResponse:
    answer = PingResponse(ping_id=record.ping_id, status=record.status,  # type: ignore[arg-type]
                          expires_at=rfc3339(record.expires_at), auction_ms=record.auction_ms)
    if record.price_cents is not None:
        answer.price = money.to_amount(record.price_cents)
    return answer


def post_answer(ping_id: str, result: PostRecord) -> PostResponse:
    answer = PostResponse(ping_id=ping_id, status="unsold", attempts=result.attempts)
    if result.status == "sold" and result.price_cents is not None:
        answer.status = "sold"
        answer.price = money.to_amount(result.price_cents)
        if result.lead_id is not None:
            answer.lead_id = result.lead_id
    return answer


# The app -------------------------------------------------------------------------------------


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


class Gate:
    """Who may call: keys and users to principals (``access.Access``), sellers' allowed
    addresses, trusted proxies, metrics readers; built once per config, before it is
    swapped in (``reload``)."""

    def __init__(self, config: Config, sellers: dict[str, SellerView]) -> None:
        self.access = Access(config)
        self.sellers = sellers
        self.allowed: dict[str, list[Network]] = {seller.id: _networks(seller.allowed_ips) for seller in config.sellers}
        self.proxies = _networks(config.exchange.trusted_proxies)
        self.metrics_readers = _networks(config.exchange.metrics_allowed_ips)

    def principal(self, request: web.Request) -> Principal:
        """The request's principal from its API key (401 without one); a seller's key only
        from inside the seller's ``allowed_ips`` (403)."""
        principal = self.access.by_key(api_key(request.headers))
        if principal is None:
            raise ApiError(Code.UNAUTHORIZED)
        if principal.role is Role.SELLER:
            allowed = self.allowed[principal.id]
            if allowed:
                client = self.client_address(request)
                if client is None or not any(client in net for net in allowed):
                    raise ApiError(Code.FORBIDDEN)
        return principal

    def seller(self, request: web.Request) -> tuple[SellerView, bool]:
        """The seller a ping, post or direct post is for, and whether it runs in test mode;
        any other role is 403."""
        principal = self.principal(request)
        principal.require(Role.SELLER)
        return self.sellers[principal.id], principal.test

    def metrics_reader(self, request: web.Request) -> None:
        """The metrics name every campaign with its bids and sales: only ``metrics_allowed_ips``
        (the client found as for a seller's ``allowed_ips``) or an operator's key read them.
        An unknown key is 401; no key, or another role's, from elsewhere is 403."""
        client = self.client_address(request)
        if client is not None and any(client in net for net in self.metrics_readers):
            return
        key = api_key(request.headers)
        if key is not None:
            principal = self.access.by_key(key)
            if principal is None:
                raise ApiError(Code.UNAUTHORIZED)
            if principal.role is Role.OPERATOR:
                return
        raise ApiError(Code.FORBIDDEN, "this address may not read the metrics (an operator's key may)")

    def _trusted(self, address: Address) -> bool:
        return any(address in net for net in self.proxies)

    def over_https(self, request: web.Request) -> bool:
        """Whether the client reached us over HTTPS: served by this process's TLS, or by a
        trusted proxy in front of it that says so in ``X-Forwarded-Proto``."""
        if request.secure:
            return True
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            address = ipaddress.ip_address(peer[0]) if peer else None
        except ValueError:
            return False
        return (address is not None and self._trusted(address)
                and request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https")

    def client_address(self, request: web.Request) -> Address | None:
        """The peer, or behind trusted proxies the right-most forwarded address not itself a proxy."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            address = ipaddress.ip_address(peer[0]) if peer else None
        except ValueError:
            return None
        if address is None or not self.proxies or not self._trusted(address):
            return address
        for hop in reversed(request.headers.getall("X-Forwarded-For", [])):
            for item in reversed(hop.split(",")):
                try:
                    forwarded = ipaddress.ip_address(item.strip())
                except ValueError:
                    return None
                if not self._trusted(forwarded):
                    return forwarded
                address = forwarded
        return address


async def shaped(request: web.Request, handler: Handler, exchange: Exchange) -> web.StreamResponse:
    """Every non-2xx answer is the contract's JSON error, whatever raised it: for routed
    requests through ``error_shape``, for the direct routes (``DIRECT``) called as they are."""
    try:
        return await handler(request)
    except ApiError as exc:
        exchange.metrics.rejected_requests.labels(exc.code).inc()
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(ApiError(Code.PAYLOAD_TOO_LARGE, f"the body is over {MAX_BODY} bytes"))
    except web.HTTPNotFound:
        return error_response(ApiError(Code.NOT_FOUND, "no such route"))
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(ApiError(Code.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here"))
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response
    except StoreUnavailable:
        return error_response(ApiError(Code.STORE_UNAVAILABLE))
    except LedgerUnavailable as exc:
        log.warning("ledger unavailable", extra={"event": {"event": "ledger_unavailable", "path": request.path,
                                                           "error": str(exc)}})
        exchange.metrics.rejected_requests.labels(Code.LEDGER_UNAVAILABLE).inc()
        return error_response(ApiError(Code.LEDGER_UNAVAILABLE))
    except web.RequestPayloadError as exc:  # a body aiohttp cannot decode: bad chunks, gzip that is not
        return error_response(ApiError(Code.MALFORMED_REQUEST, f"the body cannot be read: {parser_reason(exc)}"))
    except BodyTimeout:
        error = ApiError(Code.REQUEST_TIMEOUT,
                         f"the body did not arrive within {exchange.config.exchange.body_timeout_s:g} s of its head")
        exchange.metrics.rejected_requests.labels(error.code).inc()
        return error_response(error)
    except Exception as exc:
        if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
            # The client closed or reset its connection (mid-body, say): nobody gets this answer.
            log.info("client gone", extra={"event": {"event": "client_gone", "path": request.path}})
        else:
            log.exception("unhandled", extra={"event": {"event": "unhandled", "path": request.path}})
        return error_response(ApiError(Code.INTERNAL_ERROR))


@web.middleware
async def error_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await shaped(request, handler, request.app[EXCHANGE])


class Routes:
    """The seller API's handlers over one exchange."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.draining = False
        self.inflight = 0
        self.reloading = asyncio.Lock()
        self.adopt(Gate(exchange.config, exchange.sellers))
        self.openapi = _encode(document())
        self.ping_decoder = msgspec.json.Decoder(PingRequest)
        self.post_decoder = msgspec.json.Decoder(PostRequest)
        self.direct_decoder = msgspec.json.Decoder(DirectPostRequest)
        self.return_decoder = msgspec.json.Decoder(ReturnRequest)
        self.outcome_decoder = msgspec.json.Decoder(OutcomeRequest)
        self.decision_decoder = msgspec.json.Decoder(DecisionRequest)
        self.consumer_decoder = msgspec.json.Decoder(ConsumerRequest)

    def adopt(self, gate: Gate) -> None:
        """Take the access rules of the exchange's current config, built beforehand."""
        self.gate = gate
        self.max_inflight = self.exchange.config.exchange.max_inflight

    async def _body(self, request: web.Request) -> bytes:
        if request.content_type != "application/json":
            raise ApiError(Code.UNSUPPORTED_MEDIA_TYPE)
        if (request.content_length or 0) > MAX_BODY:
            raise ApiError(Code.PAYLOAD_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        return await request.read()

    async def _admitted(self, request: web.Request, work: Callable[[SellerView, bool, bytes], Awaitable[T]]) -> T:
        """Auth, then the in-flight bound (answered at once, never queued), then the work."""
        seller, test = self.gate.seller(request)
        if self.draining:
            raise ApiError(Code.SHUTTING_DOWN)
        if self.inflight >= self.max_inflight:
            raise ApiError(Code.OVERLOADED)
        self.inflight += 1
        self.exchange.metrics.inflight.inc()
        try:
            return await work(seller, test, await self._body(request))
        finally:
            self.inflight -= 1
            self.exchange.metrics.inflight.dec()

    async def ping(self, request: web.Request) -> web.Response:
        async def work(seller: SellerView, test: bool, body: bytes) -> web.Response:
            verticals = self.exchange.verticals
            req = decode(self.ping_decoder, body, ping_fields=True, verticals=verticals)
            problems: list[FieldError] = []
            ping = ping_of(req, verticals, problems)
            refuse(problems)
            record = await self.exchange.ping(seller, test, ping, _opt(req.timeout_ms))
            return json_response(ping_answer(record))
        return await self._admitted(request, work)

    async def post(self, request: web.Request) -> web.Response:
        async def work(seller: SellerView, test: bool, body: bytes) -> web.Response:
            req = decode(self.post_decoder, body, ping_fields=False, verticals=self.exchange.verticals)
            problems: list[FieldError] = []
            # The attributes of the ping's vertical are checked once the ping is loaded (check_post).
            lead = lead_of(req.lead, "lead", None, problems)
            refuse(problems)
            result = await self.exchange.post(seller, req.ping_id, lead)
            return json_response(post_answer(req.ping_id, result))
        return await self._admitted(request, work)

    async def direct(self, request: web.Request) -> web.Response:
        async def work(seller: SellerView, test: bool, body: bytes) -> web.Response:
            verticals = self.exchange.verticals
            req = decode(self.direct_decoder, body, ping_fields=True, verticals=verticals)
            problems: list[FieldError] = []
            ping = ping_of(req, verticals, problems)
            lead = lead_of(req.lead, "lead", verticals.get(req.vertical), problems)
            refuse(problems)
            check_same_lead(ping, lead, "lead")
            record, result = await self.exchange.direct(seller, test, ping, _opt(req.timeout_ms), lead)
            return json_response(post_answer(record.ping_id, result))
        return await self._admitted(request, work)

    async def trace(self, request: web.Request) -> web.Response:
        principal = self.gate.principal(request)
        return json_response(principal.trace(await self.exchange.find_ping(request.match_info["ping_id"])))

    async def lead(self, request: web.Request) -> web.Response:
        """A sold lead as its seller may see it: ids, status (returned once a return of it
        was approved), the seller's price, when; no personal data and nothing of the buyer."""
        principal = self.gate.principal(request)
        lead_id, books = request.match_info["lead_id"], self.exchange.ledger
        sale = await books.get_sale(lead_id)
        filed = await books.get_return(lead_id=lead_id) if sale is not None else None
        return json_response(principal.lead(sale, filed.decided_at if filed is not None and filed.status == APPROVED
                                            else None))

    # The buyers' own API, and the operators' returns queue ---------------------------------

    async def _decoded(self, request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
        return decode(decoder, await self._body(request), ping_fields=False, verticals={})

    async def buyer_leads(self, request: web.Request) -> web.Response:
        principal = self.gate.principal(request)
        query = purchases.parse(request.query.items(), principal, self.exchange.config.exchange.timezone)
        return json_response(await purchases.page(self.exchange.ledger, query))

    async def buyer_return(self, request: web.Request) -> web.Response:
        principal = self.gate.principal(request)
        principal.require(Role.BUYER)
        filed = await returns.file(self.exchange, principal, await self._decoded(request, self.return_decoder))
        return json_response(returns.view(filed))

    async def buyer_outcome(self, request: web.Request) -> web.Response:
        principal = self.gate.principal(request)
        principal.require(Role.BUYER)
        told = await outcomes.tell(self.exchange, principal, await self._decoded(request, self.outcome_decoder))
        return json_response(told)

    async def returns_list(self, request: web.Request) -> web.Response:
        query = returns.parse(request.query.items(), self.gate.principal(request))
        return json_response(await returns.page(self.exchange, query))

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, approve=True)

    async def deny(self, request: web.Request) -> web.Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: web.Request, approve: bool) -> web.Response:
        """The body, ``{"note"?}``, may be left out."""
        principal = self.gate.principal(request)
        principal.require(Role.OPERATOR)
        body = await self._decoded(request, self.decision_decoder) if request.body_exists else DecisionRequest()
        note = body.note if isinstance(body.note, str) else None
        decided = await returns.decide(self.exchange, principal, request.match_info["return_id"], approve, note)
        return json_response(returns.view(decided))

    # The operators' privacy requests -------------------------------------------------------

    async def opt_out(self, request: web.Request) -> web.Response:
        principal = self.gate.principal(request)
        principal.require(Role.OPERATOR)
        body = await self._decoded(request, self.consumer_decoder)
        return json_response(await privacy.opt_out(self.exchange, principal, body))

    async def deletion(self, request: web.Request) -> web.Response:
        principal = self.gate.principal(request)
        principal.require(Role.OPERATOR)
        body = await self._decoded(request, self.consumer_decoder)
        return json_response(await privacy.delete(self.exchange, principal, body))

    async def privacy_requests(self, request: web.Request) -> web.Response:
        query = privacy.parse(request.query.items(), self.gate.principal(request),
                              self.exchange.config.exchange.timezone)
        return json_response(await privacy.page(self.exchange.ledger, query))

    async def reports(self, request: web.Request) -> web.Response:
        """The caller's numbers, from the rollups (docs/reports.md); JSON, or CSV when asked."""
        principal = self.gate.principal(request)
        query = reports.parse(request.query.items(), principal, self.exchange.config.exchange.timezone,
                              self.exchange.clock(), request.headers.get("Accept", ""))
        report = await reports.build(self.exchange.ledger, principal, query)
        if query.csv:
            return web.Response(body=reports.to_csv(report), content_type="text/csv", charset="utf-8", headers={
                "Content-Disposition": f'attachment; filename="{reports.csv_name(report)}"'})
        return web.Response(body=reports.to_json(report), content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        if self.draining:
            raise ApiError(Code.SHUTTING_DOWN, "this exchange is shutting down")
        return json_response(Health("ok"))

    async def metrics(self, request: web.Request) -> web.Response:
        self.gate.metrics_reader(request)
        return web.Response(body=self.exchange.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type="application/json")


ROUTES = web.AppKey("routes", Routes)


async def to_dashboard(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "/ui/"})


def _opt(value: int | msgspec.UnsetType) -> int | None:
    return None if value is msgspec.UNSET else value


def make_app(config: Config, store: Store, ca_file: str | None = None, clock: Clock = time.time,
             ledger: Ledger | None = None) -> web.Application:
    """The exchange as an aiohttp app; the store, the buyer client and the books (an open
    ledger, which the app closes; none by default) start and stop with it. ``clock`` is
    the auction's time of day; a test passes the one its store runs on."""
    app = web.Application(middlewares=[error_shape], client_max_size=MAX_BODY, handler_args={"max_field_size": 8190})
    books = ledger if ledger is not None else NullLedger()
    if books.keeps_leads and books.vault is None:
        keys.required(None)
    exchange = Exchange(config, store, BuyerClient(ca_file), Metrics(), clock, books)
    exchange.metrics.watch_backlog(books.backlog)
    exchange.metrics.watch_opt_outs(exchange.suppression.__len__)
    app[EXCHANGE] = exchange
    routes = app[ROUTES] = Routes(exchange)
    app.router.add_post("/v1/ping", routes.ping)
    # The seller's ping, nearly all of the traffic, also skips the router and the middleware
    # on a ``connections.listen`` connection: the same handler, shaped the same way.
    direct: dict[tuple[str, str], Handler] = {("POST", "/v1/ping"): partial(shaped, handler=routes.ping,
                                                                            exchange=exchange)}
    app[DIRECT] = direct
    app.router.add_post("/v1/post", routes.post)
    app.router.add_post("/v1/leads", routes.direct)
    app.router.add_get("/v1/pings/{ping_id}", routes.trace)
    app.router.add_get("/v1/leads/{lead_id}", routes.lead)
    app.router.add_get("/v1/reports", routes.reports)
    app.router.add_get("/v1/buyer/leads", routes.buyer_leads)
    app.router.add_post("/v1/buyer/returns", routes.buyer_return)
    app.router.add_post("/v1/buyer/outcomes", routes.buyer_outcome)
    app.router.add_get("/v1/returns", routes.returns_list)
    app.router.add_post("/v1/returns/{return_id}/approve", routes.approve)
    app.router.add_post("/v1/returns/{return_id}/deny", routes.deny)
    app.router.add_post("/v1/privacy/opt-outs", routes.opt_out)
    app.router.add_post("/v1/privacy/deletions", routes.deletion)
    app.router.add_get("/v1/privacy/requests", routes.privacy_requests)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/openapi.json", routes.openapi_json)
    app.router.add_get("/ui", to_dashboard)
    app.add_subapp("/ui/", make_dashboard(exchange, lambda: routes.gate))

    async def lifecycle(app: web.Application) -> Any:
        # A store that lost its cap counts (a Redis back empty) recounts today's sales from the books.
        await store.start(config.campaigns, config.exchange, recount=books.sold_counts)
        await exchange.suppression.start(books)
        background = [asyncio.create_task(keep_books(exchange)), asyncio.create_task(exchange.suppression.follow(books))]
        yield
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await exchange.client.close()
        await exchange.journal.close()
        await store.close()
        await books.close()

    app.cleanup_ctx.append(lifecycle)
    return app


#: Pause between retention passes; the first runs at start.
RETENTION_EVERY_S = 3600.0


async def keep_books(exchange: Exchange) -> None:
    """Retention: traffic that did not sell leaves the books after ``[ledger] keep_days``
    (sales and money records never do), and a lead's personal data is erased
    ``[privacy] keep_lead_days`` after its post. Every worker runs it; a pass another
    worker already made finds nothing to do."""
    while True:
        now, books = exchange.clock(), exchange.ledger
        try:
            # Personal data first: a pass cut short by the books still erased what it could.
            erased = await books.erase_leads_before(ids.token(),
                                                    now - exchange.config.privacy.keep_lead_days * 86_400,
                                                    now) if books.keeps_leads else 0
            dropped = await books.drop_traffic_before(now - exchange.config.ledger.keep_days * 86_400)
        except LedgerUnavailable as exc:
            log.warning("retention postponed", extra={"event": {"event": "retention", "error": str(exc)}})
        else:
            if dropped or erased:
                log.info("retention", extra={"event": {"event": "retention", "dropped": dropped,
                                                       "leads_erased": erased}})
        await asyncio.sleep(RETENTION_EVERY_S)


def drain(app: web.Application) -> None:
    """Refuse new work from now on; what is in flight finishes (see ``serve``)."""
    app[ROUTES].draining = True


async def reload(app: web.Application, config: Config) -> bool:
    """Swap in a new config whole, or keep the running one whole; logs which, and says
    whether the new one runs.

    Everything the config needs is built first: the index, the buyer request heads and the
    store's numbering (``prepare``, off the event loop: the index is the slow part), then
    the access rules. A build that fails changes nothing. Only then do the exchange, the
    store and the access rules change, with no await between them, so every request sees
    either the old config or the new one. Reloads run one at a time in the order they were
    asked for, so a slow build of an older file never replaces a newer one."""
    exchange, routes = app[EXCHANGE], app[ROUTES]
    async with routes.reloading:
        try:
            prepared = await asyncio.get_running_loop().run_in_executor(None, prepare, config)
            gate = Gate(config, prepared.sellers)
        except Exception as exc:
            log.error("reload failed", extra={"event": {"event": "reload", "status": "failed",
                                                        "error": f"{type(exc).__name__}: {exc}"}})
            return False
        exchange.adopt(prepared)
        routes.adopt(gate)
        log.info("reloaded", extra={"event": {"event": "reload", "status": "ok", "campaigns": len(config.campaigns)}})
        with contextlib.suppress(StoreUnavailable):  # the store's refresher tries again shortly
            await exchange.store.refresh()
    return True
