"""The keyed hashes a consumer's email or phone is known by where the value itself must not be.

An opt-out list of plain SHA-256 hashes could be reversed by hashing every likely phone
number; with a secret key in front (HMAC-SHA256 under the books' identifier key, kept
wrapped by the operator's key) it cannot be without that key. The hash is taken over the
SHA-256 of the normalized value, the form a ping carries (``email_sha256``,
``phone_sha256``), so a ping, a lead and a request find the same entry; its first 16 bytes
are kept.
"""

from __future__ import annotations

import hashlib
import hmac
from .. import normalize
from ..schema import Lead, PingFields

HASH_BYTES = 16
#: Whose identifier a hash is: an email's and a phone's never collide.
EMAIL, PHONE = b"email\0", b"phone\0"


class Identifiers:
    """Keyed hashes under one secret key (the books' identifier key)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        # Keyed once: a copy of it costs a hash about half what hmac.digest's set-up per
        # call does under OpenSSL 3 (docs/performance.md), and a ping may need two.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def of_digest(self, kind: bytes, digest: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(kind + digest)
        return mac.digest()[:HASH_BYTES]

    def of_value(self, kind: bytes, normalized: str) -> bytes:
        return self.of_digest(kind, hashlib.sha256(normalized.encode()).digest())

    def of_lead(self, lead: Lead) -> tuple[bytes, bytes]:
        """(email's, phone's): a lead's values are normalized when it is decoded."""
        return self.of_value(EMAIL, lead.email), self.of_value(PHONE, lead.phone)

    def of_ping(self, ping: PingFields) -> list[bytes]:
        """The hashes a ping carries, if any (a ping never carries the values)."""
        found = []
        if isinstance(ping.email_sha256, str):
            found.append(self.of_digest(EMAIL, bytes.fromhex(ping.email_sha256)))
        if isinstance(ping.phone_sha256, str):
            found.append(self.of_digest(PHONE, bytes.fromhex(ping.phone_sha256)))
        return found

    def of_request(self, email: str | None, phone: str | None) -> list[bytes] | None:
        """A consumer request's identifiers, normalized as in a lead; None when one does
        not read as an email or a phone."""
        hashes: list[bytes] = []
        for kind, value, rule in ((EMAIL, email, normalize.email), (PHONE, phone, normalize.phone)):
            if value is None:
                continue
            normalized = rule(value)
            if normalized is None:
                return None
            hashes.append(self.of_value(kind, normalized))
        return hashes
