"""Cursors of the lists that page: a position in the list's own order, opaque to the caller.

A page ends at its last item; the cursor is that item's sort key (a time and an id), and
the next page starts strictly after it. Keys of items already listed never change and new
items sort before the first page (newest first) or after the queue's end (oldest first),
so a page never repeats or skips an item because others arrived meanwhile, as an offset
would. The key is encoded (msgpack, then base64url) so callers pass it back as it is.
"""

from __future__ import annotations

import base64
import binascii
import math

import msgspec

from .schema import FieldError

Position = tuple[float, str]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[float, str]).decode
RULE = "a next_cursor as this list answered it"


def encode(position: Position) -> str:
    return base64.urlsafe_b64encode(_encode(position)).rstrip(b"=").decode()


def decode(text: str, problems: list[FieldError]) -> Position | None:
    """The position a cursor names; a cursor that is not one goes to ``problems``."""
    try:
        position = _decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if math.isfinite(position[0]) and len(position[1]) <= 64:
            return position
    except (binascii.Error, ValueError, msgspec.DecodeError):
        pass
    problems.append(FieldError("cursor", f"must be {RULE}"))
    return None
