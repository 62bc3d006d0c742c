"""What sells together (DESIGN §11): every pair of products bought in the same sale.

Counted exactly from the line items (as each file loads: per-file aggregates): N sales
in scope, ``n_p`` sales holding product p (size, name, flavour; case-sensitive) at
least once, ``n_ab`` sales holding both. A café menu has at most a few hundred products, so every pair is counted; only
pairs bought together in fewer than ``min_baskets`` sales are left out. For each pair:
support, confidence both ways, lift, and the Benjamini–Hochberg adjusted one-sided
p-value that lift > 1 (Fisher's exact test: the hypergeometric upper tail).
"""

from __future__ import annotations

from cafe_etl.analytics import report
from cafe_etl.analytics.exact_tests import hypergeometric_upper_many
from cafe_etl.analytics.report import Filters, Scope
from cafe_etl.warehouse.base import Reader

DEFAULT_MIN_BASKETS = 30

def resolve(reader: Reader, filters: Filters) -> Scope:
    """As every insight: the period asked for, or the last 28 days with sales."""
    return report.recent(reader, filters)


def build(reader: Reader, filters: Filters, min_baskets: int = DEFAULT_MIN_BASKETS) -> dict:
    scope = resolve(reader, filters)
    period = {"from": scope.first.isoformat() if scope.first else None,
              "to": scope.last.isoformat() if scope.last else None}
    if scope.empty:
        return {"period": period, "baskets": 0, "pairs": []}
    return {"period": period, **pairs(reader, scope, min_baskets)}


def pairs(reader: Reader, scope: Scope, min_baskets: int = DEFAULT_MIN_BASKETS) -> dict:
    """{"baskets": N, "pairs": [...]} for the scope, sorted by lift, then baskets. The
    counts are the per-file aggregates loads keep (``agg_product_day.sales``,
    ``agg_pair_day``), added up over the scope: the same numbers as counting the line
    items, without a self-join of millions of them. For every branch, the pairs come
    from the chain's per day (``agg_pair_date``, their sum over branches) where the
    warehouse keeps them."""
    where, params = scope.where("a")
    total = int(reader.scalar(f"SELECT coalesce(sum(a.transactions), 0) FROM agg_sale_hour a WHERE {where}",
                              params) or 0)
    pairs_of = "agg_pair_date" if scope.chain_wide and reader.keeps_chain_pairs else "agg_pair_day"
    rows = reader.query(
        f"""WITH together AS (
                SELECT a.a_key, a.b_key, sum(a.sales) AS n FROM {pairs_of} a WHERE {where}
                GROUP BY a.a_key, a.b_key HAVING sum(a.sales) >= ?
            ), per_product AS (
                SELECT a.product_key, sum(a.sales) AS n FROM agg_product_day a WHERE {where}
                GROUP BY a.product_key
            )
            SELECT t.n, pa.n, pb.n, a.size, a.name, a.flavour, b.size, b.name, b.flavour
            FROM together t
            JOIN per_product pa ON pa.product_key = t.a_key
            JOIN per_product pb ON pb.product_key = t.b_key
            JOIN dim_product a ON a.product_key = t.a_key
            JOIN dim_product b ON b.product_key = t.b_key""",
        [*params, min_baskets, *params])
    found = []
    for n_ab, n_a, n_b, *names in rows:
        n_ab, n_a, n_b = int(n_ab), int(n_a), int(n_b)
        first, second = _product(*names[:3]), _product(*names[3:])
        if _order(second) < _order(first):  # a pair is unordered: name it the same way every time
            first, second, n_a, n_b = second, first, n_b, n_a
        found.append({"a": first, "b": second, "baskets": n_ab, "a_baskets": n_a, "b_baskets": n_b,
                      "support": round(n_ab / total, 6), "confidence_ab": round(n_ab / n_a, 4),
                      "confidence_ba": round(n_ab / n_b, 4), "lift": round(n_ab * total / (n_a * n_b), 4)})
    # P(X >= n_ab) for X hypergeometric (N sales, n_a holding a, n_b drawn).
    p_values = hypergeometric_upper_many([p["baskets"] for p in found], total, [p["a_baskets"] for p in found],
                                         [p["b_baskets"] for p in found])
    for pair, q in zip(found, benjamini_hochberg(p_values), strict=True):
        pair["q_value"] = float(f"{q:.4g}")
    found.sort(key=lambda p: (-p["lift"], -p["baskets"], _order(p["a"]), _order(p["b"])))
    return {"baskets": total, "pairs": found}


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Each p-value adjusted for the ``m`` tests (Benjamini–Hochberg): the smallest
    ``p_(j) · m / j`` over the ranks j at or above its own, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = min(running, 1.0)
    return q


def _product(size: str | None, name: str, flavour: str | None) -> dict:
    return {"size": size, "name": name, "flavour": flavour}


def _order(product: dict) -> tuple:
    return (product["name"], product["size"] or "", product["flavour"] or "")
