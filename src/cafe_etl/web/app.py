"""``cafe-etl serve``: the dashboard, its JSON API, ``/metrics`` and health probes in one ASGI app.

Every read goes through one ``Gateway``; with ``--watch`` the ingestion loop runs in
a thread of the same process, so an embedded DuckDB warehouse has one owner and the
dashboard waits for a batch instead of failing on the file lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cafe_etl import __version__
from cafe_etl.config import Settings
from cafe_etl.errors import CafeEtlError
from cafe_etl.warehouse import open_warehouse
from cafe_etl.web import api, api_ops, metrics, pages
from cafe_etl.web.gateway import Gateway, Limits
from cafe_etl.web.responses import MoneyJSON, error
from cafe_etl.web.security import HostCheck, SecurityHeaders, TokenMiddleware

log = logging.getLogger("cafe_etl.web")


@dataclass(frozen=True)
class ServeOptions:
    token: str | None = None  # every request must carry it, when set
    allowed_hosts: frozenset[str] | None = None  # the Host names answered to; None: any
    watch: Sequence[str] = ()  # sources to ingest from in this process
    watch_interval: float = 30.0
    limits: Limits = field(default_factory=Limits)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {problem.get('msg', 'not valid')}" if where else problem.get("msg", "not valid"))
    return "; ".join(parts) or "the request is not valid"


def create_app(settings: Settings, options: ServeOptions | None = None) -> FastAPI:
    options = options or ServeOptions()
    gateway = Gateway(open_warehouse(settings.warehouse), options.limits)
    watcher = None
    if options.watch:
        from cafe_etl import logs
        from cafe_etl.watch import Watcher, WatchOptions

        watcher = Watcher(options.watch, settings, WatchOptions(interval=options.watch_interval),
                          logs.setup("text"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = None
        if watcher:
            thread = threading.Thread(target=watcher.run, name="cafe-etl-watch", daemon=True)
            thread.start()
        yield
        if watcher and thread:
            watcher.stop()  # finishes the batch in hand
            thread.join(timeout=600)

    app = FastAPI(title="cafe-etl", version=__version__, lifespan=lifespan,
                  description="The café chain's sales and pipeline state: every chart of the dashboard, as JSON. "
                              "Business endpoints take `from`, `to` (YYYY-MM-DD) and `branch`; money is in "
                              "pounds with two decimals.")
    started = time.time()
    app.state.gateway = gateway
    app.state.started_at = started
    app.state.started_at_iso = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    app.state.watch_status = (lambda: watcher.status()) if watcher else (lambda: None)
    app.state.watcher = watcher
    app.state.templates = Jinja2Templates(directory=str(resources.files("cafe_etl.web") / "templates"))
    app.state.metrics = metrics.registry(gateway, started, app.state.watch_status)

    app.mount("/static", StaticFiles(directory=str(resources.files("cafe_etl.web") / "static")), name="static")
    app.include_router(api.router)
    app.include_router(api_ops.router)
    app.include_router(pages.router)
    if options.token:
        app.add_middleware(TokenMiddleware, token=options.token)
    app.add_middleware(SecurityHeaders)
    if options.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=options.allowed_hosts)  # outermost: checked first

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> MoneyJSON:
        return MoneyJSON({"status": "ok", "version": __version__})

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> MoneyJSON:
        # Open without a token: it says ready or not, and nothing about the warehouse.
        try:
            gateway.ping()
        except CafeEtlError as exc:
            log.warning("not ready: %s", exc)
            return MoneyJSON({"status": "not ready"}, status_code=503)
        return MoneyJSON({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Errors reach the client as one sentence in JSON: never a trace, never SQL."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        return error(400, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail) if exc.status_code != 500 else "internal error")

    @app.exception_handler(CafeEtlError)
    async def cafe_error(_request: Request, exc: CafeEtlError):
        if exc.http_status is not None:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return error(exc.http_status, str(exc), headers=headers)
        # Anything else the warehouse said may quote a query or a host: logged, not shown.
        log.warning("request %s failed: %s", _request.url.path, exc)
        return error(503, "the warehouse could not answer: the service log has the details")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error serving %s", request.url.path)
        return error(500, "internal error: the service log has the details")
