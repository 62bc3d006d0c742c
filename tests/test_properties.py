"""Property-based tests (Hypothesis) of the basket parser and the row validator, run
through the real engine: any valid basket written the till's way parses back to the
same items; arbitrary text never raises, each line is loaded or rejected with a known
reason; the accounting invariant holds for any file."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cafe_etl.config import Settings
from cafe_etl.engine import EnginePool
from cafe_etl.pipeline.batch import judge, read_file
from cafe_etl.rules import PLACEHOLDERS, SIZES, Reason
from cafe_etl.sources.base import LandingFile

EXAMPLES = int(os.environ.get("CAFE_ETL_PROPERTY_EXAMPLES", "40"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
OUTCOMES = {"sale", "reject", "header", "blank"}
SETTINGS = Settings(customer_keys=False)

word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèçñ'&", min_size=1, max_size=10)
words = st.lists(word, min_size=1, max_size=4).map(" ".join).filter(
    lambda w: w.upper() not in PLACEHOLDERS and w.split(" ")[0].lower() not in {s.lower() for s in SIZES})
price = st.decimals(min_value=Decimal("0.00"), max_value=Decimal("99.99"), places=2, allow_nan=False)
item = st.tuples(st.sampled_from([*SIZES, None]), words, st.one_of(st.none(), words), price)
basket = st.lists(item, min_size=1, max_size=8)


@pytest.fixture(scope="module")
def engine():
    with EnginePool(workers=1, threads=1, memory_limit="512MB") as pool:
        yield pool.engines[0]


def write_item(size, name, flavour, amount) -> str:
    text = f"{size} {name}" if size else name
    return f"{text} - {flavour} - {amount:.2f}" if flavour else f"{text} - {amount:.2f}"


def run(engine, data: bytes):
    source = LandingFile(location="memory://branch.csv", size=len(data), modified=0.0, read=lambda: data)
    (judged,) = judge(engine, [read_file(source)], SETTINGS, None)
    return judged


@PROPERTY
@given(baskets=st.lists(basket, min_size=1, max_size=20))
def test_a_basket_written_the_tills_way_parses_back_to_its_items(engine, baskets):
    rows = []
    for n, items in enumerate(baskets):
        total = sum(amount for *_, amount in items)
        text = ", ".join(write_item(*i) for i in items)
        rows.append(f'05/03/2024 {8 + n // 60:02d}:{n % 60:02d},Property Town,Ann Example,"{text}",{total:.2f},CARD,')
    judged = run(engine, ("\n".join(rows) + "\n").encode())
    assert judged.failure is None and judged.counts.loaded == len(baskets)
    parsed = engine.rows(
        """SELECT c.line_no, i.item_no, d.size, d.name, d.flavour, d.price
           FROM stg_check c
           JOIN stg_basket_item i ON i.basket_no = c.basket_no
           JOIN (SELECT DISTINCT product_key, size, name, flavour, price FROM stg_item_dict) d
             ON d.product_key = i.product_key AND d.price = i.price
           ORDER BY c.line_no, i.item_no""")
    got: dict[int, list] = {}
    for line, _, size, name, flavour, amount in parsed:
        got.setdefault(line, []).append((size, name, flavour, amount))
    expected = {n + 1: [(s, " ".join(nm.split()), f and " ".join(f.split()), a) for s, nm, f, a in items]
                for n, items in enumerate(baskets)}
    assert got == expected


printable = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
field = st.one_of(printable, st.sampled_from(["CASH", "CARD", "05/03/2024 09:00", "2.45", "", "N/A", '"',
                                              "Large Latte - 2.45", "Regular Tea - x"]))
row_like = st.lists(field, min_size=0, max_size=10).map(",".join)


@PROPERTY
@given(lines=st.lists(st.one_of(printable, row_like), min_size=0, max_size=30),
       ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_arbitrary_text_is_parsed_or_rejected_with_a_reason_and_never_raises(engine, lines, ending):
    data = ending.join(lines).encode("utf-8", errors="surrogatepass")
    judged = run(engine, data)
    if judged.counts is None:  # the whole file was refused (empty, binary): said so
        assert judged.failure
        return
    outcomes = engine.rows("SELECT outcome, reason FROM stg_check")
    assert {o for o, _ in outcomes} <= OUTCOMES
    assert all(reason in Reason.__members__ for outcome, reason in outcomes if outcome == "reject")
    c = judged.counts
    assert c.loaded + c.rejected + c.ignored == judged.read.decoded.lines


good_row = st.builds(
    lambda minute, items: '05/03/2024 10:{:02d},Property Town,Bo Example,"{}",{:.2f},{},'.format(
        minute, ", ".join(write_item(*i) for i in items), sum(a for *_, a in items), "CASH"),
    st.integers(0, 59), basket)
mutations = st.sampled_from([
    lambda r: r, lambda r: r, lambda r: r.replace("05/03/2024", "31/02/2024"), lambda r: r.rsplit(",", 2)[0],
    lambda r: r.replace("CASH", "CHEQUE"), lambda r: r.replace("Property Town", ""), lambda r: r + ",extra",
    lambda r: r.replace(",CASH", "0,CASH"), lambda r: "", lambda r: "Date,Branch,Name,Basket,Total,Pay,Card",
])


@PROPERTY
@given(rows=st.lists(st.tuples(good_row, mutations), min_size=1, max_size=25), repeat=st.booleans())
def test_the_accounting_invariant_holds_for_any_file(engine, rows, repeat):
    lines = [mutate(row) for row, mutate in rows]
    if repeat:
        lines += lines[:3]
    judged = run(engine, ("\n".join(lines) + "\n").encode())
    if judged.counts is None:
        assert judged.failure
        return
    c = judged.counts
    assert c.loaded + c.rejected + c.ignored == judged.read.decoded.lines
    assert c.loaded <= sum(1 for line in lines if line.count(",") >= 6)
