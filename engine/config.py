"""The operator's config file: Structs, loading, and every error with its path.

msgspec stops at the first error, but an operator fixing a file wants them all, so
``load`` converts field by field (``_collect``) and checks what types cannot say
(references between sections, time zones, CIDRs) on the raw document, so one report
lists them all. The Structs are the same ones the
engine uses at run time.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from . import http1
from .formats.spec import Stage
from .formats.request import Kind
from .formats.stage import stage_problems
from .normalize import US_STATES, personal_key
from .schema import FieldError, Ranking

Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}(?!\n)$")]
Url = Annotated[str, Meta(pattern=r"^https?://[^\s/]+(/[^\s]*)?(?!\n)$", max_length=2048)]
HHMM = Annotated[str, Meta(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)(?!\n)$")]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Ms = Annotated[int, Meta(ge=1, le=600_000)]
Amount = Annotated[float, Meta(ge=0)]
RuleValue = Union[str, int, float, bool, list[Union[str, int, float, bool]], None]

DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Who may read ``GET /metrics`` unless the file says otherwise: loopback and the private ranges.
PRIVATE_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                     "fc00::/7")

#: Where a value may be written ``env:NAME`` (read from the environment at load), so that
#: secrets need not be in the file. ``[]`` is every item of a list, ``*`` every value of a table.
SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("sellers", "[]", "api_keys", "[]"),
    ("sellers", "[]", "test_api_keys", "[]"),
    ("buyers", "[]", "api_keys", "[]"),
    ("operators", "[]", "api_keys", "[]"),
    ("users", "[]", "password_hash"),
    ("campaigns", "[]", "headers", "*"),
    *((("campaigns", "[]", stage, "headers", "*") for stage in ("ping", "post"))),
    *((("campaigns", "[]", stage, "auth", key) for stage in ("ping", "post")
       for key in ("user", "password", "token", "value"))),
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MIN_KEY_LENGTH = 8
#: A dashboard user's role: the exchange's staff, or one seller's or one buyer's people.
ROLE = re.compile(r"(operator|seller:(?P<seller>.+)|buyer:(?P<buyer>.+))\Z")


class ConfigError(Exception):
    """A config file that cannot run; ``errors`` holds ``(path, reason)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("\n".join(f"{path}: {reason}" for path, reason in errors))


class Base(Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ExchangeSettings(Base, kw_only=True):
    auction_timeout_ms: Ms = 1000
    post_timeout_ms: Ms = 10000
    ping_ttl_s: Annotated[int, Meta(ge=1, le=86_400)] = 120
    max_buyers_per_ping: Annotated[int, Meta(ge=1, le=10_000)] = 50
    max_inflight: Annotated[int, Meta(ge=1)] = 10000
    timezone: str = "UTC"
    bench_after_timeouts: Annotated[int, Meta(ge=0)] = 5
    bench_window_s: Annotated[int, Meta(ge=1)] = 60
    bench_duration_s: Annotated[int, Meta(ge=1)] = 30
    trusted_proxies: list[str] = []
    metrics_allowed_ips: list[str] = msgspec.field(default_factory=lambda: list(PRIVATE_NETWORKS))
    header_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    keepalive_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 75.0
    #: How bids are ordered: ``bid`` by the bid alone; ``expected`` by the bid times the
    #: campaign's accept rate over ``accept_window_s``, smoothed by a prior of
    #: ``accept_prior_offers`` offers accepted at ``accept_prior`` (docs/auction.md).
    ranking: Ranking = "bid"
    accept_window_s: Annotated[int, Meta(ge=60, le=7 * 86_400)] = 3600
    accept_prior: Annotated[float, Meta(ge=0, le=1)] = 1.0
    accept_prior_offers: Annotated[int, Meta(ge=1, le=1_000_000)] = 20


class LedgerSettings(Base, kw_only=True):
    #: How long the books keep traffic that did not sell (pings, unsold posts); sales and
    #: money records are kept whatever this says.
    keep_days: Annotated[int, Meta(ge=1, le=36_500)] = 90


class PrivacySettings(Base, kw_only=True):
    #: The file holding the operator's key (``pingpost keygen``); ``PINGPOST_DATA_KEY`` wins over it.
    key_file: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    #: How long a sold lead's personal data is kept after its post; then the exchange erases it.
    keep_lead_days: Annotated[int, Meta(ge=1, le=36_500)] = 30


Key = Annotated[str, Meta(max_length=256)]
#: A return reason: a word a buyer's program sends and a report can show.
Reason = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}(?!\n)$")]
RETURN_REASONS = ("invalid_contact", "duplicate", "did_not_request", "out_of_area", "fraud", "other")


class Seller(Base, kw_only=True):
    id: Id
    # The 8-character minimum is checked with the other semantics, for a message that says so.
    api_keys: list[Key] = []
    test_api_keys: list[Key] = []
    allowed_ips: list[str] = []
    revenue_share: Annotated[float, Meta(ge=0, le=1)] = 1.0
    min_bid: Amount = 0.0
    #: Whether a buyer's approved return of this seller's lead takes the seller's price back
    #: from its payout (a debit beside the buyer's credit), or the exchange bears it.
    returns_reverse_payout: bool = True


class Buyer(Base, kw_only=True):
    id: Id
    dedupe_days: Annotated[int, Meta(ge=0, le=3650)] = 0
    #: The buyer's own keys: its reports (and its own API); the same rules as a seller's.
    api_keys: list[Key] = []
    #: Days after the day of a sale (in the exchange's time zone) its lead can be returned; 0: none.
    return_window_days: Annotated[int, Meta(ge=0, le=365)] = 7
    #: The share of a calendar month's purchases whose returns are approved at once; past it
    #: a return waits for an operator.
    max_return_rate: Annotated[float, Meta(ge=0, le=1)] = 0.1
    return_reasons: Annotated[list[Reason], Meta(min_length=1, max_length=64)] = msgspec.field(
        default_factory=lambda: list(RETURN_REASONS))


class Operator(Base, kw_only=True):
    """The exchange's own staff, for machine access: every report, the metrics."""

    id: Id
    api_keys: list[Key] = []


class User(Base, kw_only=True):
    """Someone who signs in to the dashboard. Names are lower case, so that "Ana" and "ana"
    can never be two people; the password exists only as its argon2id hash."""

    name: Annotated[str, Meta(pattern=r"^[a-z0-9_.@\-]{1,64}(?!\n)$")]
    password_hash: Annotated[str, Meta(max_length=512)]
    # "operator", "seller:<id>" or "buyer:<id>": checked with the other semantics, against the ids.
    role: Annotated[str, Meta(max_length=80)]


class Schedule(Base, kw_only=True):
    days: list[Day] = msgspec.field(default_factory=lambda: list(DAYS))
    start: HHMM = "00:00"
    end: HHMM = "24:00"
    timezone: str = "UTC"


class Rule(Base, kw_only=True):
    field: Annotated[str, Meta(min_length=1, max_length=64)]
    op: Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "exists"]
    value: RuleValue = None


class Filters(Base, kw_only=True):
    states: list[str] | None = None
    exclude_states: list[str] | None = None
    zips: list[Annotated[str, Meta(pattern=r"^[0-9]{5}(?!\n)$")]] | None = None
    exclude_zips: list[Annotated[str, Meta(pattern=r"^[0-9]{5}(?!\n)$")]] | None = None
    zip_prefixes: list[Annotated[str, Meta(pattern=r"^[0-9]{1,5}(?!\n)$")]] | None = None
    sellers: list[str] | None = None
    exclude_sellers: list[str] | None = None
    sources: list[str] | None = None
    exclude_sources: list[str] | None = None
    min_quality: Annotated[int, Meta(ge=0, le=100)] | None = None
    schedule: Schedule | None = None
    rules: list[Rule] | None = None


class Caps(Base, kw_only=True):
    hourly: Annotated[int, Meta(ge=0)] = 0
    daily: Annotated[int, Meta(ge=0)] = 0
    daily_budget: Amount = 0.0


class Campaign(Base, kw_only=True):
    id: Id
    buyer: Id
    vertical: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}(?!\n)$")]
    ping_url: Url | None = None
    post_url: Url
    fixed_price: Amount = 0.0
    timeout_ms: Ms = 500
    post_timeout_ms: Ms = 3000
    headers: dict[str, str] = {}
    priority: int = 0
    active: bool = True
    filters: Filters = msgspec.field(default_factory=Filters)
    caps: Caps = msgspec.field(default_factory=Caps)
    #: ``pingpost``: the exchange's own protocol; ``custom``: the buyer's own API, as ``ping`` and ``post`` say.
    format: Literal["pingpost", "custom"] = "pingpost"
    ping: Stage | None = None
    post: Stage | None = None


def _all(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: type(value) is list and all(map(item, value))


_SCALAR_TYPES: dict[str, tuple[Callable[[Any], bool], str, str]] = {  # name: accepts, one, many
    "string": (lambda v: type(v) is str, "a string", "strings"),
    "int": (lambda v: type(v) is int, "a whole number", "whole numbers"),
    "number": (lambda v: type(v) is int or type(v) is float, "a number", "numbers"),
    "bool": (lambda v: type(v) is bool, "true or false", "booleans"),
}
#: A declared attribute's type name -> (what it accepts, its wording in a validation error).
ATTRIBUTE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: (accepts, one) for name, (accepts, one, _) in _SCALAR_TYPES.items()},
    **{f"list[{name}]": (_all(accepts), f"a list of {many}") for name, (accepts, _, many) in _SCALAR_TYPES.items()},
}


class Vertical(Base, kw_only=True):
    """A vertical whose pings may carry only the attributes it declares, each of its type."""

    id: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}(?!\n)$")]
    # Type names are checked by ``_check_verticals``, which names the attribute in its error.
    attributes: dict[Annotated[str, Meta(min_length=1, max_length=64)], Any] = {}

    def problems(self, attributes: dict[str, Any], path: str) -> list[FieldError]:
        """Every attribute (under ``path``) this vertical does not declare, or of another type."""
        found: list[FieldError] = []
        for key, value in attributes.items():
            declared = self.attributes.get(key)
            if declared is None:
                found.append(FieldError(f"{path}.{key}", f"is not an attribute of vertical {self.id}"))
            elif not ATTRIBUTE_TYPES[declared][0](value):
                found.append(FieldError(f"{path}.{key}", f"must be {ATTRIBUTE_TYPES[declared][1]}"))
        return found


class Config(Base, kw_only=True):
    exchange: ExchangeSettings = msgspec.field(default_factory=ExchangeSettings)
    ledger: LedgerSettings = msgspec.field(default_factory=LedgerSettings)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    sellers: list[Seller] = []
    buyers: list[Buyer] = []
    campaigns: list[Campaign] = []
    verticals: list[Vertical] = []
    operators: list[Operator] = []
    users: list[User] = []


# Loading ---------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    """Read a TOML or JSON file (by extension) into a checked ``Config``."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError([(str(path), exc.strerror or str(exc))]) from None
    try:
        if path.suffix.lower() == ".toml":
            raw = tomllib.loads(raw_bytes.decode())
        elif path.suffix.lower() == ".json":
            raw = json.loads(raw_bytes)
        else:
            raise ConfigError([(str(path), "the file name must end in .toml or .json")])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(path), f"not valid {path.suffix[1:].upper()}: {exc}")]) from None
    return from_dict(raw)


def from_dict(raw: Any) -> Config:
    """Check a decoded document and build the ``Config``; raises with every error found.
    ``env:NAME`` secrets are read first, so every check sees the values the engine will use."""
    errors: list[tuple[str, str]] = []
    unread: list[tuple[str, str]] = []
    raw = _read_secrets(raw, unread)
    _collect(raw, Config, "", errors)
    if isinstance(raw, dict):
        _check_semantics(raw, errors)
        _check_verticals(raw, errors)
    if unread:
        # A secret that could not be read fails the other checks at its path too: say why once.
        bad = {path for path, _ in unread}
        errors = unread + [error for error in errors if error[0] not in bad]
    if errors:
        raise ConfigError(errors)
    return msgspec.convert(raw, Config)


def report(path: str | Path, error: ConfigError) -> str:
    """What the command line prints for a refused file: every error on a line of its own."""
    return "\n".join([f"pingpost: {path} is not a valid config:", *(f"  {where}: {reason}"
                                                                    for where, reason in error.errors)])


def _read_secrets(raw: Any, errors: list[tuple[str, str]]) -> Any:
    """``raw`` with every ``env:NAME`` at a ``SECRET_PATHS`` place replaced by the variable's
    value. Only the containers on the way are copied: the caller's document is not changed."""
    for steps in SECRET_PATHS:
        raw = _read_below(raw, steps, "", errors)
    return raw


def _read_below(node: Any, steps: tuple[str, ...], path: str, errors: list[tuple[str, str]]) -> Any:
    if not steps:
        return _from_env(node, path, errors) if isinstance(node, str) and node.startswith("env:") else node
    step, rest = steps[0], steps[1:]
    if step == "[]":
        return [_read_below(x, rest, f"{path}[{i}]", errors) for i, x in enumerate(node)] if isinstance(node, list) \
            else node
    keys = (list(node) if step == "*" else [step] if step in node else []) if isinstance(node, dict) else []
    if not keys:
        return node
    return {**node, **{key: _read_below(node[key], rest, _member(path, key), errors) for key in keys}}


def _from_env(reference: str, path: str, errors: list[tuple[str, str]]) -> str:
    """The variable's value; an error names the variable, never a value."""
    name = reference.removeprefix("env:")
    if not _ENV_NAME.match(name):
        problem = f"env: needs an environment variable name (letters, digits, _), not {name!r}"
    else:
        value = os.environ.get(name)
        if value:
            return value
        problem = f"environment variable {name} is {'not set' if value is None else 'empty'}"
    errors.append((path, problem))
    return reference


def _collect(value: Any, typ: Any, path: str, errors: list[tuple[str, str]]) -> None:
    """Convert ``value`` to ``typ``; on failure descend into Structs and lists of Structs
    so that every bad field is reported, not only the first."""
    try:
        msgspec.convert(value, typ)
        return
    except msgspec.ValidationError as exc:
        first = exc
    struct = _struct_of(typ)
    if struct is not None and isinstance(value, dict):
        fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
        for key in value:
            if key not in fields:
                errors.append((_join(path, key), "unknown field"))
        for key, info in fields.items():
            if key not in value:
                if info.required:
                    errors.append((_join(path, key), "required field is missing"))
            else:
                _collect(value[key], info.type, _join(path, key), errors)
        return
    item = _list_item_struct(typ)
    if item is not None and isinstance(value, list):
        for i, element in enumerate(value):
            _collect(element, item, f"{path}[{i}]", errors)
        return
    message = str(first)
    message, _, where = message.partition(" - at `$")
    errors.append((path + where.rstrip("`"), message))


def _struct_of(typ: Any) -> type[Struct] | None:
    for candidate in (typ, *getattr(typ, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, Struct):
            return candidate
    return None


def _list_item_struct(typ: Any) -> type[Struct] | None:
    if get_origin(typ) is Annotated:  # a list with a length limit
        typ = typ.__origin__
    if getattr(typ, "__origin__", None) is list:
        return _struct_of(typ.__args__[0])
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _member(path: str, key: str) -> str:
    """``path.key``, or ``path['key']`` for a key that is not a plain token (a header name
    with a line break must not break the error's line)."""
    return _join(path, key) if http1.TOKEN.match(key) else f"{path}[{key!r}]"


def _salvage(value: Any, typ: Any) -> Any:
    """``value`` converted to ``typ`` with every badly shaped field dropped (recursively),
    so the checks across sections also run on entries that have shape errors; raises
    only when a required field is left out."""
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError:
        struct = _struct_of(typ)
        if struct is None or not isinstance(value, dict):
            raise
    kept = {}
    for info in msgspec.structs.fields(struct):
        if info.encode_name in value:
            try:
                kept[info.encode_name] = msgspec.to_builtins(_salvage(value[info.encode_name], info.type))
            except msgspec.ValidationError:
                pass
    return msgspec.convert(kept, struct)


def _entries(raw: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    entries = raw.get(section)
    return [(i, e) for i, e in enumerate(entries) if isinstance(e, dict)] if isinstance(entries, list) else []


def _strings(value: Any) -> list[str]:
    return [x for x in value if isinstance(x, str)] if isinstance(value, list) else []


def _check_semantics(raw: dict[str, Any], errors: list[tuple[str, str]]) -> None:
    """Checks across sections and of values types cannot describe. They read the raw
    document (and salvage nested tables), so they run even where the shapes are wrong."""
    exchange = raw.get("exchange")
    if isinstance(exchange, dict):
        if isinstance(exchange.get("timezone"), str):
            _check_timezone(exchange["timezone"], "exchange.timezone", errors)
        for name in ("trusted_proxies", "metrics_allowed_ips"):
            for j, cidr in enumerate(_strings(exchange.get(name))):
                _check_cidr(cidr, f"exchange.{name}[{j}]", errors)

    seen_keys: dict[str, str] = {}
    sellers = _entries(raw, "sellers")
    _check_unique([(i, e.get("id")) for i, e in sellers], "sellers", errors)
    for i, seller in sellers:
        live, test = _strings(seller.get("api_keys")), _strings(seller.get("test_api_keys"))
        if not live and not test:
            errors.append((f"sellers[{i}].api_keys", "a seller needs at least one key"))
        _check_keys(live, f"sellers[{i}].api_keys", seen_keys, errors)
        _check_keys(test, f"sellers[{i}].test_api_keys", seen_keys, errors)
        for j, cidr in enumerate(_strings(seller.get("allowed_ips"))):
            _check_cidr(cidr, f"sellers[{i}].allowed_ips[{j}]", errors)

    buyers = _entries(raw, "buyers")
    _check_unique([(i, e.get("id")) for i, e in buyers], "buyers", errors)
    buyer_ids = {e.get("id") for _, e in buyers}
    for i, buyer in buyers:
        _check_keys(_strings(buyer.get("api_keys")), f"buyers[{i}].api_keys", seen_keys, errors)
        reasons = _strings(buyer.get("return_reasons"))
        for j, reason in enumerate(reasons):
            if reason in reasons[:j]:
                errors.append((f"buyers[{i}].return_reasons[{j}]", f"reason {reason!r} is listed twice"))
    operators = _entries(raw, "operators")
    _check_unique([(i, e.get("id")) for i, e in operators], "operators", errors)
    for i, operator in operators:
        keys = _strings(operator.get("api_keys"))
        if not keys:
            errors.append((f"operators[{i}].api_keys", "an operator needs at least one key"))
        _check_keys(keys, f"operators[{i}].api_keys", seen_keys, errors)
    _check_users(_entries(raw, "users"), {e.get("id") for _, e in sellers}, buyer_ids, errors)
    campaigns = _entries(raw, "campaigns")
    _check_unique([(i, e.get("id")) for i, e in campaigns], "campaigns", errors)
    for i, c in campaigns:
        where = f"campaigns[{i}]"
        if isinstance(c.get("buyer"), str) and c["buyer"] not in buyer_ids:
            errors.append((f"{where}.buyer", f"no buyer with id {c['buyer']!r}"))
        price = c.get("fixed_price", 0)
        if "ping_url" not in c and isinstance(price, (int, float)) and price <= 0:
            errors.append((f"{where}.fixed_price", "a campaign without ping_url needs a fixed_price above 0"))
        for name in ("ping_url", "post_url"):
            _check_url(c.get(name), f"{where}.{name}", errors)
        if isinstance(c.get("headers"), dict):
            _check_headers(c["headers"], f"{where}.headers", errors)
        _check_format(c, where, errors)
        try:
            f = _salvage(c.get("filters", {}), Filters)
        except msgspec.ValidationError:
            continue
        for name in ("states", "exclude_states"):
            for j, code in enumerate(getattr(f, name) or ()):
                if code.upper() not in US_STATES:
                    errors.append((f"{where}.filters.{name}[{j}]", f"not a US state code: {code!r}"))
        if f.schedule is not None:
            _check_timezone(f.schedule.timezone, f"{where}.filters.schedule.timezone", errors)
            if f.schedule.start == f.schedule.end:
                errors.append((f"{where}.filters.schedule", "start and end are equal: the window is empty"))
        for j, rule in enumerate(f.rules or ()):
            problem = rule_problem(rule)
            if problem:
                errors.append((f"{where}.filters.rules[{j}].value", problem))


def _check_keys(keys: list[str], where: str, seen: dict[str, str], errors: list[tuple[str, str]]) -> None:
    """Every API key opens exactly one door: long enough not to be guessed, and used once
    across sellers' live and test keys, buyers' and operators' keys."""
    for j, key in enumerate(keys):
        path = f"{where}[{j}]"
        if len(key) < MIN_KEY_LENGTH:
            errors.append((path, f"an API key must be at least {MIN_KEY_LENGTH} characters"))
        if key in seen:
            errors.append((path, f"key already used at {seen[key]}"))
        seen[key] = path


def _check_users(users: list[tuple[int, dict[str, Any]]], sellers: set[Any], buyers: set[Any],
                 errors: list[tuple[str, str]]) -> None:
    """Names once each, roles naming a seller or buyer that exists, hashes that are argon2id."""
    seen: dict[str, int] = {}
    for i, user in users:
        name, role, hashed = user.get("name"), user.get("role"), user.get("password_hash")
        if isinstance(name, str):
            if name in seen:
                errors.append((f"users[{i}].name", f"duplicate user name {name!r} (also users[{seen[name]}])"))
            seen.setdefault(name, i)
        if isinstance(role, str):
            match = ROLE.match(role)
            if match is None:
                errors.append((f"users[{i}].role", f"unknown role {role!r}: operator, seller:<id> or buyer:<id>"))
            elif match["seller"] is not None and match["seller"] not in sellers:
                errors.append((f"users[{i}].role", f"no seller with id {match['seller']!r}"))
            elif match["buyer"] is not None and match["buyer"] not in buyers:
                errors.append((f"users[{i}].role", f"no buyer with id {match['buyer']!r}"))
        if isinstance(hashed, str) and not _argon2id(hashed):
            errors.append((f"users[{i}].password_hash",
                           "not an argon2id hash ($argon2id$...): make one with `pingpost passwd`"))


#: An argon2id hash in the PHC string format, as ``pingpost passwd`` prints it: parameters,
#: then a salt and a digest of at least 8 and 16 bytes (base64 without padding).
_ARGON2ID = re.compile(r"\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{22,}\Z")


def _argon2id(hashed: str) -> bool:
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError
    if not _ARGON2ID.match(hashed):
        return False
    try:
        extract_parameters(hashed)
    except (InvalidHashError, ValueError):
        return False
    return True


def _check_verticals(raw: dict[str, Any], errors: list[tuple[str, str]]) -> None:
    """Type names, attribute names a ping may carry, and campaign rules on undeclared attributes
    (a rule on an attribute no ping can carry could never pass)."""
    verticals = _entries(raw, "verticals")
    _check_unique([(i, e.get("id")) for i, e in verticals], "verticals", errors)
    declared: dict[str, dict[str, Any]] = {}
    for i, vertical in verticals:
        attributes = vertical.get("attributes")
        if not isinstance(attributes, dict):
            continue
        if isinstance(vertical.get("id"), str):
            declared[vertical["id"]] = attributes
        for key, type_name in attributes.items():
            where = f"verticals[{i}].attributes.{key}"
            if not isinstance(type_name, str) or type_name not in ATTRIBUTE_TYPES:
                errors.append((where, f"unknown type {type_name!r}: one of {', '.join(ATTRIBUTE_TYPES)}"))
            if isinstance(key, str) and personal_key(key):
                errors.append((where, "names personal data, which a ping never carries"))
    for i, campaign in _entries(raw, "campaigns"):
        attributes = declared.get(campaign.get("vertical"))  # type: ignore[arg-type]
        filters = campaign.get("filters")
        rules = filters.get("rules") if isinstance(filters, dict) else None
        if attributes is None or not isinstance(rules, list):
            continue
        for j, rule in enumerate(rules):
            name = rule.get("field") if isinstance(rule, dict) else None
            if isinstance(name, str) and name not in attributes:
                errors.append((f"campaigns[{i}].filters.rules[{j}].field",
                               f"vertical {campaign['vertical']} declares no attribute {name!r}"))


def rule_problem(rule: Rule) -> str | None:
    """What is wrong with a rule's value for its op, or None."""
    v = rule.value
    number = (int, float)
    if rule.op == "exists":
        return None if v is None or isinstance(v, bool) else "exists takes no value (or true/false)"
    if v is None:
        return f"{rule.op} needs a value"
    if rule.op in ("in", "not_in"):
        return None if isinstance(v, list) and v else f"{rule.op} needs a non-empty list"
    if rule.op == "between":
        ok = (isinstance(v, list) and len(v) == 2 and all(isinstance(x, number) and not isinstance(x, bool) for x in v)
              and float(v[0]) <= float(v[1]))
        return None if ok else "between needs [low, high] numbers with low <= high"
    if rule.op in ("gt", "gte", "lt", "lte"):
        return None if isinstance(v, number) and not isinstance(v, bool) else f"{rule.op} needs a number"
    return None if not isinstance(v, list) else f"{rule.op} needs a single value"


def _check_unique(ids: list[tuple[int, Any]], section: str, errors: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for i, ident in ids:
        if not isinstance(ident, str):
            continue
        if ident in seen:
            errors.append((f"{section}[{i}].id", f"duplicate id {ident!r}"))
        seen.add(ident)


def _check_timezone(name: str, where: str, errors: list[tuple[str, str]]) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors.append((where, f"unknown time zone {name!r}"))


def _check_url(url: Any, where: str, errors: list[tuple[str, str]]) -> None:
    """What the URL pattern cannot say, so that every buyer request can be built from it."""
    try:
        msgspec.convert(url, Url)
    except msgspec.ValidationError:
        return  # missing or misshapen: reported with the shapes
    if not url.isascii() or not url.isprintable():
        errors.append((where, "a URL must be printable ASCII (percent-encode a path, punycode a host name)"))
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        errors.append((where, "not a valid URL (an IPv6 host goes in [ ])"))
        return
    try:
        port = parts.port
    except ValueError:  # out of range or not a number
        port = 0
    if port == 0:
        errors.append((where, "the port must be a number from 1 to 65535"))
    if not parts.hostname:
        errors.append((where, "the URL names no host"))


def _check_headers(headers: dict[str, Any], where: str, errors: list[tuple[str, str]]) -> None:
    """Header names are tokens and values plain text: either is written into every buyer
    request as it is, so a line break would add headers (or a request) of its own."""
    for name, value in headers.items():
        problem = http1.header_problem(name, value if isinstance(value, str) else "")
        if problem is not None:
            errors.append((where if not http1.TOKEN.match(name) else _member(where, name), problem))


def _check_format(c: dict[str, Any], where: str, errors: list[tuple[str, str]]) -> None:
    """A custom campaign describes its post, and its ping unless it has a fixed price; each
    stage is compiled, so every transform, pattern, path and auth is checked as it will run."""
    if c.get("format", "pingpost") not in ("pingpost", "custom"):
        return  # reported with the shapes
    custom = c.get("format") == "custom"
    kinds: tuple[tuple[Kind, str], ...] = (("ping", "ping_url"), ("post", "post_url"))
    for kind, url_key in kinds:
        raw = c.get(kind)
        if raw is None:
            if custom and (kind == "post" or url_key in c):
                errors.append((f"{where}.{kind}", f"a campaign of format custom describes its {kind} here"))
            continue
        if not custom:
            errors.append((f"{where}.{kind}", 'only a campaign of format = "custom" describes its requests'))
            continue
        if url_key not in c:
            errors.append((f"{where}.{kind}", "a fixed-price campaign sends no ping: leave this out"))
            continue
        if isinstance(raw, dict) and isinstance(raw.get("headers"), dict):
            _check_headers(raw["headers"], f"{where}.{kind}.headers", errors)
        try:
            stage = msgspec.convert(raw, Stage)
            msgspec.convert(c.get(url_key), Url)
            headers = msgspec.convert(c.get("headers", {}), dict[str, str])
        except msgspec.ValidationError:
            continue  # reported with the shapes
        errors += [(f"{where}.{kind}.{path}", reason) for path, reason in stage_problems(stage, kind, c[url_key], headers)]


def _check_cidr(cidr: str, where: str, errors: list[tuple[str, str]]) -> None:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        errors.append((where, f"not an IP address or CIDR: {cidr!r}"))


# Derived, ready-to-use values -----------------------------------------------------------


def minutes(hhmm: str) -> int:
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


def zone(name: str) -> datetime.tzinfo:
    return zoneinfo.ZoneInfo(name)
