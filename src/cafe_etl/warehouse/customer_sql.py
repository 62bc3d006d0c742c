"""How every SQL load keeps ``dim_customer`` exact: the statements ``load_sql`` runs.

A customer's first sale (day, and the lowest branch key that day) and sales to date
(last day, how many, for how much) follow the facts: a batch's customers are merged
by the dialect (``MERGE_CUSTOMERS``: the earliest first sale wins, the batch's sales
are added); the customers of rows a load deletes are noted first and settled again,
every figure from the facts that remain, after the load's facts are in place.
"""

NO_KEY = 2**63 - 1  # above every key: a customer without a first branch yet takes any

# The batch's customers, as the engine staged them (pipeline/stage.py).
CUSTOMER_INPUT = "SELECT customer_key, first_seen, first_branch_key, last_seen, sales, revenue FROM out_customer"


def _day_of(key: str) -> str:
    """The DATE of a YYYYMMDD key, in integer arithmetic every warehouse does exactly.
    (Not a join with dim_date: a file's transaction may have begun before its dates
    were added, and a snapshot would not see them.)"""
    return (f"make_date(CAST(({key} - {key} % 10000) / 10000 AS INTEGER), "
            f"CAST(({key} % 10000 - {key} % 100) / 100 AS INTEGER), CAST({key} % 100 AS INTEGER))")


# A customer's first sale and sales to date, from the facts of ``{facts}`` (a SELECT of
# ``fact_sale`` rows): the first day, its lowest branch key, the last day, how many, for how much.
_CUSTOMER_TO_DATE = f"""
SELECT k.customer_key, {_day_of("k.first_key")} AS first_seen, min(f.branch_key) AS first_branch_key,
       {_day_of("k.last_key")} AS last_seen, k.sales, k.revenue
FROM ({{facts}}) f
JOIN (SELECT s.customer_key, min(s.date_key) AS first_key, max(s.date_key) AS last_key, count(*) AS sales,
             sum(s.total) AS revenue
      FROM ({{facts}}) s GROUP BY s.customer_key) k
  ON k.customer_key = f.customer_key AND k.first_key = f.date_key
GROUP BY k.customer_key, k.first_key, k.last_key, k.sales, k.revenue"""

# A file loaded in parts: its customers' part, from its facts, to merge.
_FILE_FACTS = "SELECT * FROM fact_sale WHERE file_id = ? AND customer_key IS NOT NULL"
PART_CUSTOMERS_TO_MERGE = "CREATE TEMP TABLE merge_customer AS" + _CUSTOMER_TO_DATE.format(facts=_FILE_FACTS)

# Customers whose rows a load deletes (replaced versions, or a version processed
# again), noted before the delete and settled again from the facts after the load:
# every figure from the facts that remain (noted twice, counted once).
NOTE_LOST_CUSTOMERS = """
INSERT INTO load_lost_customer
SELECT DISTINCT customer_key FROM fact_sale
WHERE file_id = ANY(CAST(? AS BIGINT[])) AND customer_key IS NOT NULL
"""
# Their sales that remain, read once from the facts: settling reads them five times.
_LOST_FACTS = "SELECT * FROM load_lost_fact"
SETTLE_LOST_CUSTOMERS = f"""
DROP TABLE IF EXISTS load_lost_fact;
CREATE TEMP TABLE load_lost_fact AS
SELECT customer_key, date_key, branch_key, total FROM fact_sale
WHERE customer_key IN (SELECT customer_key FROM load_lost_customer);
UPDATE dim_customer SET first_seen = m.first_seen, first_branch_key = m.first_branch_key,
                        last_seen = m.last_seen, sales = m.sales, revenue = m.revenue
FROM ({_CUSTOMER_TO_DATE.format(facts=_LOST_FACTS)}) m
WHERE dim_customer.customer_key = m.customer_key
  AND (dim_customer.first_seen <> m.first_seen
       OR coalesce(dim_customer.first_branch_key, {NO_KEY}) <> coalesce(m.first_branch_key, {NO_KEY})
       OR dim_customer.last_seen IS DISTINCT FROM m.last_seen OR dim_customer.sales IS DISTINCT FROM m.sales
       OR dim_customer.revenue IS DISTINCT FROM m.revenue);
DELETE FROM dim_customer
WHERE customer_key IN (SELECT customer_key FROM load_lost_customer)
  AND NOT EXISTS (SELECT 1 FROM load_lost_fact f WHERE f.customer_key = dim_customer.customer_key)
"""


def _monday_of(day: str) -> str:
    """The Monday of the week of ``day`` (a DATE), as every warehouse computes it."""
    return f"{day} - CAST(EXTRACT(ISODOW FROM {day}) AS INTEGER) + 1"


# A batch's customers' weeks and branches, as the engine staged them (pipeline/stage.py).
CUSTOMER_ROLLUP_INPUTS = {
    "merge_customer_week": "SELECT customer_key, monday, sales FROM out_customer_week",
    "merge_customer_branch": "SELECT customer_key, branch_key, first_key, last_key FROM out_customer_branch",
}


# The customers' weeks (Monday to Sunday) with their sales, and their first and last day
# per branch, in a set of facts (``{facts}``): what a file loaded in parts adds, and
# what the customers of deleted rows have left.
_WEEKS_OF = f"""
SELECT m.customer_key, m.monday, CAST(sum(m.sales) AS INTEGER) AS sales
FROM (SELECT d.customer_key, {_monday_of("d.day")} AS monday, d.sales
      FROM (SELECT customer_key, {_day_of("date_key")} AS day, count(*) AS sales FROM ({{facts}}) f
            GROUP BY customer_key, date_key) d) m
GROUP BY m.customer_key, m.monday"""
_BRANCHES_OF = """
SELECT customer_key, branch_key, min(date_key) AS first_key, max(date_key) AS last_key
FROM ({facts}) f GROUP BY customer_key, branch_key"""
# Weeks with the customer's cohort, read from dim_customer: after its merge (or settling).
_WITH_COHORT = f"""
SELECT w.customer_key, w.monday, {_monday_of("c.first_seen")} AS cohort, w.sales
FROM ({{weeks}}) w JOIN dim_customer c ON c.customer_key = w.customer_key"""

PART_ROLLUPS_TO_MERGE = f"""
DROP TABLE IF EXISTS merge_customer_week;
CREATE TEMP TABLE merge_customer_week AS {_WEEKS_OF.format(facts=_FILE_FACTS)};
DROP TABLE IF EXISTS merge_customer_branch;
CREATE TEMP TABLE merge_customer_branch AS {_BRANCHES_OF.format(facts=_FILE_FACTS)}
"""

# A load's weeks (``merge_customer_week``, with their cohorts) and branches
# (``merge_customer_branch``), kept once as they are read twice, are merged by the
# dialect (``MERGE_CUSTOMER_ROLLUPS``);
# then every week of the customers whose first sale is in the load takes its cohort
# (an earlier day loaded late moves it).
LOAD_CUSTOMER_ROLLUPS = f"""
DROP TABLE IF EXISTS load_customer_week;
CREATE TEMP TABLE load_customer_week AS {_WITH_COHORT.format(weeks="SELECT * FROM merge_customer_week")};
DROP TABLE IF EXISTS load_customer_branch;
CREATE TEMP TABLE load_customer_branch AS SELECT * FROM merge_customer_branch
"""
MOVE_COHORTS = """
UPDATE agg_customer_week SET cohort = m.cohort
FROM (SELECT customer_key, cohort FROM load_customer_week WHERE monday = cohort) m
WHERE agg_customer_week.customer_key = m.customer_key AND agg_customer_week.cohort <> m.cohort
"""

# The weeks and branches of the customers noted as lost, counted again from the facts
# that remain (after SETTLE_LOST_CUSTOMERS, whose first sales give the cohorts).
SETTLE_LOST_ROLLUPS = f"""
DELETE FROM agg_customer_week WHERE customer_key IN (SELECT customer_key FROM load_lost_customer);
INSERT INTO agg_customer_week (customer_key, monday, cohort, sales)
{_WITH_COHORT.format(weeks=_WEEKS_OF.format(facts=_LOST_FACTS))};
DELETE FROM agg_customer_branch WHERE customer_key IN (SELECT customer_key FROM load_lost_customer);
INSERT INTO agg_customer_branch (customer_key, branch_key, first_key, last_key) {_BRANCHES_OF.format(facts=_LOST_FACTS)}
"""
