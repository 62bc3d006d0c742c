"""Access to the service: who may call it, from which names, and what pages may do.

* **A token** is needed anywhere but on the loopback interface. It is accepted as
  ``Authorization: Bearer <token>``, or once as ``?token=`` on a page: the page then
  sets an HTTP-only cookie holding a *session*, an expiry signed with the token (never
  the token itself), and sends the browser back to the same page of this site.
  Health probes and static files (the app's own scripts) need no token.
* **Host names** are checked (``HostCheck``): a loopback instance answers only to
  loopback names, so a web page cannot reach it through DNS rebinding; an instance
  bound elsewhere answers to the names it was given, if any.
* **Every response** carries security headers (``SecurityHeaders``): a
  Content-Security-Policy that lets pages run only this site's own scripts (the
  vendored charts included), and no framing, sniffing or referrers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from urllib.parse import urlencode

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cafe_etl.errors import ConfigError
from cafe_etl.web.responses import error

COOKIE = "cafe_etl_session"
SESSION_SECONDS = 12 * 3600
OPEN_PATHS = ("/healthz", "/readyz", "/static/")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def required_token(host: str, token: str | None, no_auth: bool) -> str | None:
    """The token every request must carry, or None when the service may be open."""
    if token is not None and not token.strip():
        raise ConfigError("the access token is empty: give a long random one (e.g. `openssl rand -hex 32`)")
    if token and len(token) < 16:
        raise ConfigError("the access token is too short: use at least 16 characters")
    if token:
        return token
    if is_loopback(host) or no_auth:
        return None
    raise ConfigError(f"serving on {host} opens the dashboard to the network: set an access token with "
                      "--auth-token-file or CAFE_ETL_AUTH_TOKEN, or pass --no-auth if that is really intended")


def allowed_hosts(host: str, names: tuple[str, ...]) -> frozenset[str] | None:
    """The Host names a service bound to ``host`` answers to: loopback names on the
    loopback interface; elsewhere the ``names`` given (and the address itself), or
    any (None) when none were given and a token guards the service."""
    if names:
        return frozenset(n.lower() for n in (*names, host))
    if is_loopback(host):
        return frozenset((*LOOPBACK_NAMES, host.lower()))
    return None


def _host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` → ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck(BaseHTTPMiddleware):
    def __init__(self, app, allowed: frozenset[str]) -> None:
        super().__init__(app)
        self.allowed = allowed

    async def dispatch(self, request: Request, call_next) -> Response:
        if _host_name(request.headers.get("host", "")) not in self.allowed:
            return error(400, "this service does not answer to that host name")
        return await call_next(request)


# Pages run only this site's scripts and connect only to it. Styles may be inline:
# the charts set them on the elements they draw. /docs is FastAPI's page, built from
# its own assets: it keeps the other headers.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'")
_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
_OWN_POLICY = ("/docs", "/redoc")


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers.update(_HEADERS)
        if not request.url.path.startswith(_OWN_POLICY):
            response.headers["Content-Security-Policy"] = _CSP
        return response


def _signature(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"cafe-etl session {expires}".encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_SECONDS)
    return f"{expires}.{_signature(token, expires)}"


def valid_session(token: str, value: str | None, now: float | None = None) -> bool:
    expires, _, signature = (value or "").partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return secrets.compare_digest(signature.encode(), _signature(token, int(expires)).encode())


def same_site_path(path: str) -> str:
    """A path on this site: ``//evil.example/x`` (or ``/\\evil.example``) is not one."""
    return "/" + path.lstrip("/\\")


class TokenMiddleware(BaseHTTPMiddleware):
    def __init__(self, app, token: str) -> None:
        super().__init__(app)
        self.token = token

    def _valid(self, given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next) -> Response:
        path = request.url.path
        if path in OPEN_PATHS or path.startswith(OPEN_PATHS[-1]):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and self._valid(header[7:].strip()):
            return await call_next(request)
        if valid_session(self.token, request.cookies.get(COOKIE)):
            return await call_next(request)
        query_token = request.query_params.get("token")
        if self._valid(query_token) and request.method == "GET":
            # Drop the token from the address bar (and from history) once a session holds it.
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            here = same_site_path(path)
            response = RedirectResponse(f"{here}?{rest}" if rest else here, 303)
            response.set_cookie(COOKIE, new_session(self.token), max_age=SESSION_SECONDS, httponly=True,
                                samesite="strict", secure=request.url.scheme == "https")
            return response
        return error(401, "an access token is needed: send Authorization: Bearer <token>, or open the dashboard "
                          "once with ?token=<token>", headers={"WWW-Authenticate": "Bearer"})
