"""Product categories: the mapping file's rules, the warehouse keeping each product's
category in line with it, the report's rollup, and an edited file applied."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest
from tests.conftest import BACKENDS, SAMPLES, new_warehouse, query, run_cli

from cafe_etl import categories
from cafe_etl.errors import ConfigError

DEFAULT = categories.load()


@pytest.mark.parametrize("name, category, why", [
    ("Latte", "Coffee", "product"),
    ("latte", "Coffee", "product"),  # case does not matter to the category
    ("Hot Chocolate", "Hot chocolate", "product"),
    ("Hot chocolate", "Hot chocolate", "product"),
    ("Chai latte", "Tea", "product"),  # listed: wins over the keyword "latte"
    ("Oat Flat White", "Coffee", "keyword"),
    ("Iced Matcha Latte", "Cold drinks", "keyword"),  # the first category in the file with a keyword
    ("Peppermint tea", "Tea", "keyword"),
    ("Blueberry Muffin", "Food", "keyword"),
    ("Teacake", "Other", "default"),  # keywords are whole words: not "tea", not "cake"
    ("Babyccino", "Other", "default"),
])
def test_the_packaged_mapping(name, category, why):
    assert DEFAULT.explain(name) == (category, why)


@pytest.mark.parametrize("text, message", [
    ("default = [", "not valid TOML"),
    ('default = ""', "default must be text"),
    ('[[category]]\nname = "Tea"\nproducts = "Tea"', "Tea's products must be a list"),
    ('[[category]]\nname = "Tea"\n[[category]]\nname = "Tea"', "named twice"),
    ("category = 3", "[[category]] entries expected"),
])
def test_a_bad_mapping_file_says_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        categories.parse(text, "test.toml")


MINE = """
default = "Everything else"
[[category]]
name = "Hot drinks"
keywords = ["latte", "tea", "chocolate", "coffee", "americano", "espresso", "cappuccino", "mocha", "cortado", "flat"]
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_warehouse_rolls_up_by_category_and_applies_an_edited_file(backend, tmp_path, postgres_databases):
    url = new_warehouse(backend, tmp_path, postgres_databases)
    assert run_cli("ingest", SAMPLES, "--warehouse", url).code in (0, 1)
    stored = dict(((n, c) for n, c in query(url, "SELECT DISTINCT name, category FROM dim_product")))
    assert stored and all(stored[name] == DEFAULT.category_of(name) for name in stored)
    report = run_cli("report", "--warehouse", url, "--format", "json").json()
    want: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for p in report["products"]:
        want[DEFAULT.category_of(p["name"])][0] += p["quantity"]
        want[DEFAULT.category_of(p["name"])][1] += Decimal(str(p["revenue"]))
    got = {c["category"]: [c["quantity"], Decimal(str(c["revenue"]))] for c in report["categories"]}
    assert got == dict(want)
    assert sum(c["revenue_share_pct"] for c in report["categories"]) == pytest.approx(100, abs=0.3)

    mine = tmp_path / "mine.toml"
    mine.write_text(MINE)
    env = {categories.ENV_CATEGORIES: str(mine)}
    pending = run_cli("categories", "--warehouse", url, "--format", "json", env=env).json()
    assert pending["source"] == str(mine) and pending["applied"] is None
    assert {p["category"] for p in pending["products"]} <= {"Hot drinks", "Everything else"}
    assert any(p["in_warehouse"] == "Coffee" for p in pending["products"])  # not moved yet
    applied = run_cli("categories", "--warehouse", url, "--apply", "--format", "json", env=env).json()
    assert applied["applied"] == sum(p["category"] != p["in_warehouse"] for p in pending["products"]) > 0
    assert all(p["category"] == p["in_warehouse"] for p in applied["products"])
    rolled = run_cli("report", "--warehouse", url, "--format", "json").json()["categories"]
    assert {c["category"] for c in rolled} == {"Hot drinks", "Everything else"}
    assert sum(c["quantity"] for c in rolled) == sum(p["quantity"] for p in report["products"])
    # Without the variable, the next load brings the packaged mapping back.
    (tmp_path / "empty").mkdir()
    assert run_cli("ingest", tmp_path / "empty", "--warehouse", url).code == 0
    back = run_cli("report", "--warehouse", url, "--format", "json").json()["categories"]
    assert back == report["categories"]


def test_a_bad_categories_file_stops_a_load_before_it_starts(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("default = [")
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = run_cli("ingest", SAMPLES / "canonical", "--warehouse", url, env={categories.ENV_CATEGORIES: str(bad)})
    assert result.code == 2 and "not valid TOML" in result.stderr and "Traceback" not in result.stderr
    if (tmp_path / "w.duckdb").exists():
        assert query(url, "SELECT count(*) FROM etl_file") == [(0,)]


def test_an_older_warehouse_is_refused_by_readers_with_the_step_that_upgrades_it(tmp_path):
    import duckdb

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    assert run_cli("ingest", SAMPLES / "canonical", "--warehouse", url).code == 0
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("DELETE FROM etl_schema WHERE version = (SELECT max(version) FROM etl_schema)")
        con.execute("ALTER TABLE dim_product DROP COLUMN category")
    refused = run_cli("report", "--warehouse", url)
    assert refused.code != 0 and "written by an older cafe-etl" in refused.stderr
    assert "cafe-etl ingest" in refused.stderr and "Traceback" not in refused.stderr
    (tmp_path / "empty").mkdir()
    assert run_cli("ingest", tmp_path / "empty", "--warehouse", url).code == 0
    report = json.loads(run_cli("report", "--warehouse", url, "--format", "json").stdout)
    assert {"Coffee", "Tea", "Smoothies"} <= {c["category"] for c in report["categories"]}
