"""Every real branch export under fixtures/samples, through the real CLI, with its exact counts.

Revenue is also recomputed here with Python's csv module, independently of the engine.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest
from tests.conftest import BACKENDS, SAMPLES, copy_samples, new_warehouse, query, text_values

# file -> (lines, loaded, rejected, ignored, rejects by reason, layout)
EXPECTED = {
    "canonical/birmingham_25-08-2021_09-00-00.csv": (254, 254, 0, 0, {}, "v1"),
    "canonical/chesterfield_25-08-2021_09-00-00.csv": (268, 268, 0, 0, {}, "v1"),
    "canonical/leeds_01-01-2020_09-00-00.csv": (382, 382, 0, 0, {}, "v1"),
    "canonical/london_brixton_25-08-2021_08-00-00.csv": (531, 531, 0, 0, {}, "v1"),
    "canonical/newcastle_upon_tyne_09-09-2021_08-00-00.csv": (386, 386, 0, 0, {}, "v1"),
    "canonical/southend-on-sea_09-09-2021_09-00-00.csv": (305, 305, 0, 0, {}, "v1"),
    "canonical/uppingham_08-08-2023_09-00-00.csv": (259, 259, 0, 0, {}, "v1"),
    "crlf-2dp/chesterfield_23-03-2021_09-00-00.csv": (268, 268, 0, 0, {}, "v1"),
    # 19 original rows (one with an N/A branch, one with an empty basket and N/A
    # payment, one with an N/A payment), the same 19 again byte for byte, 2 blank lines.
    "dirty/bradford.csv": (40, 16, 22, 2,
                           {"DUPLICATE_ROW": 19, "MISSING_BRANCH": 1, "EMPTY_BASKET": 1, "BAD_PAYMENT": 1}, "v1"),
    "header/leeds_28-03-2025_09-00-00.csv": (383, 382, 0, 1, {}, "v1+header"),
    "legacy-isle-of-wight/2021-02-23-isle-of-wight.csv": (540, 540, 0, 0, {}, "v0-legacy"),
    "padded/chesterfield_25-08-2021_09-00-00.csv": (268, 268, 0, 0, {}, "v1"),
    "spreadsheet-resave/chesterfield_25-08-2021_09-00-00.csv": (268, 268, 0, 0, {}, "v1"),
    "spreadsheet-resave/uppingham_08-08-2023_09-00-00.csv": (260, 259, 0, 1, {}, "v1+header"),
    "trailing-space/leeds_23-03-2021_09-00-00.csv": (383, 382, 0, 1, {}, "v1"),
}


def test_every_sample_is_listed():
    assert sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*.csv")) == sorted(EXPECTED)


@pytest.fixture(scope="module", params=BACKENDS)
def ingested(request, tmp_path_factory, postgres_databases):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp(f"samples-{request.param}")
    copy_samples(root / "landing")
    warehouse = new_warehouse(request.param, root, postgres_databases)
    result = run_cli("ingest", root / "landing", "--warehouse", warehouse, "--json")
    assert result.code == 0, result.stderr
    yield root / "landing", warehouse, result.json()
    postgres_databases.drop(warehouse)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_counts(ingested, name):
    landing, _, summary = ingested
    lines, loaded, rejected, ignored, reasons, layout = EXPECTED[name]
    (outcome,) = [f for f in summary["file_results"] if f["location"] == str((landing / name).resolve())]
    assert outcome["outcome"] == "loaded"
    assert (outcome["rows_read"], outcome["rows_loaded"], outcome["rows_rejected"], outcome["rows_ignored"]) == (
        lines, loaded, rejected, ignored)
    assert outcome["rejects_by_reason"] == reasons
    assert outcome["format"].split()[0] == layout
    # The accounting invariant, file by file.
    assert outcome["rows_read"] == outcome["rows_loaded"] + outcome["rows_rejected"] + outcome["rows_ignored"]


def _reference_revenue(path: Path) -> tuple[int, Decimal]:
    """Count and sum the good rows with the csv module: an independent reading of the file."""
    rows, revenue, seen = 0, Decimal(0), set()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for raw in csv.reader(handle):
            fields = [f.strip() for f in raw]
            if not any(fields) or not fields[0][:1].isdigit():
                continue  # blank or header
            key = tuple(raw)
            legacy = "-" in fields[0][:5]
            total = fields[5] if legacy else fields[4]
            payment = fields[4] if legacy else fields[5]
            if key in seen or fields[1].upper() in ("N/A", "") or not fields[3] or payment not in ("CASH", "CARD"):
                seen.add(key)
                continue
            seen.add(key)
            rows += 1
            revenue += Decimal(total)
    return rows, revenue


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_revenue_matches_an_independent_reading(ingested, name):
    landing, warehouse, _ = ingested
    rows, revenue = _reference_revenue(landing / name)
    got = query(warehouse, """SELECT count(*), coalesce(sum(s.total), 0) FROM fact_sale s
                              JOIN etl_file f ON f.file_id = s.file_id WHERE f.location = ?""",
                [str((landing / name).resolve())])[0]
    assert got == (rows, revenue)


def test_items_add_up_to_totals(ingested):
    _, warehouse, _ = ingested
    sales, items = query(warehouse,
                         "SELECT (SELECT sum(total) FROM fact_sale), (SELECT sum(unit_price) FROM fact_sale_item)")[0]
    counts = query(warehouse,
                   "SELECT (SELECT sum(item_count) FROM fact_sale), (SELECT count(*) FROM fact_sale_item)")[0]
    assert sales == items
    assert counts[0] == counts[1]


def test_products_keep_their_case_and_flavours(ingested):
    _, warehouse, _ = ingested
    products = set(query(warehouse, "SELECT size, name, flavour FROM dim_product"))
    assert ("Regular", "Hot Chocolate", None) in products
    assert ("Regular", "Hot chocolate", None) in products
    assert ("Large", "Flavoured latte", "Hazelnut") in products
    assert ("Regular", "Frappes", "Strawberries & Cream") in products
    assert ("Large", "Speciality Tea", "English breakfast") in products
    # The legacy export sells sizeless items.
    assert (None, "Babyccino", None) in products
    assert (None, "Glass of milk", None) in products
    assert not any(name != name.strip() or name.lower() == name.upper() for _, name, _ in products)


def test_branch_names_and_identity(ingested):
    _, warehouse, _ = ingested
    names = dict(query(warehouse, "SELECT branch_id, name FROM dim_branch"))
    assert names["chesterfield"] == "Chesterfield"
    assert names["isle of wight"] == "Isle of Wight"
    assert names["newcastle upon tyne"] == "Newcastle upon Tyne"
    assert names["bradford"] == "bradford"  # never seen spelled otherwise
    assert len(names) == 9


def test_dirty_rejects_keep_no_personal_data(ingested):
    _, warehouse, _ = ingested
    rows = query(warehouse, "SELECT reason_code, detail, row_data FROM etl_reject ORDER BY source_row")
    assert rows[0][2].startswith("10/12/2023 09:04,N/A,,")
    text = "\n".join(text_values(warehouse))
    for pii in ("Glen Wilson", "Catherine Walker", "Eddie Dorado", "7234703351190778", "4545940253875364",
                "Richard Copeland", "Morgan Berka", "6011776257398866"):
        assert pii not in text
