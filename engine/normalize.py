"""Normalization of lead fields and detection of personal data.

Kept free of every other engine module: these rules are the contract's, and the property
tests exercise them directly.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Iterable, Mapping

#: The lead's personal fields: refused as keys of a ping or its attributes whatever their value.
PII_KEYS = frozenset({"first_name", "last_name", "email", "phone", "address", "ip_address", "dob"})

#: Words (or two adjacent words run together) that make any other key a personal-data key.
PII_WORDS = frozenset("""email phone telephone cellphone phonenumber emailaddress address streetaddress
    ipaddress ip ipv dob birth birthday birthdate ssn socialsecurity surname username
    firstname lastname fullname givenname familyname middlename maidenname contactname customername
    applicantname ownername drivername membername personname""".split())

#: Words that make such a key describe the datum instead of carrying it (``phone_type``,
#: ``years_at_address``, ``email_sha256``).
DESCRIBING_WORDS = frozenset("""type kind status valid validated verified verification score quality count
    age years months days has is opt optin optout opted consent domain country state provided present
    sha md hash hashed""".split())

#: US states, DC and the territories with USPS codes.
US_STATES = frozenset(
    """AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ
    NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR VI GU AS MP UM""".split()
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Personal data inside a text: an email address (found at its @), a US phone number (ten digits,
# area code and exchange not starting with 0 or 1, an optional +1/1, single spaces, dots or
# dashes between the groups, the area code maybe in parentheses), or a US SSN written
# ddd-dd-dddd (never 000, 666 or 9xx, 00, 0000). The look-arounds keep phones and SSNs off
# longer runs of digits, letters and dashes (ids, hashes, VINs, timestamps). Each branch starts
# with a known character, so the search skips the rest of a text in C.
_PERSONAL_TEXT = re.compile(
    r"@(?<=[\w.+-]@)[\w-]+(?:\.[\w-]+)+"
    r"|(?=[+(0-9])(?<![\w+-])(?:"
    r"(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-]?)[2-9][0-9]{2}[ .-]?[0-9]{4}"
    r"|(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}"
    r")(?![\w-])")
_NON_DIGITS = re.compile(r"\D")
_PHONE_PUNCTUATION = re.compile(r"^[\d\s().+\-]+$", re.ASCII)  # ASCII: "٤١٥..." is not a US number


def zip5(zip_code: str) -> str:
    """ZIP+4 is cut to the five-digit ZIP the buyers target on."""
    return zip_code[:5]


def state(code: str) -> str | None:
    """Upper-case state code, or None when it is not a US state or territory."""
    upper = code.upper()
    return upper if upper in US_STATES else None


def email(value: str) -> str | None:
    """Trimmed, lower-cased address, or None when it does not look like one."""
    cleaned = value.strip().lower()
    return cleaned if len(cleaned) <= 254 and _EMAIL.match(cleaned) else None


def phone(value: str) -> str | None:
    """The ten digits of a US number, accepting any punctuation and a leading +1 or 1."""
    if not _PHONE_PUNCTUATION.match(value) or value.count("+") > 1 or "+" in value.lstrip()[1:]:
        return None
    digits = _NON_DIGITS.sub("", value)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) != 10 or digits[0] in "01" or digits[3] in "01":
        return None
    return digits


def ip_address(value: str) -> str | None:
    """Canonical form of an IPv4 or IPv6 address, or None."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def name(value: str) -> str | None:
    """A trimmed name of 1 to 64 characters, or None."""
    cleaned = value.strip()
    return cleaned if 1 <= len(cleaned) <= 64 else None


def personal_text(text: str) -> bool:
    """Whether a text holds an email address, a US phone number or a US SSN anywhere in it.
    An ASCII identifier (``multi_car``, ``sr22``) holds none, and most attribute values are one:
    that C check skips the search."""
    return not (text.isascii() and text.isidentifier()) and _PERSONAL_TEXT.search(text) is not None


@functools.lru_cache(maxsize=4096)
def personal_key(key: str) -> bool:
    """Whether a key names personal data: one of the lead's fields in any case, or a key whose
    words (split at ``_``, ``-``, ``.``, spaces, digits and camelCase) name personal data and
    none describes it, or a key that is itself personal text. Cached: sellers reuse their keys."""
    if key.lower() in PII_KEYS or personal_text(key):
        return True
    words = [w.lower() for w in _KEY_WORDS.findall(key)]
    if not DESCRIBING_WORDS.isdisjoint(words):
        return False
    return not PII_WORDS.isdisjoint(words) or not PII_WORDS.isdisjoint(map(str.__add__, words, words[1:]))


def no_personal_text(values: Iterable[Any]) -> bool:
    """No string among ``values`` (or in a list among them) holds personal text. The hot path's
    check: a loop without a call for the strings that are ASCII identifiers."""
    for value in values:
        kind = type(value)
        if kind is str:
            if not (value.isascii() and value.isidentifier()) and personal_text(value):
                return False
        elif kind is list:
            for item in value:
                if type(item) is str and not (item.isascii() and item.isidentifier()) and personal_text(item):
                    return False
    return True


_KEY_SETS: dict[tuple[str, ...], bool] = {}


def no_personal_key(keys: tuple[str, ...]) -> bool:
    """No personal key among ``keys``; cached per set of keys, as a seller sends the same
    attribute keys ping after ping (the hot path's check of the keys)."""
    clean = _KEY_SETS.get(keys)
    if clean is None:
        if len(_KEY_SETS) >= 4096:
            _KEY_SETS.clear()
        clean = _KEY_SETS[keys] = not any(map(personal_key, keys))
    return clean


def personal_attributes(attributes: Mapping[str, Any]) -> list[str]:
    """The paths, under their attributes object, of the attributes that carry personal data:
    a personal key (a boolean under a key named so only by its words says whether there is
    such data, not what it is: it passes), or personal text in a value or a list item."""
    found: list[str] = []
    for key, value in attributes.items():
        kind = type(value)
        if personal_key(key) and (kind is not bool or key.lower() in PII_KEYS or personal_text(key)):
            found.append(key)
        elif kind is str:
            if personal_text(value):
                found.append(key)
        elif kind is list:
            found += [f"{key}[{i}]" for i, item in enumerate(value) if type(item) is str and personal_text(item)]
    return found
