"""Reading a buyer's own answer, compiled from a ``spec.AnswerSpec``.

The answer is parsed once (JSON, XML, or text: by its Content-Type or as configured), then
each read takes its values from the parsed form. Buyer XML is parsed by defusedxml with
document types refused, so no entity is expanded and no external reference followed.
Every answer ends as a result with a reason; nothing here raises on what a buyer sends.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml
from xml.etree.ElementTree import ParseError

from .. import money
from . import paths
from .pingpost import is_json
from .results import Answer, BidResult, PostResult, clean_reason
from .spec import AnswerSpec, Parse, Read
from .transforms import Problems, text

#: A reference longer than this is refused: it goes back to the buyer in the post as it came.
MAX_REFERENCE = 256
#: Above this many cents a price is no price (and would not fit the records).
MAX_CENTS = 2**53
_PRICE = re.compile(r"\$?\s*((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)\Z")
_decode_json = msgspec.json.decode


def is_xml(content_type: bytes) -> bool:
    """``application/xml``, ``text/xml`` or ``<anything>+xml``, any case, any parameters."""
    media = content_type.partition(b";")[0].strip().lower()
    return media in (b"application/xml", b"text/xml") or media.endswith(b"+xml")


class Parsed:
    """An answer's body in the form its reads take: ``kind`` is json, xml or text."""

    __slots__ = ("kind", "tree", "body", "_text")

    def __init__(self, kind: str, tree: Any, body: bytes) -> None:
        self.kind = kind
        self.tree = tree
        self.body = body
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.body.decode("utf-8", "replace")
        return self._text


def parse(answer: Answer, forced: Parse) -> Parsed | str:
    """The body parsed, or the reason it does not parse."""
    kind = forced
    if kind == "auto":
        kind = "json" if is_json(answer.content_type) else "xml" if is_xml(answer.content_type) else "text"
    if kind == "json":
        try:
            return Parsed("json", _decode_json(answer.body), answer.body)
        except (msgspec.DecodeError, RecursionError):  # the latter: nested too deep to read
            return "error:bad_json"
    if kind == "xml":
        try:
            return Parsed("xml", parse_xml(answer.body, forbid_dtd=True), answer.body)
        except (ParseError, DefusedXmlException, ValueError):
            return "error:bad_xml"
    return Parsed("text", None, answer.body)


class Reading:
    """One compiled read: a dot path (on JSON, and on XML from the root), an XPath (XML), or
    a regex on the body's text."""

    __slots__ = ("json", "xml", "pattern")

    def __init__(self, path: str | None, pattern: re.Pattern[str] | None, where: str, problems: Problems) -> None:
        self.json: paths.Reader | None = None
        self.xml: paths.Reader | None = None
        self.pattern = pattern
        if path is None:
            return
        if path.startswith("/"):
            compiled = paths.xpath(path)
            if isinstance(compiled, str):
                problems.append((where, compiled))
            else:
                self.xml = compiled
        elif any(not step for step in path.split(".")):
            problems.append((where, f"{path!r} has an empty step: write steps like results.0.price"))
        else:
            self.json = paths.json_path(path)
            self.xml = paths.dot_path_as_xml(path)

    @classmethod
    def of(cls, read: Read, where: str, problems: Problems) -> "Reading":
        if (read.path is None) == (read.regex is None):
            problems.append((where, "a read takes either a path or a regex"))
        pattern = None if read.regex is None else paths.regex(read.regex, f"{where}.regex", problems, 1)
        return cls(read.path, pattern, f"{where}.path", problems)

    def values(self, parsed: Parsed) -> list[Any]:
        if self.pattern is not None:
            match = self.pattern.search(parsed.text)
            return [] if match is None or match.group(1) is None else [match.group(1)]
        if parsed.kind == "json" and self.json is not None:
            found: list[Any] = []
            for value in self.json(parsed.tree):  # a list's items are its values: ["zip invalid", ...]
                if type(value) is list:
                    found += [v for v in value if type(v) is not dict and type(v) is not list]
                elif type(value) is not dict:
                    found.append(value)
            return found
        if parsed.kind == "xml" and self.xml is not None:
            return self.xml(parsed.tree)
        return []


def cents_of(value: Any) -> int | None:
    """A price as cents, or None when it is not one: a number or a text like ``12.50`` or
    ``$1,250.00``, never negative, not a boolean."""
    if type(value) is int or type(value) is float:
        if not math.isfinite(value) or value < 0 or value * 100 >= MAX_CENTS:
            return None
        return money.to_cents(float(value))
    if type(value) is not str:
        return None
    written = _PRICE.match(value.strip())
    if written is None:
        return None
    cents = money.text_to_cents(written.group(1).replace(",", ""))
    return cents if cents < MAX_CENTS else None


class AnswerFormat:
    """How one stage's answer reads: 5xx (and 1xx, 3xx) are errors, 204 is nothing, a 4xx
    is a refusal with the buyer's reason, and a 2xx is a success when ``success`` matches."""

    __slots__ = ("parse", "success_at", "success", "price", "reference", "reason")

    def __init__(self, spec: AnswerSpec, needs_price: bool, problems: Problems) -> None:
        self.parse = spec.parse
        self.success_at: Reading | None = None
        self.success: re.Pattern[str] | None = None
        if spec.success is not None:
            self.success = paths.regex(spec.success.match, "answer.success.match", problems, 0)
            if spec.success.path is not None:
                self.success_at = Reading(spec.success.path, None, "answer.success.path", problems)
        if needs_price and spec.price is None:
            problems.append(("answer.price", "a ping's answer needs a price to read"))
        self.price = None if spec.price is None else Reading.of(spec.price, "answer.price", problems)
        self.reference = None if spec.reference is None else Reading.of(spec.reference, "answer.reference", problems)
        self.reason = None if spec.reason is None else Reading.of(spec.reason, "answer.reason", problems)

    def _succeeded(self, parsed: Parsed) -> bool:
        pattern = self.success
        if pattern is None:
            return True
        if self.success_at is None:
            return pattern.search(parsed.text) is not None
        return any(pattern.search(text(v)) for v in self.success_at.values(parsed))

    def _reason(self, parsed: Parsed) -> str | None:
        """The buyer's reason as a token; several (a list of errors) sorted and joined."""
        if self.reason is None:
            return None
        found = sorted(text(v) for v in self.reason.values(parsed) if text(v).strip())
        return clean_reason(", ".join(found)) if found else None

    def _reference(self, parsed: Parsed) -> str | None:
        if self.reference is None:
            return None
        found = self.reference.values(parsed)
        return text(found[0]).strip() if found else None

    def _read(self, answer: Answer) -> tuple[str, Parsed | None]:
        """``ok`` (a 2xx to read), ``refused`` (a 4xx to read), or the failure's reason."""
        if answer.failure is not None:
            return answer.failure, None
        status = answer.status
        refused = 400 <= status < 500
        if not (200 <= status < 300 or refused):
            return f"error:http_{status}", None
        parsed = parse(answer, self.parse)
        if isinstance(parsed, str):
            return (f"error:http_{status}" if refused else parsed), None
        return ("refused" if refused else "ok"), parsed

    def read_bid(self, answer: Answer) -> BidResult:
        if answer.status == 204 and answer.failure is None:
            return BidResult(None, None, "no_bid")
        state, parsed = self._read(answer)
        if parsed is None:
            return BidResult(None, None, state)
        if state == "refused" or not self._succeeded(parsed):
            reason = self._reason(parsed)
            if reason is None:
                return BidResult(None, None, f"error:http_{answer.status}" if state == "refused" else "no_bid")
            return BidResult(None, None, "no_bid:" + reason)
        assert self.price is not None
        prices = self.price.values(parsed)
        if not prices:
            return BidResult(None, None, "no_bid" if self.success is None else "error:bad_bid")
        cents = cents_of(prices[0])
        if cents is None:
            return BidResult(None, None, "error:bad_bid")
        reference = self._reference(parsed)
        if reference is not None and len(reference) > MAX_REFERENCE:
            return BidResult(None, None, "error:bad_answer")
        if cents == 0:
            return BidResult(None, reference, "no_bid")
        return BidResult(cents, reference, "bid")

    def read_post(self, answer: Answer) -> PostResult:
        state, parsed = self._read(answer)
        if parsed is None:
            return PostResult(False, None, "rejected:" + state)
        if state == "refused" or not self._succeeded(parsed):
            reason = self._reason(parsed)
            if reason is None and state == "refused":
                return PostResult(False, None, f"rejected:error:http_{answer.status}")
            return PostResult(False, None, "rejected:" + (reason or "unspecified"))
        reference = self._reference(parsed)
        return PostResult(True, None if reference is None else reference[:MAX_REFERENCE], "accepted")
