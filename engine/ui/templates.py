"""The dashboard's templates and static files, read from the package once at import.

Jinja2 renders the pages: autoescaping on (every value a tenant sent, such as a source id,
reaches the page as text, never as markup) and undefined names are errors, not blanks.
The static files are few and small, so they are held in memory and served from there with
a long cache life; their URLs carry a digest of their content, so a new version is never
hidden by an old cached one.
"""

from __future__ import annotations

import hashlib
import mimetypes
from importlib import resources
from typing import Any, NamedTuple

import jinja2
from aiohttp import web

from .security import secure_headers


class StaticFile(NamedTuple):
    body: bytes
    content_type: str
    digest: str


def _static_files() -> dict[str, StaticFile]:
    folder = resources.files(__package__).joinpath("static")
    files = {}
    for item in folder.iterdir():
        if item.is_file():
            body = item.read_bytes()
            content_type = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or content_type.endswith(("javascript", "+xml")):
                content_type += "; charset=utf-8"
            files[item.name] = StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:12])
    return files


STATIC = _static_files()


def static_url(name: str) -> str:
    return f"/ui/static/{name}?v={STATIC[name].digest}"


_environment = jinja2.Environment(loader=jinja2.PackageLoader(__package__, "templates"),
                                  autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True)
_environment.globals["static"] = static_url


def render(template: str, status: int = 200, **values: Any) -> web.Response:
    """A page, with the security headers every page carries."""
    values.setdefault("visitor", None)
    values.setdefault("here", "")
    body = _environment.get_template(template).render(**values)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    secure_headers(response, page=True)
    return response


def static(name: str) -> web.Response:
    found = STATIC.get(name)
    if found is None:
        raise web.HTTPNotFound()
    response = web.Response(body=found.body, headers={"Content-Type": found.content_type})
    secure_headers(response, page=False)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
