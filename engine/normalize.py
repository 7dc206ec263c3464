"""Normalization of lead fields and detection of personal data.

Kept free of every other engine module: these rules are the contract's, and the property
tests exercise them directly.
"""

from __future__ import annotations

import ipaddress
import re

#: Keys that carry personal data and are refused anywhere in a ping.
PII_KEYS = frozenset({"first_name", "last_name", "email", "phone", "address", "ip_address", "dob"})

#: US states, DC and the territories with USPS codes.
US_STATES = frozenset(
    """AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ
    NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR VI GU AS MP UM""".split()
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
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
