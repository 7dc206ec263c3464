"""Dashboard sessions: a random token in a cookie, the session itself in the shared store.

The cookie carries only a token (32 random bytes); the store keeps the session under the
token's SHA-256, so neither a store dump nor a log of keys can be replayed as a cookie.
Being server-side, a session ends for every worker at once: at sign-out, after ``IDLE_S``
without a request, ``LIFETIME_S`` after sign-in whatever its use, and as soon as its user
leaves the config or gets a new password hash (a reload is enough; the session remembers a
fingerprint of the hash it was opened with).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec

from ..config import User
from ..store.base import Clock, Store

#: A session unused this long is over.
IDLE_S = 3600.0
#: And any session is over this long after its sign-in.
LIFETIME_S = 12 * 3600.0
#: A request renews the idle limit only when the last renewal is this old: one store write
#: per minute of use, not one per page.
RENEW_AFTER_S = 60.0


class Session(msgspec.Struct, array_like=True):
    """``csrf`` is the token every form of this session carries; ``password`` the
    fingerprint of the user's hash at sign-in."""

    user: str
    csrf: str
    signed_in_at: float
    renewed_at: float
    password: str


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Session).decode


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def same(a: str, b: str) -> bool:
    """Tokens compared in constant time, so their bytes cannot be guessed one at a time."""
    return hmac.compare_digest(a.encode(), b.encode())


class Sessions:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def open(self, user: User) -> tuple[str, Session]:
        """A new session for a user who just proved who they are: (the cookie's token, it)."""
        token, now = secrets.token_urlsafe(32), self.clock()
        session = Session(user.name, secrets.token_urlsafe(32), now, now, fingerprint(user.password_hash))
        await self.store.put_session(_key(token), _encode(session), IDLE_S)
        return token, session

    async def find(self, token: str, users: dict[str, User]) -> Session | None:
        """The live session of this cookie token, renewed if due; None when there is none,
        it is past its lifetime, or its user or password changed (then it is dropped)."""
        data = await self.store.get_session(_key(token))
        if data is None:
            return None
        try:
            session = _decode(data)
        except msgspec.DecodeError:  # written by another version of the dashboard
            session = None
        now = self.clock()
        user = users.get(session.user) if session is not None else None
        if (session is None or user is None or now - session.signed_in_at >= LIFETIME_S
                or not same(session.password, fingerprint(user.password_hash))):
            await self.close(token)
            return None
        if now - session.renewed_at >= RENEW_AFTER_S:
            session.renewed_at = now
            await self.store.put_session(_key(token), _encode(session),
                                         min(IDLE_S, session.signed_in_at + LIFETIME_S - now))
        return session

    async def close(self, token: str) -> None:
        await self.store.drop_session(_key(token))
