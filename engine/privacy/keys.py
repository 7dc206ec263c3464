"""The operator's key and the keys it wraps: each lead's personal data under a key of its own.

A lead's data is sealed with AES-256-GCM under a fresh 32-byte key, the lead_id bound as
associated data (a blob copied onto another lead's row does not open). That key is kept
only wrapped: AES-256-GCM again, under the operator's key (``PINGPOST_DATA_KEY`` or
``[privacy] key_file``, the base64 text of 32 random bytes). Erasing a lead is destroying its
wrapped key: the sealed bytes may stay in a journal or a backup, they no longer open.
Rotating the operator's key re-wraps the per-lead keys; the sealed data is not touched.

Every wrapped value starts with a version byte and the first four bytes of the operator
key's id, so a value wrapped by another key is told apart from a damaged one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The environment variable that holds the operator's key (it wins over ``[privacy] key_file``).
KEY_ENV = "PINGPOST_DATA_KEY"
KEY_BYTES = 32
_NONCE = 12
_VERSION = b"\x01"
_ID = 4
#: What a wrapped value begins with before its nonce: version and key id.
_HEAD = len(_VERSION) + _ID

HOW_TO_MAKE_ONE = (f"make one with `pingpost keygen > pingpost.key` and pass it as {KEY_ENV}=$(cat pingpost.key) "
                   "or as [privacy] key_file = \"pingpost.key\"")


class KeyProblem(Exception):
    """The operator's key is missing, malformed, or not the one the books were made with."""


class Unreadable(Exception):
    """A sealed or wrapped value does not open: its key was destroyed, or it is not this
    key's, or it was altered."""


def generate() -> str:
    """A new operator key, as the text ``keygen`` prints and a key file holds."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse(text: str, where: str) -> bytes:
    """The key's 32 bytes from its base64 text (surrounding whitespace ignored)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem(f"{where} is not base64 text; {HOW_TO_MAKE_ONE}") from None
    if len(raw) != KEY_BYTES:
        raise KeyProblem(f"{where} holds {len(raw)} bytes, not {KEY_BYTES}; {HOW_TO_MAKE_ONE}")
    return raw


def load(key_file: str | None, environ: dict[str, str] | None = None) -> "OperatorKey | None":
    """The operator's key from ``PINGPOST_DATA_KEY``, else from ``key_file``; None when
    neither is given."""
    env = os.environ if environ is None else environ
    text = env.get(KEY_ENV)
    if text:
        return OperatorKey(parse(text, KEY_ENV))
    if key_file is None:
        return None
    try:
        return OperatorKey(parse(Path(key_file).read_text(), f"the key file {key_file}"))
    except OSError as exc:
        raise KeyProblem(f"cannot read the key file {key_file}: {exc.strerror or exc}") from None


def required(key: "OperatorKey | None") -> "OperatorKey":
    """The key, or the error that says how to make one."""
    if key is None:
        raise KeyProblem(f"no operator key: the books keep leads' personal data encrypted under it; {HOW_TO_MAKE_ONE}")
    return key


class OperatorKey:
    """Wraps and unwraps the keys below it; never leaves the process."""

    __slots__ = ("_aead", "_raw", "id")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._aead = AESGCM(raw)
        #: Names the key without revealing it (logs, and the head of what it wraps).
        self.id = hashlib.sha256(b"pingpost operator key id\0" + raw).hexdigest()[:16]

    def wrap(self, secret: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + bytes.fromhex(self.id[:2 * _ID]) + nonce + self._aead.encrypt(nonce, secret, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        if len(wrapped) < _HEAD + _NONCE or wrapped[:1] != _VERSION:
            raise Unreadable("not a wrapped key")
        if not self.wrapped_by_me(wrapped):
            raise Unreadable("wrapped by another operator key")
        try:
            return self._aead.decrypt(wrapped[_HEAD:_HEAD + _NONCE], wrapped[_HEAD + _NONCE:], context)
        except InvalidTag:
            raise Unreadable("does not open under this operator key") from None

    def wrapped_by_me(self, wrapped: bytes) -> bool:
        return bytes(wrapped[1:_HEAD]).hex() == self.id[:2 * _ID]

    def derive(self, label: bytes) -> bytes:
        """A secret of its own for ``label``, the same on every host with this key."""
        return hmac.digest(self._raw, label, "sha256")

    # A lead's data ------------------------------------------------------------------------

    def seal(self, lead_id: str, plaintext: bytes) -> tuple[bytes, bytes]:
        """(the lead's key wrapped, its data sealed under that key)."""
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE)
        aad = lead_id.encode()
        return self.wrap(key, b"lead key\0" + aad), _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)

    def open(self, lead_id: str, wrapped: bytes | None, sealed: bytes) -> bytes:
        """A lead's data; ``Unreadable`` once its key is gone."""
        if wrapped is None:
            raise Unreadable("the lead's key was destroyed")
        aad = lead_id.encode()
        key = self.unwrap(bytes(wrapped), b"lead key\0" + aad)
        sealed = bytes(sealed)
        if sealed[:1] != _VERSION:
            raise Unreadable("not sealed data")
        try:
            return AESGCM(key).decrypt(sealed[1:1 + _NONCE], sealed[1 + _NONCE:], aad)
        except InvalidTag:
            raise Unreadable("the lead's data does not open under its key") from None

    def rewrap_lead_key(self, lead_id: str, wrapped: bytes, new: "OperatorKey") -> bytes:
        """The lead's key wrapped by ``new`` instead (rotation: the data stays as it is)."""
        context = b"lead key\0" + lead_id.encode()
        return new.wrap(self.unwrap(bytes(wrapped), context), context)
