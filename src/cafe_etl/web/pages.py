"""The dashboard's HTML pages: a frame with filters; the charts fill themselves from the API.

A page resolves its filters once, so the form shows the period actually drawn, and
says plainly what is wrong with a bad filter (400) or a missing warehouse (503).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cafe_etl import __version__
from cafe_etl.errors import CafeEtlError, WarehouseMissing
from cafe_etl.web import filters as web_filters

router = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)

PAGES = (("", "Overview"), ("what", "What sells"), ("where", "Where"), ("when", "When"),
         ("payments", "Payments"), ("customers", "Customers"), ("trends", "Trends"), ("operations", "Operations"))
GRAINS = (("day", "Day"), ("week", "Week"), ("month", "Month"))


def _page(request: Request, page: str, slug: str, title: str, *, branch_filter: bool = True,
          operations_period: bool = False, grain_filter: bool = False) -> HTMLResponse:
    params = request.query_params
    kept = [(k, v) for k, v in params.multi_items() if k in ("from", "to", "branch", "grain") and v]
    context = {"request": request, "page": page, "slug": slug, "title": title, "pages": PAGES,
               "query": f"?{urlencode(kept)}" if kept else "", "filters": True, "branch_filter": branch_filter,
               "grain_filter": grain_filter, "grains": GRAINS,
               "grain": params.get("grain") if params.get("grain") in dict(GRAINS) else "day",
               "period": {"from": params.get("from"), "to": params.get("to")},
               "branch": ", ".join(b for b in params.getlist("branch") if b.strip()) or None,
               "chosen": {b.strip().lower() for b in params.getlist("branch") if b.strip()},
               "meta": {"branches": [], "first_day": None, "last_day": None}, "problem": None,
               "version": __version__, "warehouse": request.app.state.gateway.warehouse.describe()}
    status = 200
    try:
        wanted = web_filters.parse(params.get("from"), params.get("to"), params.getlist("branch"))

        def resolve(reader):
            meta = web_filters.choices(reader)
            if operations_period:
                return meta, *web_filters.operations_period(reader, wanted)
            scope = web_filters.scope(reader, wanted)
            return meta, scope.first, scope.last

        meta, first, last = request.app.state.gateway.read(resolve, key=("page", operations_period,
                                                                           wanted.cache_key())).value
        context["meta"] = meta
        context["period"] = {"from": first.isoformat() if first else None, "to": last.isoformat() if last else None}
    except WarehouseMissing as exc:
        status, context["problem"] = 503, f"{exc}. The pages fill in once data has been loaded."
    except CafeEtlError as exc:
        # As the API answers: the error's own status and sentence, or a message that
        # hides what the warehouse said (it may quote a query or a host).
        status = exc.http_status or 503
        context["problem"] = str(exc) if exc.http_status else "the warehouse could not answer: see the service log"
    return request.app.state.templates.TemplateResponse(request, f"{page}.html", context, status_code=status)


@router.get("/")
def overview(request: Request):
    return _page(request, "overview", "", "Overview", grain_filter=True)


@router.get("/what")
def what(request: Request):
    return _page(request, "what", "what", "What sells")


@router.get("/where")
def where(request: Request):
    return _page(request, "where", "where", "Where", grain_filter=True)


@router.get("/when")
def when(request: Request):
    return _page(request, "when", "when", "When")


@router.get("/payments")
def payments(request: Request):
    return _page(request, "payments", "payments", "Payments", grain_filter=True)


@router.get("/customers")
def customers(request: Request):
    return _page(request, "customers", "customers", "Customers")


@router.get("/trends")
def trends(request: Request):
    return _page(request, "trends", "trends", "Trends")


@router.get("/operations")
def operations_page(request: Request):
    return _page(request, "operations", "operations", "Operations", branch_filter=False, operations_period=True)
