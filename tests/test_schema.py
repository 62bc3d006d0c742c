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
