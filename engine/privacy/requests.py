"""A consumer's privacy requests, taken by an operator: opt-outs, deletions, and the log of
every request (``GET /v1/privacy/requests``).

An opt-out puts the consumer's email and phone, as keyed hashes, on the opt-out list in the
books; this worker's view has them at once, every other worker's within about a second
(``suppression``). A deletion does the same and erases every lead of that email or phone:
its key destroyed, its sealed data and hashes dropped; the sale, the money and the traffic
stay, none of which hold personal data. The log says what was done and when, never whose:
neither the values nor their hashes leave the books, and nothing here logs them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable, NamedTuple

from msgspec import UNSET

from .. import cursor, ids, normalize, reports
from ..access import Principal, Role
from ..errors import refused
from ..ledger import Ledger, LedgerUnavailable
from ..purchases import days_and_page
from ..schema import (RULES, ConsumerRequest, DeletionAnswer, FieldError, OptOutAnswer, PrivacyRequestAnswer,
                      PrivacyRequestList)
from ..trace import rfc3339

if TYPE_CHECKING:
    from ..auction import Exchange

log = logging.getLogger("pingpost.privacy")

PARAMETERS = ("from", "to", "tz", "cursor", "limit")


def _hashes(exchange: Exchange, body: ConsumerRequest) -> list[bytes]:
    """The request's keyed hashes; 422 naming each value that does not read as an email or
    a phone, or the body when it names neither."""
    email = body.email if body.email is not UNSET else None
    phone = body.phone if body.phone is not UNSET else None
    problems = [FieldError(name, f"must be {RULES[name]}")
                for name, value, rule in (("email", email, normalize.email), ("phone", phone, normalize.phone))
                if value is not None and rule(value) is None]
    if email is None and phone is None:
        problems.append(FieldError("$", "must name the consumer's email or phone, or both"))
    if problems:
        raise refused(problems)
    identifiers = exchange.suppression.identifiers
    hashes = None if identifiers is None else identifiers.of_request(email, phone)
    if hashes is None:
        raise LedgerUnavailable("no books to keep the request in (--ledger none)")
    return hashes


def _logged(request_id: str, kind: str, erased: int) -> None:
    log.info("privacy request", extra={"event": {"event": "privacy", "request_id": request_id, "kind": kind,
                                                 "leads_erased": erased}})


async def opt_out(exchange: Exchange, principal: Principal, body: ConsumerRequest) -> OptOutAnswer:
    principal.require(Role.OPERATOR)
    hashes = _hashes(exchange, body)
    request_id = ids.token()
    await exchange.ledger.opt_out(request_id, hashes, exchange.clock())
    exchange.suppression.add(hashes)
    _logged(request_id, "opt_out", 0)
    return OptOutAnswer(request_id=request_id)


async def delete(exchange: Exchange, principal: Principal, body: ConsumerRequest) -> DeletionAnswer:
    principal.require(Role.OPERATOR)
    hashes = _hashes(exchange, body)
    request_id = ids.token()
    erasure = await exchange.ledger.delete(request_id, hashes, exchange.clock())
    exchange.suppression.add(erasure.suppressed)
    _logged(request_id, "deletion", erasure.erased)
    return DeletionAnswer(request_id=request_id, leads_erased=erasure.erased)


class RequestQuery(NamedTuple):
    since: float
    until: float
    after: cursor.Position | None
    limit: int


def parse(params: Iterable[tuple[str, str]], principal: Principal, default_tz: str) -> RequestQuery:
    """``from`` and ``to`` inclusive days in ``tz`` (no bound when left out), ``cursor`` and
    ``limit`` as for purchases; every bad parameter at once: 422."""
    principal.require(Role.OPERATOR)
    problems: list[FieldError] = []
    query = RequestQuery(*days_and_page(reports.read_params(params, PARAMETERS, "this list", problems),
                                        default_tz, problems))
    if problems:
        raise refused(problems)
    return query


async def page(ledger: Ledger, query: RequestQuery) -> PrivacyRequestList:
    found = await ledger.privacy_requests(query.since, query.until, query.limit + 1, query.after)
    shown = found[:query.limit]
    last = shown[-1] if len(found) > query.limit else None
    return PrivacyRequestList(
        requests=[PrivacyRequestAnswer(request_id=r.request_id, kind=r.kind,  # type: ignore[arg-type]
                                       received_at=rfc3339(r.received_at),
                                       completed_at=None if r.completed_at is None else rfc3339(r.completed_at),
                                       leads_erased=r.leads_erased) for r in shown],
        next_cursor=None if last is None else cursor.encode((last.received_at, last.request_id)))
