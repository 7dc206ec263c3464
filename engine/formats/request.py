"""A buyer's request, compiled from a ``spec.Stage``: the fields' rules and the encoding.

``render`` takes the values a request may use (``sources`` names them: the ping's fields
for a ping, the lead over them for a post, and the exchange's own) and gives the request
head and body. The head is built once per stage at config load; only a query string makes
a head per request.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

import msgspec

from .. import http1
from ..normalize import PII_KEYS
from ..schema import Lead, PingFields
from . import paths
from .spec import Field, Stage
from .transforms import Problems, Transform, compile_chain, text

Kind = Literal["ping", "post"]

#: What the exchange itself adds to the lead's fields, per message.
EXCHANGE_SOURCES: dict[Kind, tuple[str, ...]] = {
    "ping": ("ping_id", "campaign_id", "seller_id", "test", "tmax_ms"),
    "post": ("ping_id", "campaign_id", "seller_id", "test", "price", "reference"),
}
PING_SOURCES = (*PingFields.__struct_fields__, *EXCHANGE_SOURCES["ping"])
POST_SOURCES = (*dict.fromkeys((*PingFields.__struct_fields__, *Lead.__struct_fields__)), *EXCHANGE_SOURCES["post"])
SOURCES: dict[Kind, frozenset[str]] = {"ping": frozenset(PING_SOURCES), "post": frozenset(POST_SOURCES)}

CONTENT_TYPES = {"json": "application/json", "xml": "application/xml", "form": "application/x-www-form-urlencoded",
                 "json_in_form": "application/x-www-form-urlencoded"}
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'

Getter = Callable[[dict[str, Any]], Any]


def source(name: str, kind: Kind, where: str, problems: Problems) -> Getter | None:
    """A field's ``from``: a top-level value, or ``attributes.<key>``."""
    top, dot, key = name.partition(".")
    if top not in SOURCES[kind] or (dot and top != "attributes") or (dot and not key):
        if kind == "ping" and top in PII_KEYS:
            problems.append((where, f"a ping carries no personal data: {top} is only in the post"))
        else:
            known = PING_SOURCES if kind == "ping" else POST_SOURCES
            problems.append((where, f"unknown value {name!r} for a {kind}: one of {', '.join(known)}, "
                                    "or attributes.<name>"))
        return None
    if dot:
        def attribute(values: dict[str, Any]) -> Any:
            attributes = values.get("attributes")
            return attributes.get(key) if type(attributes) is dict else None
        return attribute

    def value(values: dict[str, Any]) -> Any:
        return values.get(top)
    return value


@dataclass(frozen=True, slots=True)
class FieldRule:
    target: tuple[paths.Segment, ...]
    get: Getter | None
    constant: Any
    chain: tuple[Transform, ...]
    mapping: dict[str, Any] | None
    default: Any

    def value(self, values: dict[str, Any], today: datetime.date) -> Any:
        """The field's value for one request; None: the field is left out."""
        value = self.constant if self.get is None else self.get(values)
        if value is not None:
            for transform in self.chain:
                value = transform(value, today)
                if value is None:
                    break
        if value is not None and self.mapping is not None:
            value = self.mapping.get(text(value), value if self.default is None else self.default)
        return self.default if value is None else value


def field_rule(field: Field, kind: Kind, nested: bool, xml: bool, where: str, problems: Problems) -> FieldRule:
    if (field.from_ is None) == (field.value is None):
        problems.append((where, "a field takes its value either from the ping or lead (from) or as a constant (value)"))
    get = None if field.from_ is None else source(field.from_, kind, f"{where}.from", problems)
    return FieldRule(
        target=paths.target(field.to, nested, xml, f"{where}.to", problems),
        get=get, constant=field.value,
        chain=tuple(compile_chain(field.transforms, f"{where}.transforms", problems)),
        mapping=field.map, default=field.default)


# Encodings ---------------------------------------------------------------------------------


def _tree(rules: tuple[FieldRule, ...], values: dict[str, Any], today: datetime.date, lists: bool) -> dict[str, Any]:
    tree: dict[Any, Any] = {}
    for rule in rules:
        value = rule.value(values, today)
        if value is None:
            continue
        node = tree
        for step in rule.target[:-1]:
            node = node.setdefault(step, {})
        node[rule.target[-1]] = value
    return _as_lists(tree) if lists else tree


def _as_lists(node: Any) -> Any:
    """Nodes keyed by list indexes become lists, in index order (a left-out field leaves no hole)."""
    if type(node) is not dict:
        return node
    if node and all(type(k) is int for k in node):
        return [_as_lists(node[k]) for k in sorted(node)]
    return {k: _as_lists(v) for k, v in node.items()}


def _pairs(rules: tuple[FieldRule, ...], values: dict[str, Any], today: datetime.date) -> Iterator[tuple[str, str]]:
    for rule in rules:
        value = rule.value(values, today)
        if value is None:
            continue
        name = rule.target[0]
        assert isinstance(name, str)
        for item in value if type(value) is list else (value,):
            yield name, text(item)


def _xml_text(value: Any) -> str:
    return escape(_XML_INVALID.sub("", text(value)))


def _xml(name: str, value: Any, out: list[str]) -> None:
    """``value`` as element ``name``; a key that is no XML name (an attribute key, say) is left out."""
    if type(value) is list:
        for item in value:
            _xml(name, item, out)
    elif type(value) is dict:
        attributes = "".join(f" {k[1:]}={quoteattr(_XML_INVALID.sub('', text(v)))}" for k, v in value.items()
                             if k.startswith("@") and paths.XML_NAME.match(k[1:]))
        out.append(f"<{name}{attributes}>")
        for k, v in value.items():
            if paths.XML_NAME.match(k):
                _xml(k, v, out)
        out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{_xml_text(value)}</{name}>")


class RequestFormat:
    """One stage's request: its head (``target``) and the rules that make its body."""

    __slots__ = ("target", "rules", "encoding", "root", "form_field", "lists")

    def __init__(self, stage: Stage, kind: Kind, target: http1.Target, problems: Problems) -> None:
        nested = stage.encoding in ("json", "xml", "json_in_form")
        xml = stage.encoding == "xml"
        rules = tuple(field_rule(f, kind, nested, xml, f"fields[{i}]", problems) for i, f in enumerate(stage.fields))
        paths.check_targets([(f"fields[{i}].to", rule.target) for i, rule in enumerate(rules)], problems)
        if xml and not paths.XML_NAME.match(stage.root):
            problems.append(("root", f"{stage.root!r} is not an XML element name"))
        self.target = target
        self.rules = rules
        self.encoding = stage.encoding
        self.root = stage.root
        self.form_field = stage.form_field
        self.lists = any(type(step) is int for rule in rules for step in rule.target)

    def render(self, values: dict[str, Any], today: datetime.date) -> tuple[http1.Target, bytes]:
        encoding = self.encoding
        if encoding == "json":
            return self.target, msgspec.json.encode(_tree(self.rules, values, today, self.lists))
        if encoding == "xml":
            out: list[str] = []
            _xml(self.root, _tree(self.rules, values, today, False), out)
            return self.target, _XML_DECLARATION + "".join(out).encode()
        if encoding == "json_in_form":
            body = msgspec.json.encode(_tree(self.rules, values, today, self.lists)).decode()
            return self.target, urlencode([(self.form_field, body)]).encode()
        encoded = urlencode(list(_pairs(self.rules, values, today)))
        if encoding == "form":
            return self.target, encoded.encode()
        return (self.target.with_query(encoded) if encoded else self.target), b""
