"""One stage (a ping or a post) of a buyer's own API, compiled: its request and its answer.

Compiling is also checking: every problem is collected with its path inside the stage, so
the config reports them all (``config`` puts the campaign's path in front) and what runs is
exactly what was checked.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import urlencode

from .. import http1
from .answer import AnswerFormat
from .request import CONTENT_TYPES, Kind, RequestFormat
from .spec import Auth, Stage
from .transforms import Problems

#: The keys each auth type takes.
AUTH_KEYS = {"basic": ("user", "password"), "bearer": ("token",), "header": ("name", "value"), "query": ("name", "value")}


class FormatError(Exception):
    """A stage that cannot be compiled; ``problems`` holds ``(path in the stage, reason)`` pairs."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


@dataclass(frozen=True, slots=True)
class CompiledStage:
    request: RequestFormat
    answer: AnswerFormat


def _auth(auth: Auth, headers: dict[str, str], problems: Problems) -> str | None:
    """The auth's header (into ``headers``) or its query string (returned). No reason names a
    secret's value: they come from the environment and must not reach a log."""
    wanted = AUTH_KEYS[auth.type]
    for key in ("user", "password", "token", "name", "value"):
        given = getattr(auth, key) is not None
        if key in wanted and not given:
            problems.append((f"auth.{key}", f"auth type {auth.type} needs {' and '.join(wanted)}"))
        elif key not in wanted and given:
            problems.append((f"auth.{key}", f"does not go with auth type {auth.type} (it takes {' and '.join(wanted)})"))
    if any(getattr(auth, key) is None for key in wanted):
        return None
    name, value = auth.name or "", auth.value or ""
    if auth.type == "query":
        if not name:
            problems.append(("auth.name", "the query parameter needs a name"))
        return urlencode([(name, value)])
    if auth.type == "basic":
        name, value = "Authorization", "Basic " + base64.b64encode(f"{auth.user}:{auth.password}".encode()).decode()
    elif auth.type == "bearer":
        name, value = "Authorization", f"Bearer {auth.token}"
    if any(existing.lower() == name.lower() for existing in headers):
        problems.append(("auth", f"the {name} header is also in headers: give it in one place"))
    problem = http1.header_problem(name, value)
    if problem is not None:
        bad_name = not http1.TOKEN.match(name) or name.lower() in http1.OWN_HEADERS
        problems.append(("auth.name" if bad_name else f"auth.{wanted[-1]}", problem))
    headers[name] = value
    return None


def compile_stage(stage: Stage, kind: Kind, url: str, campaign_headers: dict[str, str]) -> CompiledStage:
    """The stage compiled, or ``FormatError`` with every problem found."""
    problems: Problems = []
    if stage.method == "GET" and stage.encoding != "query":
        problems.append(("encoding", "a GET carries no body: its fields go in the query string (encoding = \"query\")"))
    headers = {**campaign_headers, **stage.headers}
    if stage.encoding != "query":
        headers["Content-Type"] = stage.content_type or CONTENT_TYPES[stage.encoding]
    elif stage.content_type is not None:
        problems.append(("content_type", "a query-string request has no body to give a type"))
    query = None if stage.auth is None else _auth(stage.auth, headers, problems)
    if query is not None:
        url = f"{url}{'&' if '?' in url else '?'}{query}"
    if stage.content_type is not None and not http1.HEADER_VALUE.match(stage.content_type):
        problems.append(("content_type", "a media type is visible ASCII, such as text/xml; charset=utf-8"))
    target = http1.Target.of(url, headers, stage.method, resend=kind == "ping")
    request = RequestFormat(stage, kind, target, problems)
    answer = AnswerFormat(stage.answer, kind == "ping", problems)
    if problems:
        raise FormatError(problems)
    return CompiledStage(request, answer)


def stage_problems(stage: Stage, kind: Kind, url: str, campaign_headers: dict[str, str]) -> Problems:
    """What ``compile_stage`` would refuse in this stage (empty: it compiles)."""
    try:
        compile_stage(stage, kind, url, campaign_headers)
    except FormatError as exc:
        return exc.problems
    return []
