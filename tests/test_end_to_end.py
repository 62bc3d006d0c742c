"""The real CLI on real warehouses (a DuckDB file and the PostgreSQL server): generated
data with bad rows against the generator's truth, and the ledger's promises."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date

import pytest
from tests.conftest import (
    BACKENDS,
    chain_pair_mismatches,
    customer_mismatches,
    new_warehouse,
    query,
    run_cli,
    text_values,
)


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, generated, tmp_path_factory, postgres_databases):
    """The generated landing folder copied, ingested once into a warehouse of each backend."""
    root = tmp_path_factory.mktemp(f"e2e-{request.param}")
    landing = root / "landing"
    shutil.copytree(generated, landing)
    url = new_warehouse(request.param, root, postgres_databases)
    result = run_cli("ingest", landing, "--warehouse", url, "--json")
    assert result.code == 0, result.stderr
    yield landing, url, result.json()
    postgres_databases.drop(url)


def report(url, *args):
    result = run_cli("report", "--warehouse", url, "--format", "json", *args)
    assert result.code == 0, result.stderr
    return result.json()


def ingest(landing, url):
    result = run_cli("ingest", landing, "--warehouse", url, "--json")
    assert result.code == 0, result.stderr
    return result.json()


def test_report_equals_the_generators_truth(loaded, expected):
    _, url, _ = loaded
    assert report(url) == expected["report"]


def test_report_for_a_later_period_counts_new_and_returning_customers(loaded, expected):
    _, url, _ = loaded
    later = expected["later_half"]
    got = report(url, "--from", later["period"]["from"], "--to", later["period"]["to"])
    assert got == later
    assert got["customers"]["returning"] > 0 and got["customers"]["new"] > 0


def test_report_for_one_branch(loaded, expected):
    _, url, _ = loaded
    best = expected["report"]["branches"][0]
    got = report(url, "--branch", best["branch"].upper())
    assert got["branches"] == [best]
    assert got["totals"] == {"transactions": best["transactions"], "items": best["items"],
                             "revenue": best["revenue"], "branches": 1}


def test_money_is_written_with_two_decimals(loaded):
    _, url, _ = loaded
    text = run_cli("report", "--warehouse", url, "--format", "json").stdout
    revenues = re.findall(r'"revenue": ([0-9.]+)', text)
    assert revenues and all(re.fullmatch(r"\d+\.\d\d", r) for r in revenues)


def test_summary_counts_every_file_and_row(loaded, expected):
    _, _, summary = loaded
    assert summary["files"]["loaded"] == expected["files"]
    assert summary["rows"]["loaded"] == expected["report"]["totals"]["transactions"]
    assert summary["rows"]["rejected"] == expected["report"]["quality"]["rows_rejected"]
    assert summary["rejects_by_reason"] == expected["report"]["quality"]["rejects_by_reason"]
    assert set(summary["rejects_by_reason"]) == {
        "BAD_FIELD_COUNT", "BAD_TIMESTAMP", "MISSING_BRANCH", "EMPTY_BASKET", "BAD_ITEM", "BAD_PRICE", "BAD_TOTAL",
        "TOTAL_MISMATCH", "BAD_PAYMENT", "DUPLICATE_ROW", "BRANCH_MISMATCH"}
    for f in summary["file_results"]:
        assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_ignored"]
    assert sum(f["rows_read"] for f in summary["file_results"]) == expected["lines"]


def no_duplicates(url) -> tuple:
    """Keys that appear twice anywhere (all zero in a sound warehouse), and ledger rows
    whose row count disagrees with the facts."""
    return query(url, """
        SELECT (SELECT count(*) - count(DISTINCT file_id * 1000000000 + source_row) FROM fact_sale),
               (SELECT count(*) FROM (SELECT file_id, source_row, line_number FROM fact_sale_item
                                      GROUP BY file_id, source_row, line_number HAVING count(*) > 1) d),
               (SELECT count(*) - count(DISTINCT customer_key) FROM dim_customer),
               (SELECT count(*) - count(DISTINCT product_key) FROM dim_product),
               (SELECT count(*) - count(DISTINCT branch_key) FROM dim_branch),
               (SELECT count(*) - count(DISTINCT date_key) FROM dim_date),
               (SELECT count(*) FROM etl_file f
                LEFT JOIN (SELECT file_id, count(*) AS n FROM fact_sale GROUP BY file_id) s ON s.file_id = f.file_id
                WHERE f.status = 'loaded' AND f.rows_loaded <> coalesce(s.n, 0)),
               (SELECT count(*) FROM etl_file WHERE status = 'loading')""")[0]


def test_ledger_matches_the_facts(loaded):
    _, url, _ = loaded
    assert no_duplicates(url) == (0,) * 8


def test_ingest_twice_changes_nothing(loaded, expected):
    landing, url, _ = loaded
    summary = ingest(landing, url)
    assert summary["files"]["unchanged"] == expected["files"]
    assert summary["rows"]["loaded"] == 0
    assert report(url) == expected["report"]


def _personal_data(landing) -> tuple[set[str], set[str]]:
    names, cards = set(), set()
    for path in landing.glob("*.csv"):
        for line in path.read_text().splitlines():
            fields = line.split(",")
            if len(fields) >= 7:
                names.add(fields[2])
                if fields[-1].isdigit():
                    cards.add(fields[-1])
    return names, cards


def _luhn(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def test_personal_data_is_in_no_text_column(loaded):
    """Every name and card number in the landing files: none in any text column of any table."""
    landing, url, _ = loaded
    names, cards = _personal_data(landing)
    assert len(names) > 100 and len(cards) > 100
    blob = "\n".join(text_values(url))
    assert len(blob) > 1000
    assert not [n for n in names if n and n in blob]
    assert not [c for c in cards if c in blob]
    assert not [run for run in re.findall(r"\d{13,19}", blob) if _luhn(run)]


def test_a_changed_file_replaces_its_old_rows(generated, warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    first = ingest(landing, warehouse_url)
    before = report(warehouse_url)
    victim = sorted(landing.glob("*.csv"))[0]
    (old,) = [f for f in first["file_results"] if f["location"] == str(victim.resolve())]
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[: len(lines) // 2]))  # the branch re-exported half of its day
    summary = ingest(landing, warehouse_url)
    assert summary["files"]["reloaded"] == 1
    assert summary["files"]["unchanged"] == len(list(landing.glob("*.csv"))) - 1
    (new,) = [f for f in summary["file_results"] if f["outcome"] == "reloaded"]
    assert new["replaced_file_id"] == old["file_id"] and 0 < new["rows_loaded"] < old["rows_loaded"]
    after = report(warehouse_url)
    assert after["totals"]["transactions"] == before["totals"]["transactions"] - old["rows_loaded"] + new["rows_loaded"]
    statuses = query(warehouse_url, "SELECT file_id, status, replaced_by FROM etl_file WHERE location = ? ORDER BY 1",
                     [str(victim.resolve())])
    rows = dict(query(warehouse_url, "SELECT file_id, count(*) FROM fact_sale WHERE file_id IN (?, ?) GROUP BY file_id",
                      [old["file_id"], new["file_id"]]))
    rejects = query(warehouse_url, "SELECT count(*) FROM etl_reject WHERE file_id = ?", [old["file_id"]])[0][0]
    assert statuses == [(old["file_id"], "replaced", new["file_id"]), (new["file_id"], "loaded", None)]
    assert rows == {new["file_id"]: new["rows_loaded"]} and rejects == 0
    assert no_duplicates(warehouse_url) == (0,) * 8
    # The old version's pairs left the chain's days, its customers' sales to date settled.
    assert chain_pair_mismatches(warehouse_url) == [] and customer_mismatches(warehouse_url) == []


def test_a_renamed_copy_is_skipped(generated, warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    ingest(landing, warehouse_url)
    before = report(warehouse_url)
    original = sorted(landing.glob("*.csv"))[3]
    shutil.copy(original, landing / "uploaded-again.csv")
    summary = ingest(landing, warehouse_url)
    (copy,) = [f for f in summary["file_results"] if f["outcome"] == "copy"]
    assert copy["location"].endswith("uploaded-again.csv") and copy["copy_of"] is not None
    assert report(warehouse_url) == before
    row = query(warehouse_url, "SELECT status, copy_of FROM etl_file WHERE location LIKE ?", ["%uploaded-again.csv"])
    assert row == [("skipped", copy["copy_of"])]


def test_copies_inside_one_run_load_once(generated, warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    source = sorted(generated.glob("*.csv"))[0]
    shutil.copy(source, landing / "a.csv")
    shutil.copy(source, landing / "b.csv")
    assert [f["outcome"] for f in ingest(landing, warehouse_url)["file_results"]] == ["loaded", "copy"]


def test_status_and_rejects(loaded):
    _, url, summary = loaded
    status = run_cli("status", "--warehouse", url, "--json")
    assert status.code == 0, status.stderr
    info = status.json()
    assert info["files_by_status"] == {"loaded": summary["files"]["loaded"]}
    assert info["rejects_by_reason"] == summary["rejects_by_reason"]
    assert info["last_run"]["command"] == "ingest"

    rejects = run_cli("rejects", "--warehouse", url, "--reason", "total_mismatch", "--format", "json")
    data = rejects.json()
    assert data["total"] == summary["rejects_by_reason"]["TOTAL_MISMATCH"]
    assert all(r["reason"] == "TOTAL_MISMATCH" and "items add up to" in r["detail"] for r in data["rejects"])
    table = run_cli("rejects", "--warehouse", url, "--limit", "5")
    assert table.code == 0 and "rejected rows" in table.stdout


def test_replay_reprocesses_files_with_rejects(generated, warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    first = ingest(landing, warehouse_url)
    before = report(warehouse_url)
    some_branch = before["branches"][0]["branch"]
    result = run_cli("replay", "--warehouse", warehouse_url, "--branch", some_branch, "--json")
    assert result.code == 0, result.stderr
    replayed = result.json()
    slug = some_branch.lower().replace(" ", "_")
    files_of_branch = [f for f in first["file_results"] if f["rows_rejected"] and slug in f["location"].lower()]
    assert replayed["files"]["loaded"] == len(files_of_branch) > 0
    assert {f["file_id"] for f in replayed["file_results"]} == {f["file_id"] for f in files_of_branch}
    assert report(warehouse_url) == before  # same rules, same result: nothing doubled, nothing lost
    assert no_duplicates(warehouse_url) == (0,) * 8
    assert chain_pair_mismatches(warehouse_url) == [] and customer_mismatches(warehouse_url) == []


def test_validate_lists_every_problem_and_loads_nothing(generated, tmp_path, expected):
    result = run_cli("validate", generated, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    data = result.json()
    assert len(data["problems"]) == expected["report"]["quality"]["rows_rejected"]
    assert data["files"]["valid"] == expected["files"]
    assert all(p["reason"] and p["detail"] and p["line"] for p in data["problems"])
    assert not (tmp_path / "data").exists()


def test_report_formats(loaded):
    _, url, _ = loaded
    table = run_cli("report", "--warehouse", url)
    assert table.code == 0 and "Best branches" in table.stdout and "What sells" in table.stdout
    csv_out = run_cli("report", "--warehouse", url, "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "section,key,metric,value"
    data = report(url)
    assert f"totals,,transactions,{data['totals']['transactions']}" in csv_out


def test_mart_views_agree_with_the_facts(loaded, expected):
    _, url, _ = loaded
    daily = query(url, "SELECT sum(transactions), sum(revenue) FROM mart_daily_branch_sales")[0]
    products = query(url, "SELECT sum(quantity), sum(revenue) FROM mart_product_sales")[0]
    hourly = query(url, "SELECT sum(transactions) FROM mart_hourly_sales")[0][0]
    retention = query(url, "SELECT sum(new_customers) FROM mart_customer_retention")[0][0]
    totals = expected["report"]["totals"]
    assert daily[0] == totals["transactions"] and float(daily[1]) == pytest.approx(totals["revenue"])
    assert products[0] == totals["items"] and float(products[1]) == pytest.approx(totals["revenue"])
    assert hourly == totals["transactions"]
    assert retention >= expected["report"]["customers"]["new"]


def test_no_customer_keys_when_turned_off(generated, warehouse_url):
    result = run_cli("ingest", generated, "--warehouse", warehouse_url, "--no-customer-keys")
    assert result.code == 0, result.stderr
    keys = query(warehouse_url, "SELECT count(customer_key), (SELECT count(*) FROM dim_customer) FROM fact_sale")
    assert keys == [(0, 0)]


def test_demo_runs_end_to_end(tmp_path):
    result = run_cli("demo", "--branches", 3, "--days", 4, "--no-serve", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "data" / "warehouse.duckdb").exists()
    assert len(list((tmp_path / "data" / "landing").glob("*.csv"))) == 12
    again = report(f"duckdb:///{tmp_path / 'data' / 'warehouse.duckdb'}")
    expected = json.loads((tmp_path / "data" / "landing" / "_expected.json").read_text())
    assert again == expected["report"]
    assert date.fromisoformat(again["period"]["to"]) < date.today()
