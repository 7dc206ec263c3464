"""The seller-facing HTTP app: auth, address rules, limits, decoding and the error shape.

Everything per-request that can be prepared once is prepared in ``make_app``: decoders,
key lookups, proxy networks, the OpenAPI bytes. Handlers decode with msgspec in one pass,
normalize, and hand typed values to ``auction.Exchange``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any, Awaitable, Callable, TypeVar

import msgspec
from aiohttp import web

from . import money, normalize
from .auction import Exchange, SellerView, check_same_lead
from .buyers import BuyerClient
from .config import Config
from .connections import BodyTimeout, parser_reason
from .errors import ApiError, invalid
from .metrics import CONTENT_TYPE, Metrics
from .openapi import document
from .schema import (AttrValue, DirectPostRequest, FieldError, Health, Lead, PingFields, PingRequest, PingResponse,
                     PostRequest, PostResponse)
from .store.base import Store, StoreUnavailable
from .targeting import build_index
from .trace import PingRecord, PostRecord, rfc3339, to_trace

log = logging.getLogger("pingpost.server")

MAX_BODY = 64 * 1024
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_PING_FIELDS = PingFields.__struct_fields__

EXCHANGE = web.AppKey("exchange", Exchange)


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(payload), status=status, content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), error.status)


# Decoding ----------------------------------------------------------------------------------


def _field_error(exc: msgspec.ValidationError, raw: Any = None) -> ApiError:
    """msgspec's "... - at `$.lead.zip`" becomes path ``lead.zip``; unknown fields name the field;
    a bad attribute key ("at `key` in `$.attributes`") or value (``attributes[...]``) names
    the attributes object, and the value's key when the plain document shows which it is."""
    message, _, where = str(exc).partition(" - at `")
    path = where.removeprefix("key` in `").rstrip("`").removeprefix("$").lstrip(".")
    if message.startswith(("Object contains unknown field `", "Object missing required field `")):
        name = message.split("`")[1]
        path = f"{path}.{name}" if path else name
    return invalid(_attribute_key(path, raw) or "$", message)


def _attribute_key(path: str, raw: Any) -> str:
    """``attributes[...]`` -> ``attributes.<the first key whose value is not an attribute value>``."""
    head, found, rest = path.partition("[...]")
    if not found:
        return path
    node = raw
    for part in head.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    for key, value in node.items() if isinstance(node, dict) else ():
        try:
            msgspec.convert(value, AttrValue)
        except msgspec.ValidationError:
            return f"{head}.{key}{rest}"
    return path


def _malformed() -> ApiError:
    return ApiError(400, "malformed_json", "the body is not UTF-8 JSON")


def _plain_json(body: bytes) -> Any:
    """The body as plain JSON values, for explaining a validation error. msgspec validates
    while it parses, so a body can fail validation before its bad syntax or bytes are
    reached: those are 400 malformed_json all the same. None for a number out of range."""
    try:
        return _decode_any(body)
    except msgspec.ValidationError:
        return None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _malformed() from None


def _pii_paths(raw: Any) -> list[str]:
    """Personal-data keys at the top level of a ping or in its attributes."""
    if not isinstance(raw, dict):
        return []
    paths = [k for k in raw if k in normalize.PII_KEYS]
    attributes = raw.get("attributes")
    if isinstance(attributes, dict):
        paths += [f"attributes.{k}" for k in attributes if k in normalize.PII_KEYS]
    return paths


def _pii_error(paths: list[str]) -> ApiError:
    return ApiError(422, "pii_in_ping", "personal data is not accepted in a ping",
                    [FieldError(p, "personal data is not accepted in a ping") for p in paths])


def decode(decoder: msgspec.json.Decoder[T], body: bytes, ping_fields: bool) -> T:
    """Decode and validate in one pass; a ping's personal-data check wins over other errors."""
    try:
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raw = _plain_json(body)
        paths = _pii_paths(raw) if ping_fields else []
        raise _pii_error(paths) if paths else _field_error(exc, raw) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8 in a string
        raise _malformed() from None
    if ping_fields:
        attributes = getattr(value, "attributes")
        if isinstance(attributes, dict) and not normalize.PII_KEYS.isdisjoint(attributes):
            raise _pii_error([f"attributes.{k}" for k in attributes if k in normalize.PII_KEYS])
    return value


def ping_of(request: PingRequest) -> PingFields:
    """The ping as buyers see it: ZIP+4 cut to five digits, state upper-case and checked."""
    values = {name: getattr(request, name) for name in _PING_FIELDS}
    values["zip"] = normalize.zip5(request.zip)
    if isinstance(request.state, str):
        state = normalize.state(request.state)
        if state is None:
            raise invalid("state", "not a US state or territory code")
        values["state"] = state
    return PingFields(**values)


def lead_of(lead: Lead, path: str) -> Lead:
    """The lead with every field in its stored form, or a 422 naming the bad field."""
    changes: dict[str, Any] = {}
    for name in ("first_name", "last_name"):
        changes[name] = normalize.name(getattr(lead, name))
        if changes[name] is None:
            raise invalid(f"{path}.{name}", "must be 1 to 64 characters after trimming")
    checks: tuple[tuple[str, Callable[[str], str | None], str], ...] = (
        ("email", normalize.email, "not a valid email address"),
        ("phone", normalize.phone, "not a valid US phone number"),
        ("state", normalize.state, "not a US state or territory code"),
        ("ip_address", normalize.ip_address, "not an IPv4 or IPv6 address"),
    )
    for name, fix, problem in checks:
        value = getattr(lead, name)
        if isinstance(value, str):
            changes[name] = fix(value)
            if changes[name] is None:
                raise invalid(f"{path}.{name}", problem)
    if isinstance(lead.zip, str):
        changes["zip"] = normalize.zip5(lead.zip)
    for name in ("address", "city"):
        value = getattr(lead, name)
        if isinstance(value, str):
            changes[name] = value.strip()
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
        answer.lead_id = result.lead_id
    return answer


# The app -------------------------------------------------------------------------------------


class Gate:
    """Who may call: keys to sellers, allowed addresses, trusted proxies; built once per config."""

    def __init__(self, exchange: Exchange) -> None:
        config = exchange.config
        self.keys: dict[str, tuple[SellerView, bool]] = {}
        self.allowed: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
        for seller in config.sellers:
            view = exchange.sellers[seller.id]
            self.keys.update({k: (view, False) for k in seller.api_keys})
            self.keys.update({k: (view, True) for k in seller.test_api_keys})
            self.allowed[seller.id] = [ipaddress.ip_network(c, strict=False) for c in seller.allowed_ips]
        self.proxies = [ipaddress.ip_network(c, strict=False) for c in config.exchange.trusted_proxies]

    def seller(self, request: web.Request) -> tuple[SellerView, bool]:
        key = request.headers.get("X-API-Key")
        auth = request.headers.get("Authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer":
                key = token.strip()
        found = self.keys.get(key) if key else None
        if found is None:
            raise ApiError(401, "unauthorized", "missing or unknown API key")
        allowed = self.allowed[found[0].seller.id]
        if allowed:
            client = self.client_address(request)
            if client is None or not any(client in net for net in allowed):
                raise ApiError(403, "forbidden", "this address may not use this key")
        return found

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.proxies)

    def client_address(self, request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every non-2xx answer is the contract's JSON error, whatever raised it."""
    try:
        return await handler(request)
    except ApiError as exc:
        metrics = request.app[EXCHANGE].metrics
        metrics.rejected_requests.labels(exc.code).inc()
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(ApiError(413, "payload_too_large", f"the body is over {MAX_BODY} bytes"))
    except web.HTTPNotFound:
        return error_response(ApiError(404, "not_found", "no such route"))
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(ApiError(405, "method_not_allowed", f"{request.method} is not allowed here"))
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPException as exc:
        return error_response(ApiError(exc.status, "http_error", exc.reason))
    except StoreUnavailable:
        return error_response(ApiError(503, "store_unavailable", "the shared store is unreachable; retry"))
    except web.RequestPayloadError as exc:  # a body aiohttp cannot decode: bad chunks, gzip that is not
        return error_response(ApiError(400, "malformed_request", f"the body cannot be read: {parser_reason(exc)}"))
    except BodyTimeout:
        exchange = request.app[EXCHANGE]
        exchange.metrics.rejected_requests.labels("request_timeout").inc()
        return error_response(ApiError(408, "request_timeout", "the body did not arrive within "
                                       f"{exchange.config.exchange.body_timeout_s:g} s of its head"))
    except Exception as exc:
        if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
            # The client closed or reset its connection (mid-body, say): nobody gets this answer.
            log.info("client gone", extra={"event": {"event": "client_gone", "path": request.path}})
        else:
            log.exception("unhandled", extra={"event": {"event": "unhandled", "path": request.path}})
        return error_response(ApiError(500, "internal_error", "internal error"))


class Routes:
    """The seller API's handlers over one exchange."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.draining = False
        self.inflight = 0
        self.learn()
        self.openapi = _encode(document())
        self.ping_decoder = msgspec.json.Decoder(PingRequest)
        self.post_decoder = msgspec.json.Decoder(PostRequest)
        self.direct_decoder = msgspec.json.Decoder(DirectPostRequest)

    def learn(self) -> None:
        """Take the access rules of the exchange's current config."""
        self.gate = Gate(self.exchange)
        self.max_inflight = self.exchange.config.exchange.max_inflight

    async def _body(self, request: web.Request) -> bytes:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
        if (request.content_length or 0) > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"the body is over {MAX_BODY} bytes")
        return await request.read()

    async def _admitted(self, request: web.Request, work: Callable[[SellerView, bool, bytes], Awaitable[T]]) -> T:
        """Auth, then the in-flight bound (answered at once, never queued), then the work."""
        seller, test = self.gate.seller(request)
        if self.draining:
            raise ApiError(503, "shutting_down", "this exchange is shutting down; retry elsewhere")
        if self.inflight >= self.max_inflight:
            raise ApiError(503, "overloaded", "too many auctions in flight; retry shortly")
        self.inflight += 1
        self.exchange.metrics.inflight.inc()
        try:
            return await work(seller, test, await self._body(request))
        finally:
            self.inflight -= 1
            self.exchange.metrics.inflight.dec()

    async def ping(self, request: web.Request) -> web.Response:
        async def work(seller: SellerView, test: bool, body: bytes) -> web.Response:
            req = decode(self.ping_decoder, body, ping_fields=True)
            record = await self.exchange.ping(seller, test, ping_of(req), _opt(req.timeout_ms))
            return json_response(ping_answer(record))
        return await self._admitted(request, work)

    async def post(self, request: web.Request) -> web.Response:
        async def work(seller: SellerView, test: bool, body: bytes) -> web.Response:
            req = decode(self.post_decoder, body, ping_fields=False)
            if req.lead.zip is msgspec.UNSET:
                raise invalid("lead.zip", "required field is missing")
            result = await self.exchange.post(seller, req.ping_id, lead_of(req.lead, "lead"))
            return json_response(post_answer(req.ping_id, result))
        return await self._admitted(request, work)

    async def direct(self, request: web.Request) -> web.Response:
        async def work(seller: SellerView, test: bool, body: bytes) -> web.Response:
            req = decode(self.direct_decoder, body, ping_fields=True)
            ping = ping_of(req)
            lead = lead_of(req.lead, "lead")
            check_same_lead(ping, lead, "lead")
            record, result = await self.exchange.direct(seller, test, ping, _opt(req.timeout_ms), lead)
            return json_response(post_answer(record.ping_id, result))
        return await self._admitted(request, work)

    async def trace(self, request: web.Request) -> web.Response:
        seller, _ = self.gate.seller(request)
        record = await self.exchange.store.get_ping(request.match_info["ping_id"])
        if record is None or record.seller_id != seller.seller.id:
            raise ApiError(404, "not_found", "no such ping for this seller")
        return json_response(to_trace(record))

    async def healthz(self, request: web.Request) -> web.Response:
        if self.draining:
            raise ApiError(503, "shutting_down", "this exchange is shutting down")
        return json_response(Health("ok"))

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.exchange.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type="application/json")


ROUTES = web.AppKey("routes", Routes)


def _opt(value: int | msgspec.UnsetType) -> int | None:
    return None if value is msgspec.UNSET else value


def make_app(config: Config, store: Store, ca_file: str | None = None) -> web.Application:
    """The exchange as an aiohttp app; the store and buyer client start and stop with it."""
    app = web.Application(middlewares=[error_shape], client_max_size=MAX_BODY, handler_args={"max_field_size": 8190})
    exchange = Exchange(config, store, BuyerClient(ca_file), Metrics())
    app[EXCHANGE] = exchange
    routes = app[ROUTES] = Routes(exchange)
    app.router.add_post("/v1/ping", routes.ping)
    app.router.add_post("/v1/post", routes.post)
    app.router.add_post("/v1/leads", routes.direct)
    app.router.add_get("/v1/pings/{ping_id}", routes.trace)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/openapi.json", routes.openapi_json)

    async def lifecycle(app: web.Application) -> Any:
        await store.start(config.campaigns, config.exchange)
        yield
        await exchange.client.close()
        await exchange.journal.close()
        await store.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def drain(app: web.Application) -> None:
    """Refuse new work from now on; what is in flight finishes (see ``serve``)."""
    app[ROUTES].draining = True


async def reload(app: web.Application, config: Config) -> None:
    """Swap in a new config whole. The index (the slow part) is built off the event loop;
    then the exchange, the access rules and the store's numbering change together, with
    no await between them, so every request sees either the old config or the new one."""
    exchange = app[EXCHANGE]
    index = await asyncio.get_running_loop().run_in_executor(None, build_index, config)
    exchange.use(config, index)
    exchange.store.learn(config.campaigns, config.exchange)
    app[ROUTES].learn()
    await exchange.store.refresh()
