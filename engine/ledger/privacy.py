"""The privacy transactions, written once for both backends (``steps``): the books' own keys,
the opt-out list, erasures, the request log, and re-wrapping every lead's key.

An erasure makes a lead's personal data unreadable by destroying the lead's wrapped key, and
drops the sealed data and the keyed hashes with it; the row stays (lead_id, created_at,
erased_at), as do the sale, the money and the traffic records, none of which hold personal
data. Writers of the opt-out list take ``SUPPRESSION_LOCK`` first, so entries are numbered
in the order they commit and a reader that has seen number N has seen everything before it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from ..privacy.keys import OperatorKey
from ..privacy.vault import IDENTIFIER_KEY, Vault, plain_lead, rewrap_identifier_key
from . import codec
from .codec import Row
from .steps import Lock, Steps, Transaction, q

#: Advisory lock space of the opt-out list's writers ("optouts!" as an integer).
SUPPRESSION_LOCK = int.from_bytes(b"optouts!", "big") >> 1
#: Leads one retention or re-wrapping transaction takes.
CHUNK = 500

_ERASE = "key_wrapped = NULL, data = NULL, email_hash = NULL, phone_hash = NULL, erased_at = ?"
#: A lead's data row that arrives after its consumer's deletion (a post in flight, a host's
#: journal not yet forwarded) is erased where it lands. Parameters: when, then the lead ids.
ERASE_IF_SUPPRESSED = (f"UPDATE lead_data SET {_ERASE} WHERE lead_id IN ({{ids}}) AND erased_at IS NULL "
                       "AND (email_hash IN (SELECT hash FROM suppressions) OR phone_hash IN (SELECT hash FROM suppressions))")

OPT_OUT, DELETION, RETENTION = "opt_out", "deletion", "retention"


class PrivacyRequest(NamedTuple):
    request_id: str
    kind: str
    received_at: float
    completed_at: float | None
    leads_erased: int


def books_key(candidate: bytes, at: float) -> Transaction[bytes]:
    """The books' identifier key (wrapped), ``candidate`` if they had none yet."""
    def steps() -> Steps[bytes]:
        yield q("INSERT INTO privacy_keys (name, key_wrapped, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                IDENTIFIER_KEY, candidate, at)
        rows = yield q("SELECT key_wrapped FROM privacy_keys WHERE name = ?", IDENTIFIER_KEY)
        return bytes(rows[0][0])
    return steps


def _suppress(hashes: Sequence[bytes], at: float) -> Steps[None]:
    yield Lock(SUPPRESSION_LOCK)
    for digest in hashes:
        yield q("INSERT INTO suppressions (hash, added_at) VALUES (?, ?) ON CONFLICT DO NOTHING", digest, at)


def _log(request_id: str, kind: str, received_at: float, completed_at: float, erased: int) -> Steps[None]:
    """The request's entry in the log; a request done in several transactions (retention, a
    chunk each) adds each one's leads to its entry."""
    yield q("INSERT INTO privacy_requests (request_id, kind, received_at, completed_at, leads_erased) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET completed_at = excluded.completed_at, "
            "leads_erased = privacy_requests.leads_erased + excluded.leads_erased",
            request_id, kind, received_at, completed_at, erased)


def opt_out(request_id: str, hashes: Sequence[bytes], at: float) -> Transaction[int]:
    def steps() -> Steps[int]:
        yield from _suppress(hashes, at)
        yield from _log(request_id, OPT_OUT, at, at, 0)
        return 0
    return steps


class Erasure(NamedTuple):
    """What a deletion did: the leads it erased, and every keyed hash it opted out (those
    asked for, and the other identifiers of the leads found: a consumer deleted by email is
    opted out by the phone its leads carried too)."""

    erased: int
    suppressed: list[bytes]


def delete(request_id: str, hashes: Sequence[bytes], at: float) -> Transaction[Erasure]:
    """Erase every lead with one of ``hashes``, drop the hashed identifiers its ping carried
    (``email_sha256``, ``phone_sha256``), and opt the consumer out."""
    def steps() -> Steps[Erasure]:
        marks = ", ".join("?" * len(hashes))
        found = yield q(f"SELECT d.lead_id, d.email_hash, d.phone_hash, p.ping_id, p.fields FROM lead_data d "
                        "LEFT JOIN sales s ON s.lead_id = d.lead_id LEFT JOIN pings p ON p.ping_id = s.ping_id "
                        f"WHERE d.erased_at IS NULL AND (d.email_hash IN ({marks}) OR d.phone_hash IN ({marks}))",
                        *hashes, *hashes)
        suppressed = list(dict.fromkeys([*hashes, *(bytes(h) for row in found for h in row[1:3] if h is not None)]))
        yield from _suppress(suppressed, at)
        for lead_id, _, _, ping_id, fields in found:
            yield q(f"UPDATE lead_data SET {_ERASE} WHERE lead_id = ?", at, lead_id)
            if ping_id is not None:
                yield q("UPDATE pings SET fields = ? WHERE ping_id = ?", codec.without_hashes(fields), ping_id)
        yield from _log(request_id, DELETION, at, at, len(found))
        return Erasure(len(found), suppressed)
    return steps


def erase_before(request_id: str, cutoff: float, at: float) -> Transaction[int]:
    """Retention: erase up to ``CHUNK`` leads posted before ``cutoff``; logged when any were."""
    def steps() -> Steps[int]:
        erased = yield q(f"UPDATE lead_data SET {_ERASE} WHERE lead_id IN (SELECT lead_id FROM lead_data "
                         f"WHERE erased_at IS NULL AND created_at < ? LIMIT {CHUNK}) RETURNING lead_id", at, cutoff)
        if erased:
            yield from _log(request_id, RETENTION, at, at, len(erased))
        return len(erased)
    return steps


def suppressions_since(seq: int, limit: int) -> Transaction[list[Row]]:
    """(seq, hash) of the opt-out list's entries after ``seq``, in order."""
    def steps() -> Steps[list[Row]]:
        return (yield q("SELECT seq, hash FROM suppressions WHERE seq > ? ORDER BY seq LIMIT ?", seq, limit))
    return steps


def requests(since: float, until: float, limit: int,
             after: tuple[float, str] | None = None) -> Transaction[list[PrivacyRequest]]:
    """The log oldest first, received in [since, until), strictly after ``after``
    ((received_at, request_id): the last of the page before)."""
    def steps() -> Steps[list[PrivacyRequest]]:
        at, request_id = after if after is not None else (since, "")
        rows = yield q("SELECT request_id, kind, received_at, completed_at, leads_erased FROM privacy_requests "
                       "WHERE received_at >= ? AND received_at < ? AND (received_at > ? OR "
                       "(received_at = ? AND request_id > ?)) ORDER BY received_at, request_id LIMIT ?",
                       since, until, at, at, request_id, limit)
        return [PrivacyRequest(*row) for row in rows]
    return steps


def rewrap(old: OperatorKey, new: OperatorKey, after: str) -> Transaction[tuple[int, str | None]]:
    """Re-wrap the books' keys (first chunk) and the next ``CHUNK`` leads' keys after lead_id
    ``after`` from ``old`` to ``new``: (how many, the last lead_id, None when done). A key
    already wrapped by ``new`` is left as it is, so a rotation that stopped midway resumes."""
    def steps() -> Steps[tuple[int, str | None]]:
        done = 0
        if not after:
            for name, wrapped in (yield q("SELECT name, key_wrapped FROM privacy_keys")):
                if not new.wrapped_by_me(wrapped):
                    yield q("UPDATE privacy_keys SET key_wrapped = ? WHERE name = ?",
                            rewrap_identifier_key(wrapped, old, new), name)
                    done += 1
        rows = yield q("SELECT lead_id, key_wrapped FROM lead_data WHERE key_wrapped IS NOT NULL AND lead_id > ? "
                       "ORDER BY lead_id LIMIT ?", after, CHUNK)
        for lead_id, wrapped in rows:
            if not new.wrapped_by_me(wrapped):
                yield q("UPDATE lead_data SET key_wrapped = ? WHERE lead_id = ?",
                        old.rewrap_lead_key(lead_id, wrapped, new), lead_id)
                done += 1
        return done, rows[-1][0] if len(rows) == CHUNK else None
    return steps


def seal_plain(vault: Vault) -> Transaction[int]:
    """Seal up to ``CHUNK`` lead data rows written in clear by a pingpost before encryption."""
    def steps() -> Steps[int]:
        rows = yield q("SELECT lead_id, data FROM lead_data WHERE key_wrapped IS NULL AND data IS NOT NULL "
                       f"AND erased_at IS NULL LIMIT {CHUNK}")
        for lead_id, data in rows:
            wrapped, sealed, email_hash, phone_hash = vault.seal(lead_id, plain_lead(data))
            yield q("UPDATE lead_data SET key_wrapped = ?, data = ?, email_hash = ?, phone_hash = ? WHERE lead_id = ?",
                    wrapped, sealed, email_hash, phone_hash, lead_id)
        return len(rows)
    return steps
