"""Many small batches on two engines at once: the same warehouse as one big batch."""

from __future__ import annotations

import json

from tests.conftest import query

from cafe_etl.analytics import report as reports
from cafe_etl.analytics.jsonout import dumps
from cafe_etl.config import load_settings
from cafe_etl.pipeline.run import ingest
from cafe_etl.warehouse import open_warehouse


def test_small_batches_loaded_concurrently_give_the_truth(generated, expected, warehouse_url):
    warehouse = warehouse_url
    settings = load_settings(warehouse=str(warehouse), threads=2).with_overrides(batch_bytes=40_000)
    summary = ingest([str(generated)], settings)
    assert summary.ok and summary.count("loaded") == expected["files"]
    with open_warehouse(str(warehouse)).reader() as reader:
        got = reports.build(reader, reports.Filters())
    assert json.loads(dumps(got)) == expected["report"]
    dupes = query(warehouse, """
        SELECT (SELECT count(*) - count(DISTINCT customer_key) FROM dim_customer),
               (SELECT count(*) - count(DISTINCT product_key) FROM dim_product),
               (SELECT count(*) - count(DISTINCT branch_key) FROM dim_branch),
               (SELECT count(*) - count(DISTINCT date_key) FROM dim_date),
               (SELECT count(DISTINCT run_id) FROM etl_file)""")[0]
    assert dupes == (0, 0, 0, 0, 1)
