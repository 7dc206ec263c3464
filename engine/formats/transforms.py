"""The transforms a request field's value passes through, named in the config.

Each is compiled once into a function ``(value, today) -> value | None``; None means the
value cannot be transformed (a date transform on something that is not a date), and the
field then takes its default or is left out. None of them raises on any input.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import unicodedata
from typing import Any, Callable

import msgspec

Transform = Callable[[Any, datetime.date], Any]
Problems = list[tuple[str, str]]

#: strftime directives a date can fill (no time of day: a date of birth has none).
_DATE_DIRECTIVES = frozenset("aAbBdjmUwWyY%")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")
_NON_DIGITS = re.compile(r"[^0-9]+")
#: Latin letters that Unicode does not decompose into an ASCII letter and a mark.
_ASCII_LETTERS = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                                "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th", "ı": "i"})
_MAX_LENGTH = 10_000


def text(value: Any) -> str:
    """A value as the text a form, a query string or an XML element carries."""
    if type(value) is str:
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(map(text, value))
    return msgspec.json.encode(value).decode()


def as_date(value: Any) -> datetime.date | None:
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def _digits(value: Any, today: datetime.date) -> Any:
    return _NON_DIGITS.sub("", text(value))


def _upper(value: Any, today: datetime.date) -> Any:
    return text(value).upper()


def _lower(value: Any, today: datetime.date) -> Any:
    return text(value).lower()


def _trim(value: Any, today: datetime.date) -> Any:
    return text(value).strip()


def _age(value: Any, today: datetime.date) -> Any:
    born = as_date(value)
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _md5(value: Any, today: datetime.date) -> Any:
    return hashlib.md5(text(value).encode(), usedforsecurity=False).hexdigest()


def _sha256(value: Any, today: datetime.date) -> Any:
    return hashlib.sha256(text(value).encode()).hexdigest()


def _ascii(value: Any, today: datetime.date) -> Any:
    """``José Núñez`` -> ``Jose Nunez``: letters lose their marks; what has no ASCII form goes."""
    decomposed = unicodedata.normalize("NFKD", text(value).translate(_ASCII_LETTERS))
    return decomposed.encode("ascii", "ignore").decode()


def _number(value: Any, today: datetime.date) -> Any:
    """A number for a JSON body: ``"123456"`` -> 123456, ``"12.50"`` -> 12.5."""
    if type(value) is int or type(value) is float:
        return value
    written = text(value).strip()
    if not _NUMBER.match(written):
        return None
    return float(written) if "." in written else int(written)


_PLAIN: dict[str, Transform] = {
    "digits": _digits, "upper": _upper, "lower": _lower, "trim": _trim, "age": _age, "md5": _md5,
    "sha256": _sha256, "ascii": _ascii, "number": _number,
}
#: Every transform name, with its argument where it takes one: what the docs and errors list.
NAMES = (*_PLAIN, "first:N", "last:N", "date:FORMAT")


def _first(n: int) -> Transform:
    def first(value: Any, today: datetime.date) -> Any:
        return text(value)[:n]
    return first


def _last(n: int) -> Transform:
    def last(value: Any, today: datetime.date) -> Any:
        return text(value)[-n:]
    return last


def _date(pattern: str) -> Transform:
    def date(value: Any, today: datetime.date) -> Any:
        day = as_date(value)
        return None if day is None else day.strftime(pattern)
    return date


def _date_problem(pattern: str) -> str | None:
    if not pattern:
        return "date: needs a format, such as date:%m/%d/%Y"
    directives = re.findall(r"%(.?)", pattern)
    bad = [d for d in directives if d not in _DATE_DIRECTIVES]
    if bad:
        return (f"date format directive %{bad[0]} is not one a date fills: use "
                f"{', '.join('%' + d for d in sorted(_DATE_DIRECTIVES - {'%'}))} (and %% for %)")
    return None


def compile_one(name: str) -> Transform | str:
    """The transform ``name`` denotes, or the reason it denotes none."""
    plain = _PLAIN.get(name)
    if plain is not None:
        return plain
    kind, colon, argument = name.partition(":")
    if colon and kind in ("first", "last"):
        if not argument.isdigit() or not 1 <= int(argument) <= _MAX_LENGTH:
            return f"{kind}:N needs a whole number N from 1 to {_MAX_LENGTH}"
        return (_first if kind == "first" else _last)(int(argument))
    if colon and kind == "date":
        problem = _date_problem(argument)
        return problem if problem is not None else _date(argument)
    return f"unknown transform {name!r}: one of {', '.join(NAMES)}"


def compile_chain(names: list[str], path: str, problems: Problems) -> list[Transform]:
    chain = []
    for i, name in enumerate(names):
        compiled = compile_one(name)
        if isinstance(compiled, str):
            problems.append((f"{path}[{i}]", compiled))
        else:
            chain.append(compiled)
    return chain
