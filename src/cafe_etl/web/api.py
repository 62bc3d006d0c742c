"""The JSON API: one endpoint behind every chart and table of the dashboard.

Business endpoints take the same filters (``from``, ``to``, ``branch``) and answer
``{"period": {...}, "branch": ..., "data": ...}``; money is a number with two
decimals. Errors are ``{"error": "..."}`` with 400 (a bad filter), 503 (warehouse
missing or busy) or 504 (a query past its time limit): never a trace or SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from cafe_etl import __version__
from cafe_etl.analytics import business, customer_render, customers, jsonout, report, together, trends
from cafe_etl.analytics.report import Scope
from cafe_etl.web import filters as web_filters
from cafe_etl.web import table_csv
from cafe_etl.web.gateway import Gateway
from cafe_etl.web.responses import MoneyJSON

router = APIRouter(prefix="/api", default_response_class=MoneyJSON)

From = Annotated[str | None, Query(alias="from", description="First day, YYYY-MM-DD [the latest 28 days with sales]",
                                   examples=["2024-03-01"])]
To = Annotated[str | None, Query(description="Last day, YYYY-MM-DD [the last day with sales]")]
Branch = Annotated[list[str] | None, Query(description="A branch by name, any case; repeat it for several "
                                                      "(?branch=Leeds&branch=York) [all branches]")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A filter or parameter is not valid: the message says which and why"},
    503: {"description": "The warehouse is missing, unreachable or busy loading"},
    504: {"description": "A query ran past the time limit"},
}


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _answer(request: Request, key: tuple | None, compute: Callable) -> Response:
    """The answer as JSON, or with ``?format=csv`` its data as CSV: every chart's figures,
    for a spreadsheet."""
    _format(request)
    answer = _gateway(request).read(compute, key=key)
    return _respond(request, answer.value, answer.stale)


def _format(request: Request) -> str:
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise web_filters.BadFilter(f"format must be json or csv, not {fmt[:20]!r}")
    return fmt


def _respond(request: Request, value: dict, stale: bool) -> Response:
    headers = {"X-Cafe-Etl-Stale": "1"} if stale else {}
    if _format(request) == "json":
        return MoneyJSON(value, headers=headers)
    body = json.loads(jsonout.dumps(value, indent=None), parse_float=Decimal)  # numbers as written
    period = body.get("period") or body.get("week") or {}
    name = request.url.path.removeprefix("/api/").replace("/", "-")
    suffix = f"-{period['from']}-to-{period['to']}" if period.get("from") else ""
    headers["Content-Disposition"] = f'attachment; filename="{name}{suffix}.csv"'
    return Response(table_csv.to_csv(body.get("data")), media_type="text/csv; charset=utf-8", headers=headers)


def _business(request: Request, first: str | None, to: str | None, branch: list[str] | None,
              chart: Callable[..., Any], **params: Any) -> Response:
    """Filters resolved to a scope, then ``chart(reader, scope, **params)`` as the data:
    JSON, or with ``?format=csv`` the data as CSV (every chart's figures, for a spreadsheet)."""
    wanted = web_filters.parse(first, to, branch)

    def compute(reader):
        scope: Scope = web_filters.scope(reader, wanted)
        data = chart(reader, scope, **params) if not scope.empty else None
        return {"period": {"from": scope.first.isoformat() if scope.first else None,
                           "to": scope.last.isoformat() if scope.last else None},
                "branch": wanted.branch, "data": data}

    return _answer(request, (chart.__name__, wanted.cache_key(), tuple(sorted(params.items()))), compute)


Limit = Annotated[int, Query(ge=1, le=100, description="How many to list")]
Grain = Annotated[str, Query(pattern="^(day|week|month)$",
                             description="Days, or weeks (from Monday) or months added up; the first and last "
                                         "may be cut by the period")]
Top = Annotated[int, Query(ge=1, le=50, description="How many branches to draw")]


def _get(path: str, summary: str):
    return router.get(path, summary=summary, tags=[path.split("/")[1]], responses=_ERRORS)


@_get("/overview/figures", "Headline figures against the previous period")
def overview_figures(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Revenue, transactions, items, average basket value and size, each with the value of the
    previous period of the same length and the change in percent."""
    return _business(request, first, to, branch, business.overview)


@_get("/overview/daily", "Revenue per day (week, month) with its 7-day average")
def overview_daily(request: Request, first: From = None, to: To = None, branch: Branch = None,
                   grain: Grain = "day") -> MoneyJSON:
    """Every day of the period (zero where nothing sold) with the trailing 7-day average; or
    revenue and transactions per week or month."""
    return _business(request, first, to, branch, business.revenue_over_time, grain=grain)


@_get("/what/products", "Top and bottom products by quantity and by revenue")
def what_products(request: Request, first: From = None, to: To = None, branch: Branch = None,
                  limit: Limit = 10) -> MoneyJSON:
    """Products (size, name and flavour, as the till writes them) ranked both ways."""
    return _business(request, first, to, branch, business.product_ranking, limit=limit)


@_get("/what/sizes", "Items and revenue by size")
def what_sizes(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Items sold and revenue per cup size."""
    return _business(request, first, to, branch, business.sizes)


@_get("/what/flavours", "Items and revenue by flavour")
def what_flavours(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Flavoured items sold and revenue per flavour."""
    return _business(request, first, to, branch, business.flavours)


@_get("/what/mix", "Product mix per branch, by category")
def what_mix(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Items per product category for the branches selling most (categories file: see the README)."""
    return _business(request, first, to, branch, business.product_mix)


@_get("/what/categories", "Items and revenue by product category")
def what_categories(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Per category (coffee, tea, ...): items sold, revenue and share of revenue, as `cafe-etl report`."""
    return _business(request, first, to, branch, report.categories)


@_get("/what/case-variants", "Product names that differ only by case")
def what_case_variants(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Spellings such as "Hot Chocolate" and "Hot chocolate" sold in the period: kept as distinct
    products (their prices differ), each with its items and average price per size."""
    return _business(request, first, to, branch, business.case_variants)


@_get("/where/ranking", "Branches ranked by revenue")
def where_ranking(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Every branch with revenue, transactions, items and average basket, ranked by revenue."""
    return _business(request, first, to, branch, business.branch_ranking)


@_get("/where/trend", "Daily revenue of the leading branches")
def where_trend(request: Request, first: From = None, to: To = None, branch: Branch = None,
                top: Top = 10, grain: Grain = "day") -> MoneyJSON:
    """Revenue per day (week, month) for the period's leading branches by revenue (or the one chosen)."""
    return _business(request, first, to, branch, business.branch_trend, top=top, grain=grain)


@_get("/payments/split", "Cash and card: transactions and revenue")
def payments_split(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Per payment method: transactions, revenue, and each one's share of both."""
    return _business(request, first, to, branch, business.payment_split)


@_get("/payments/daily", "Cash and card over time")
def payments_daily(request: Request, first: From = None, to: To = None, branch: Branch = None,
                   grain: Grain = "day") -> MoneyJSON:
    """Per payment method, transactions and revenue for every day (week, month) of the period."""
    return _business(request, first, to, branch, business.payments_over_time, grain=grain)


@_get("/payments/branches", "Card share per branch")
def payments_branches(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Per branch: transactions by method and the share paid by card."""
    return _business(request, first, to, branch, business.payments_by_branch)


@_get("/where/best-sellers", "Each branch's best-selling item")
def where_best_sellers(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Per branch, the item sold most often (ties: more revenue, then name)."""
    return _business(request, first, to, branch, business.best_sellers)


@_get("/when/heatmap", "Transactions by weekday and hour")
def when_heatmap(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Transactions and revenue for each ISO weekday (1 = Monday) and hour of day."""
    return _business(request, first, to, branch, business.heatmap)


@_get("/when/peak-hours", "Each branch's busiest hour")
def when_peak_hours(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Per branch, the hour with most transactions and its share of the branch's day."""
    return _business(request, first, to, branch, business.peak_hours)


@_get("/when/hours", "Revenue and transactions by hour of day")
def when_hours(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Transactions and revenue per hour of the day, over the period."""
    return _business(request, first, to, branch, business.revenue_by_hour)


@_get("/customers/counts", "Distinct, new, returning and repeat customers")
def customers_counts(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """DESIGN §8's counts by keyed customer hash: distinct customers with a sale in the period;
    new (first sale ever inside it), returning (first sale before it), repeat (sales on 2+ days)."""
    return _business(request, first, to, branch, report.customers)


@_get("/customers/rfm", "RFM segments and sales per customer")
def customers_rfm(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """The ten RFM segments of DESIGN §11 (customers, sales, revenue, and what each means) and how
    many customers made 1, 2, ... 9 and 10 or more sales in the period."""
    return _business(request, first, to, branch, customers.rfm)


@_get("/customers/cohorts", "Weekly cohorts and their retention")
def customers_cohorts(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Customers by the week of their first sale ever (Mondays in the period), and the share with a
    sale in each later week that has ended. Chain-wide: empty when a branch is chosen."""
    return _business(request, first, to, branch, customers.cohorts)


@_get("/customers/weekly", "New and returning customers per week")
def customers_weekly(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Each week's distinct customers (Monday to Sunday, cut to the period): new to the chain that
    week, or returning. The weeks' new customers add up to the period's."""
    return _business(request, first, to, branch, customers.weekly)


@_get("/customers/repeat", "Repeat rate per branch")
def customers_repeat(request: Request, first: From = None, to: To = None, branch: Branch = None) -> MoneyJSON:
    """Per branch: customers with a sale there in the period, and the share who bought there on two
    or more days (DESIGN §11's repeat rate)."""
    return _business(request, first, to, branch, customers.repeat_by_branch)


SegmentName = Annotated[str, Query(description="A segment's name, e.g. At Risk", max_length=40)]


@router.get("/customers/list", summary="A segment's target list (CSV)", tags=["customers"], responses=_ERRORS,
            response_class=Response)
def customers_list(request: Request, segment: SegmentName, first: From = None, to: To = None,
                   branch: Branch = None) -> Response:
    """The customer keys of one segment with their scores, recency, sales, revenue and first and
    last sale in the period, as CSV: keys only, for a CRM that holds the same secret."""
    wanted = web_filters.parse(first, to, branch)
    chosen = customers.segment_named(segment)

    def compute(reader):
        scope = web_filters.scope(reader, wanted)
        return scope, customers.target_list(reader, report.Filters(scope.first, scope.last, wanted.chosen),
                                            chosen)[1]

    scope, rows = _gateway(request).read(compute).value
    name = "-".join(chosen.name.lower().replace("'", "").split())
    period = f"-{scope.first}-to-{scope.last}" if scope.first else ""
    return Response(customer_render.target_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}{period}.csv"'})


# What sells together, and what is changing -------------------------------------------

MinBaskets = Annotated[int, Query(ge=1, le=1_000_000, description="Least sales holding both products of a pair")]
PairLimit = Annotated[int, Query(ge=1, le=500, description="How many pairs to list")]
ProductPart = Annotated[str | None, Query(max_length=200)]


def _all_pairs(request: Request, wanted: web_filters.PeriodFilters, min_baskets: int):
    """Every pair of the scope (DESIGN §11), computed once per scope and shared by the
    pairs and goes-well-with endpoints."""

    def compute(reader):
        scope = web_filters.scope(reader, wanted)
        found = together.pairs(reader, scope, min_baskets) if not scope.empty else {"baskets": 0, "pairs": []}
        return {"period": {"from": scope.first and scope.first.isoformat(),
                           "to": scope.last and scope.last.isoformat()}, "branch": wanted.branch, **found}

    return _gateway(request).read(compute, key=("together/pairs", wanted.cache_key(), min_baskets))


@_get("/together/pairs", "Products bought together: support, confidence, lift, q-value")
def together_pairs(request: Request, first: From = None, to: To = None, branch: Branch = None,
                   min_baskets: MinBaskets = together.DEFAULT_MIN_BASKETS, limit: PairLimit = 50) -> MoneyJSON:
    """The pairs of `cafe-etl together` for the same filters, strongest lift first: the first
    `limit` of them, with `listed` saying how many there are in all."""
    answer = _all_pairs(request, web_filters.parse(first, to, branch), min_baskets)
    body = answer.value
    data = {"baskets": body["baskets"], "listed": len(body["pairs"]), "pairs": body["pairs"][:limit]}
    return _respond(request, {"period": body["period"], "branch": body["branch"], "data": data}, answer.stale)


@_get("/together/with", "What goes well with one product")
def together_with(request: Request, name: Annotated[str, Query(max_length=200, description="Product name")],
                  size: ProductPart = None, flavour: ProductPart = None, first: From = None, to: To = None,
                  branch: Branch = None, min_baskets: MinBaskets = together.DEFAULT_MIN_BASKETS,
                  limit: PairLimit = 10) -> MoneyJSON:
    """For the product (size, name, flavour exactly as the till writes them), every product
    bought with it in at least `min_baskets` sales, by lift: the share of its sales that
    hold the other (`confidence`), lift and q-value, as `cafe-etl together` lists the pair."""
    answer = _all_pairs(request, web_filters.parse(first, to, branch), min_baskets)
    body = answer.value
    chosen = {"size": size or None, "name": name, "flavour": flavour or None}
    partners = []
    for pair in body["pairs"]:
        if chosen in (pair["a"], pair["b"]):
            mine_is_a = pair["a"] == chosen
            partners.append({"product": pair["b"] if mine_is_a else pair["a"], "baskets": pair["baskets"],
                             "confidence": pair["confidence_ab"] if mine_is_a else pair["confidence_ba"],
                             "lift": pair["lift"], "q_value": pair["q_value"]})
    return _respond(request, {"period": body["period"], "branch": body["branch"], "product": chosen,
                              "data": partners[:limit]}, answer.stale)


WeekEnd = Annotated[str | None, Query(alias="to",
                                      description="The week's last day, YYYY-MM-DD [the last day with sales]")]
MinChange = Annotated[float, Query(ge=0, le=10_000, description="A mover's least change, in percent")]


def _week(request: Request, to: str | None, branch: list[str] | None, part: Callable, key: tuple) -> Response:
    """``part(reader, week)`` for the week ending ``to`` (DESIGN §11's trends)."""
    wanted = web_filters.parse(None, to, branch)

    def compute(reader):
        week = trends.resolve(reader, wanted.last, wanted.chosen)
        return {"week": trends.describe(week), "branch": wanted.branch,
                "data": part(reader, week) if week else None}

    return _answer(request, (*key, wanted.cache_key()), compute)


@_get("/trends/movers", "Branches and products whose last week differs from the four before")
def trends_movers(request: Request, to: WeekEnd = None, branch: Branch = None,
                  min_change: MinChange = trends.DEFAULT_MIN_CHANGE) -> MoneyJSON:
    """The movers of `cafe-etl trends` for the week ending `to`, each with its count per day over
    the baseline weeks and the week (`dates` holds the days), for a sparkline."""

    def part(reader, week):
        found = trends.movers(reader, week, min_change)
        lines = trends.daily(reader, week, found)
        return {"dates": lines["dates"],
                "movers": [{**m, "daily": line} for m, line in zip(found, lines["series"], strict=True)]}

    return _week(request, to, branch, part, ("trends/movers", min_change))


@_get("/trends/anomalies", "Branch-days outside their expected range")
def trends_anomalies(request: Request, to: WeekEnd = None, branch: Branch = None) -> MoneyJSON:
    """The days out of the ordinary of `cafe-etl trends` for the week ending `to`: revenue, the
    expected revenue for that branch and weekday and its range, and the kind (missing, short, low,
    high)."""
    return _week(request, to, branch, trends.anomalies, ("trends/anomalies",))


@router.get("/meta", summary="Branches and the period the warehouse holds", tags=["meta"], responses=_ERRORS)
def meta(request: Request) -> MoneyJSON:
    """What the filters can choose from: every branch, and the first and last day with sales."""

    def compute(reader):
        return web_filters.choices(reader) | {"version": __version__}

    return _answer(request, ("meta",), compute)
