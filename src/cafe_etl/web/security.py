"""Access to the service: open on the loopback interface, a token anywhere else.

The token is accepted as ``Authorization: Bearer <token>``, or once as ``?token=``
on a page, which then sets an HTTP-only cookie so the browser's own API calls
carry it. Health probes and static files (the app's own scripts) need no token.
"""

from __future__ import annotations

import ipaddress
import secrets
from urllib.parse import urlencode

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cafe_etl.errors import ConfigError
from cafe_etl.web.responses import error

COOKIE = "cafe_etl_token"
OPEN_PATHS = ("/healthz", "/readyz", "/static/")


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
                      "--auth-token or CAFE_ETL_AUTH_TOKEN, or pass --no-auth if that is really intended")


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
        if self._valid(request.cookies.get(COOKIE)):
            return await call_next(request)
        query_token = request.query_params.get("token")
        if self._valid(query_token) and request.method == "GET":
            # Drop the token from the address bar (and from history) once it is in a cookie.
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(f"{path}?{rest}" if rest else path, 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            return response
        return error(401, "an access token is needed: send Authorization: Bearer <token>, or open the dashboard "
                          "once with ?token=<token>", headers={"WWW-Authenticate": "Bearer"})
