"""What the books need to keep a lead's personal data: the operator's key to seal it under a
key of its own, and the identifier key to find it again by email or phone.

The books' identifier key is made once per ledger (derived from the operator's key then, so
hosts that make it at the same moment make the same one) and kept in the books wrapped by
the operator's key, which is how it outlives a rotation of that key.
"""

from __future__ import annotations

import msgspec

from ..schema import Lead
from .identifiers import Identifiers
from .keys import OperatorKey, Unreadable

#: privacy_keys' row of the identifier key, and the context it is wrapped under.
IDENTIFIER_KEY = "identifiers"
_CONTEXT = b"identifier key"

_encode = msgspec.msgpack.Encoder().encode
_lead = msgspec.msgpack.Decoder(Lead).decode


def first_identifier_key(operator: OperatorKey) -> bytes:
    """The identifier key a ledger starts with, wrapped for its privacy_keys row."""
    return operator.wrap(operator.derive(b"pingpost identifier key v1"), _CONTEXT)


class Vault:
    """Seals and opens leads; hashes identifiers. One per process, made at the ledger's open."""

    __slots__ = ("operator", "identifiers")

    def __init__(self, operator: OperatorKey, identifier_key_wrapped: bytes) -> None:
        self.operator = operator
        self.identifiers = Identifiers(operator.unwrap(bytes(identifier_key_wrapped), _CONTEXT))

    def seal(self, lead_id: str, lead: Lead) -> tuple[bytes, bytes, bytes, bytes]:
        """(key_wrapped, data, email_hash, phone_hash) of the lead's data row."""
        wrapped, data = self.operator.seal(lead_id, _encode(lead))
        return (wrapped, data, *self.identifiers.of_lead(lead))

    def open(self, lead_id: str, wrapped: bytes | None, data: bytes | None) -> Lead | None:
        """The lead as posted; None once erased (its key and data are gone)."""
        if data is None:
            return None
        return _lead(self.operator.open(lead_id, wrapped, data))


def plain_lead(data: bytes) -> Lead:
    """A lead data row written in clear (books made before encryption), to be sealed."""
    return _lead(bytes(data))


def rewrap_identifier_key(wrapped: bytes, old: OperatorKey, new: OperatorKey) -> bytes:
    return new.wrap(old.unwrap(bytes(wrapped), _CONTEXT), _CONTEXT)


__all__ = ["IDENTIFIER_KEY", "Unreadable", "Vault", "first_identifier_key", "plain_lead", "rewrap_identifier_key"]
