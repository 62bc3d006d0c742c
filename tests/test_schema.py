"""The one schema file and its dialect hooks."""

from __future__ import annotations

import pytest

from cafe_etl.warehouse import duckdb as duck
from cafe_etl.warehouse import postgres as pg
from cafe_etl.warehouse import schema
from cafe_etl.warehouse.schema import Hooks


def test_each_dialect_spells_every_hook():
    for hooks in (duck.HOOKS, pg.HOOKS):
        statements = schema.statements(hooks)
        assert not [s for s in statements if "{" in s or "}" in s]
        assert any(s.startswith("CREATE TABLE IF NOT EXISTS fact_sale (") for s in statements)
    duckdb_text, pg_text = ("\n".join(schema.statements(h)) for h in (duck.HOOKS, pg.HOOKS))
    assert "USING COMPRESSION rle" in duckdb_text and "COMPRESSION" not in pg_text
    assert "CREATE INDEX IF NOT EXISTS fact_sale_file ON fact_sale USING brin (file_id)" in pg_text
    assert "CREATE INDEX" not in duckdb_text
    assert "customer_key BIGINT PRIMARY KEY" in pg_text and "customer_key BIGINT NOT NULL," in duckdb_text
    assert "CREATE UNIQUE INDEX IF NOT EXISTS agg_pair_date_key ON agg_pair_date (date_key, a_key, b_key)" in pg_text


def test_an_unknown_hook_is_refused():
    hooks = Hooks(compression=lambda m: m, unique_key="", index=lambda w: w)
    with pytest.raises(ValueError, match="unknown schema hook"):
        hooks.spell("CREATE TABLE t (a INTEGER {partition a})")


def test_a_warehouse_at_this_version_is_left_as_it_is(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def execute(sql, params):
        return con.execute(sql, list(params) or None).fetchall()

    schema.ensure(execute, duck.HOOKS)
    assert execute("SELECT version FROM etl_schema", ()) == [(schema.SCHEMA_VERSION,)]
    assert execute("SELECT count(*) FROM dim_time", ()) == [(1440,)]
    execute("DROP VIEW mart_daily_branch_sales", ())
    schema.ensure(execute, duck.HOOKS)  # at this version: nothing is run again
    assert execute("SELECT count(*) FROM etl_schema", ()) == [(1,)]
    assert execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'mart_daily_branch_sales'", ()) == [(0,)]


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_a_warehouse_of_schema_3_is_upgraded_to_the_same_aggregates(backend, generated, tmp_path, postgres_databases):
    """A load upgrades an older warehouse: the per-file counts added since (sales per
    product, pairs, the chain's pairs per day) are filled in from its facts, equal to
    what loads count."""
    from tests.conftest import chain_pair_mismatches, customer_mismatches, new_warehouse, query, run_cli

    url = new_warehouse(backend, tmp_path, postgres_databases)
    assert run_cli("ingest", generated, "--warehouse", url).code == 0
    tables = {"agg_product_day": "file_id, date_key, branch_key, product_key, quantity, revenue, sales",
              "agg_pair_day": "file_id, date_key, branch_key, a_key, b_key, sales"}
    counted = {t: sorted(query(url, f"SELECT {columns} FROM {t}")) for t, columns in tables.items()}
    assert counted["agg_pair_day"] and all(row[-1] for row in counted["agg_product_day"])
    together = run_cli("together", "--warehouse", url, "--format", "json").json()
    # Schema 3 had neither the pairs, the sales per product, the categories nor the views on them.
    _write(url, "DROP VIEW mart_product_week_change", "DROP VIEW mart_branch_week_change", "DROP VIEW mart_trend_week",
           "DROP VIEW mart_product_pairs", "DROP VIEW mart_category_sales", "DROP VIEW mart_products",
           "DROP VIEW mart_product_sales", "DROP TABLE agg_pair_day", "DROP TABLE agg_pair_date",
           "ALTER TABLE agg_product_day DROP COLUMN sales",
           "ALTER TABLE dim_product DROP COLUMN category", SCHEMA_3_PRODUCT_SALES,
           *(f"ALTER TABLE dim_customer DROP COLUMN {column}" for column in schema.CUSTOMER_TO_DATE),
           "DROP TABLE agg_customer_week", "DROP TABLE agg_customer_branch", "UPDATE etl_schema SET version = 3")
    refused = run_cli("together", "--warehouse", url)
    assert refused.code != 0 and "written by an older cafe-etl (schema 3" in refused.stderr
    (tmp_path / "empty").mkdir()
    assert run_cli("ingest", tmp_path / "empty", "--warehouse", url).code == 0
    assert {t: sorted(query(url, f"SELECT {columns} FROM {t}")) for t, columns in tables.items()} == counted
    assert chain_pair_mismatches(url) == [] and query(url, "SELECT count(*) FROM agg_pair_date")[0][0] > 0
    assert customer_mismatches(url) == []  # and each customer's sales to date
    assert run_cli("together", "--warehouse", url, "--format", "json").json() == together


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_the_chains_pairs_are_made_again_whole_at_the_upgrade_to_schema_5(backend, generated, tmp_path,
                                                                           postgres_databases):
    """A schema-4 warehouse whose loads never kept the chain's pairs per day (or left them
    out of step) has them added up again from every file's pairs at its next load."""
    from tests.conftest import chain_pair_mismatches, new_warehouse, query, run_cli

    url = new_warehouse(backend, tmp_path, postgres_databases)
    assert run_cli("ingest", generated, "--warehouse", url).code == 0
    kept = sorted(query(url, "SELECT date_key, a_key, b_key, sales FROM agg_pair_date"))
    _write(url, "DELETE FROM agg_pair_date WHERE date_key = (SELECT min(date_key) FROM agg_pair_date)",
           "UPDATE agg_pair_date SET sales = sales + 7", "INSERT INTO agg_pair_date VALUES (20240101, 1, 2, 3)")
    assert chain_pair_mismatches(url)
    _write(url, "UPDATE etl_schema SET version = 4")
    (tmp_path / "empty").mkdir()
    assert run_cli("ingest", tmp_path / "empty", "--warehouse", url).code == 0
    assert sorted(query(url, "SELECT date_key, a_key, b_key, sales FROM agg_pair_date")) == kept
    assert chain_pair_mismatches(url) == []
    postgres_databases.drop(url)


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_each_customers_sales_to_date_are_counted_at_the_upgrade_to_schema_6(backend, generated, tmp_path,
                                                                            postgres_databases):
    """A schema-5 warehouse, whose loads kept only each customer's first sale, gains each
    customer's last day, sales and revenue to date, weeks and branches from its facts at
    its next load; the whole history's answers are the same before and after."""
    from tests.conftest import customer_mismatches, new_warehouse, run_cli

    url = new_warehouse(backend, tmp_path, postgres_databases)
    assert run_cli("ingest", generated, "--warehouse", url).code == 0
    whole = ["--from", "2000-01-01", "--to", "2099-12-31"]
    answer = run_cli("customers", "--warehouse", url, *whole, "--format", "json").json()
    _write(url, *(f"ALTER TABLE dim_customer DROP COLUMN {column}" for column in schema.CUSTOMER_TO_DATE),
           *(f"ALTER TABLE dim_customer ADD COLUMN {column} {kind}" for column, kind in
             zip(schema.CUSTOMER_TO_DATE, ("DATE", "BIGINT", "NUMERIC(14, 2)"), strict=True)),
           "UPDATE dim_customer SET sales = 1 WHERE customer_key % 3 = 0",
           "DELETE FROM agg_customer_week WHERE customer_key % 2 = 0", "UPDATE agg_customer_branch SET last_key = 0",
           "UPDATE etl_schema SET version = 5")
    (tmp_path / "empty").mkdir()
    assert run_cli("ingest", tmp_path / "empty", "--warehouse", url).code == 0
    assert customer_mismatches(url) == []
    assert run_cli("customers", "--warehouse", url, *whole, "--format", "json").json() == answer
    postgres_databases.drop(url)


def test_a_warehouse_a_newer_cafe_etl_upgraded_is_not_written_to(tmp_path):
    """An older loader would leave what a newer one keeps out of step: it refuses, in one line."""
    from tests.conftest import query, run_cli

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    (tmp_path / "empty").mkdir()
    assert run_cli("ingest", tmp_path / "empty", "--warehouse", url).code == 0
    _write(url, f"INSERT INTO etl_schema VALUES ({schema.SCHEMA_VERSION + 1}, now())")
    refused = run_cli("ingest", tmp_path / "empty", "--warehouse", url)
    assert refused.code != 0 and "Traceback" not in refused.stderr
    assert f"upgraded by a newer cafe-etl (schema {schema.SCHEMA_VERSION + 1}" in refused.stderr
    assert query(url, "SELECT count(*) FROM etl_run")[0][0] == 1  # the refused run began nothing


SCHEMA_3_PRODUCT_SALES = """CREATE VIEW mart_product_sales AS
SELECT d.date, a.date_key, b.branch_key, b.name AS branch, p.product_key, p.size, p.name AS product, p.flavour,
       sum(a.quantity) AS quantity, sum(a.revenue) AS revenue
FROM agg_product_day a JOIN dim_date d ON d.date_key = a.date_key JOIN dim_branch b ON b.branch_key = a.branch_key
JOIN dim_product p ON p.product_key = a.product_key
GROUP BY d.date, a.date_key, b.branch_key, b.name, p.product_key, p.size, p.name, p.flavour"""


def _write(url: str, *statements: str) -> None:
    """Statements on a writable connection (readers are read-only)."""
    if url.startswith("duckdb:///"):
        import duckdb

        from cafe_etl.warehouse.duckdb_access import FileAccess

        FileAccess.close_all()  # this process's readers keep the file open read-only for a while
        with duckdb.connect(url.removeprefix("duckdb:///")) as con:
            for statement in statements:
                con.execute(statement)
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as con:
            for statement in statements:
                con.execute(statement)
