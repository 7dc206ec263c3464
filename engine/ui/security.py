"""What every dashboard answer and form carries: security headers, cookies, CSRF checks.

* Headers: a Content-Security-Policy that allows scripts, styles and images from the
  dashboard itself only (no inline script, no inline style), no framing (``frame-ancestors
  'none'`` and ``X-Frame-Options: DENY``), ``nosniff``, no referrer beyond the origin, and
  ``no-store`` for pages, which show a tenant's numbers.
* Cookies: HttpOnly (no script reads them), SameSite=Strict (no other site's page sends
  them), Secure when the dashboard is served over HTTPS, on the dashboard's path only.
* CSRF: every form that changes state carries a token. Signed-in forms carry the
  session's own token (kept server-side with the session); the sign-in form, before any
  session exists, carries the value of a short-lived cookie of its own (a double submit:
  another site can neither read that cookie nor set it). A POST whose ``Origin`` is not
  the dashboard's own is refused before its token is even looked at.
"""

from __future__ import annotations

from aiohttp import web

from .sessions import same

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

PATH = "/ui/"
SESSION_COOKIE = "pp_session"
SIGNIN_COOKIE = "pp_signin"
#: How long a sign-in form stays good to send.
SIGNIN_FORM_S = 1800

class CsrfRefused(Exception):
    """A state-changing form without a valid token, or from another origin: 403."""


def secure_headers(response: web.StreamResponse, page: bool) -> None:
    response.headers.update(HEADERS)
    if page:
        response.headers["Cache-Control"] = "no-store"


def set_cookie(response: web.StreamResponse, https: bool, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, path=PATH, httponly=True, samesite="Strict", secure=https, max_age=max_age)


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=PATH)


def check_origin(request: web.Request) -> None:
    """A browser names the page a POST came from in ``Origin``; it must be this host.
    Without the header (an old browser, a script) the token alone decides."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").partition("://")[2] != request.host:
        raise CsrfRefused()


def check_token(sent: object, expected: str | None) -> None:
    if not isinstance(sent, str) or not expected or not same(sent, expected):
        raise CsrfRefused()

