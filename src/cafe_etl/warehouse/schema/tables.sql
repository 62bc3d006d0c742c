-- cafe-etl warehouse: the tables of every SQL backend (DuckDB, PostgreSQL). Table and
-- column names are a contract (DESIGN §5): add columns, never rename. Statements are
-- separated by ";\n". Types are written as both dialects (and, where practical,
-- Amazon Redshift) read them. What differs is a hook in braces, which each dialect
-- spells (warehouse/schema.py):
--   {compression METHOD}  a column's compression, named (DuckDB) or left to the server
--   {unique_key}          a key kept unique by an index, or by the loader alone
--   {index NAME ON ...}   a secondary index: PostgreSQL's; DuckDB's zonemaps serve instead
--   {unique_index NAME ON ...}  a unique index that concurrent loaders' upserts rely on
--                         (PostgreSQL's); DuckDB's loaders write one at a time

CREATE TABLE IF NOT EXISTS etl_schema (
    version INTEGER NOT NULL,
    applied_at TIMESTAMP NOT NULL
);

CREATE SEQUENCE IF NOT EXISTS etl_file_id_seq START 1;
CREATE SEQUENCE IF NOT EXISTS etl_run_id_seq START 1;

-- Dimensions -----------------------------------------------------------------

CREATE TABLE IF NOT EXISTS dim_date (
    date_key INTEGER PRIMARY KEY,          -- YYYYMMDD
    date DATE NOT NULL,
    year SMALLINT NOT NULL,
    quarter SMALLINT NOT NULL,
    month SMALLINT NOT NULL,
    month_name VARCHAR(16) NOT NULL,
    week SMALLINT NOT NULL,                -- ISO week
    weekday SMALLINT NOT NULL,             -- ISO: 1 = Monday
    weekday_name VARCHAR(16) NOT NULL,
    is_weekend BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS dim_time (
    time_key SMALLINT PRIMARY KEY,         -- HHMM
    hour SMALLINT NOT NULL,
    minute SMALLINT NOT NULL,
    day_part VARCHAR(16) NOT NULL
);

CREATE TABLE IF NOT EXISTS dim_branch (
    branch_key BIGINT PRIMARY KEY,         -- derived from branch_id
    branch_id VARCHAR NOT NULL UNIQUE,     -- identity: lower case, single spaces
    name VARCHAR NOT NULL,                 -- display: first spelling not all lower case
    first_seen DATE
);

CREATE TABLE IF NOT EXISTS dim_product (
    product_key BIGINT PRIMARY KEY,        -- derived from (size, name, flavour), case-sensitive
    size VARCHAR,
    name VARCHAR NOT NULL,
    flavour VARCHAR
);
-- What the product is (coffee, tea, ...), from its name by the categories file in use
-- (cafe_etl/categories.py): loads keep it in line with that file.
ALTER TABLE dim_product ADD COLUMN IF NOT EXISTS category VARCHAR;

CREATE TABLE IF NOT EXISTS dim_payment_method (
    payment_key SMALLINT PRIMARY KEY,
    method VARCHAR(16) NOT NULL UNIQUE
);

-- DuckDB keeps no index on the key: with a million customers an index costs more
-- than the anti-join that keeps keys unique (one writer at a time holds the file).
-- PostgreSQL's loaders merge at the same time, so the key settles who wins.
CREATE TABLE IF NOT EXISTS dim_customer (
    customer_key BIGINT {unique_key},          -- keyed hash of name and card: no personal data
    first_seen DATE NOT NULL,
    first_branch_key BIGINT                -- of the branches on the first day, the lowest key
);
ALTER TABLE dim_customer ADD COLUMN IF NOT EXISTS first_branch_key BIGINT;
-- Each customer's sales to date: the last day, how many, for how much. Kept exact by
-- every load beside the first sale, so a question about the whole history reads one
-- row per customer instead of grouping every sale (Iceberg keeps them not: it commits
-- one table at a time, and its readers group the facts).
ALTER TABLE dim_customer ADD COLUMN IF NOT EXISTS last_seen DATE;
ALTER TABLE dim_customer ADD COLUMN IF NOT EXISTS sales BIGINT;
ALTER TABLE dim_customer ADD COLUMN IF NOT EXISTS revenue NUMERIC(14, 2);

-- Facts ----------------------------------------------------------------------

-- A sale is identified by its source: (file_id, source_row) (DESIGN §3).
-- Compression is named per column, as DuckDB would choose it for these tables: a
-- file's rows share their file, branch and (nearly always) day, so those compress as
-- runs; counters and money as packed integers; keys derived from hashes do not
-- compress. Naming it spares the analysis of every method on every write.
-- PostgreSQL finds a file's rows (replaced, or loaded again) through a BRIN index.
CREATE TABLE IF NOT EXISTS fact_sale (
    file_id BIGINT NOT NULL {compression rle},
    source_row INTEGER NOT NULL {compression bitpacking},
    date_key INTEGER NOT NULL {compression rle},
    time_key SMALLINT NOT NULL {compression bitpacking},
    branch_key BIGINT NOT NULL {compression rle},
    payment_key SMALLINT NOT NULL {compression bitpacking},
    customer_key BIGINT {compression uncompressed},
    item_count SMALLINT NOT NULL {compression bitpacking},
    total NUMERIC(10, 2) NOT NULL {compression bitpacking}
);
{index fact_sale_file ON fact_sale USING brin (file_id)};

CREATE TABLE IF NOT EXISTS fact_sale_item (
    file_id BIGINT NOT NULL {compression rle},
    source_row INTEGER NOT NULL {compression bitpacking},
    line_number SMALLINT NOT NULL {compression bitpacking},
    product_key BIGINT NOT NULL {compression uncompressed},
    unit_price NUMERIC(10, 2) NOT NULL {compression bitpacking},
    date_key INTEGER NOT NULL {compression rle},  -- the sale's, so product questions need no join
    branch_key BIGINT NOT NULL {compression rle}
);
{index fact_sale_item_file ON fact_sale_item USING brin (file_id)};

-- Aggregates, one set per loaded file (so a replaced file's leave with it): what the
-- dashboard and the marts read instead of every line item. Exact, not sampled.

CREATE TABLE IF NOT EXISTS agg_product_day (
    file_id BIGINT NOT NULL,
    date_key INTEGER NOT NULL,
    branch_key BIGINT NOT NULL,
    product_key BIGINT NOT NULL,
    quantity INTEGER NOT NULL,
    revenue NUMERIC(12, 2) NOT NULL
);
{index agg_product_day_file ON agg_product_day USING brin (file_id)};
-- Sales holding the product at least once (a basket may hold it twice): together's n_p.
ALTER TABLE agg_product_day ADD COLUMN IF NOT EXISTS sales INTEGER;

-- Pairs of products bought in the same sale (a_key < b_key), per file: together's
-- n_ab (DESIGN §11), counted as each file loads so the question needs no self-join
-- of every line item.
CREATE TABLE IF NOT EXISTS agg_pair_day (
    file_id BIGINT NOT NULL,
    date_key INTEGER NOT NULL,
    branch_key BIGINT NOT NULL,
    a_key BIGINT NOT NULL,
    b_key BIGINT NOT NULL,
    sales INTEGER NOT NULL
);
{index agg_pair_day_file ON agg_pair_day USING brin (file_id)};

-- The same pairs per day for the whole chain: agg_pair_day added up over the branches,
-- kept in step by every load in the transaction that changes agg_pair_day (a batch's
-- pairs added, those of the versions it replaces taken away), so a question about
-- every branch reads each pair of a day once rather than once per branch.
CREATE TABLE IF NOT EXISTS agg_pair_date (
    date_key INTEGER NOT NULL,
    a_key BIGINT NOT NULL,
    b_key BIGINT NOT NULL,
    sales BIGINT NOT NULL
);
{unique_index agg_pair_date_key ON agg_pair_date (date_key, a_key, b_key)};

CREATE TABLE IF NOT EXISTS agg_sale_hour (
    file_id BIGINT NOT NULL,
    date_key INTEGER NOT NULL,
    branch_key BIGINT NOT NULL,
    hour SMALLINT NOT NULL,
    transactions INTEGER NOT NULL,
    items INTEGER NOT NULL,
    revenue NUMERIC(12, 2) NOT NULL
);
{index agg_sale_hour_file ON agg_sale_hour USING brin (file_id)};

-- Distinct customers (keyed hashes) per file, i.e. per branch and day.
CREATE TABLE IF NOT EXISTS agg_customer_day (
    file_id BIGINT NOT NULL,
    date_key INTEGER NOT NULL,
    branch_key BIGINT NOT NULL,
    customers INTEGER NOT NULL
);
{index agg_customer_day_file ON agg_customer_day USING brin (file_id)};

-- Each customer's weeks (Monday to Sunday) with a sale, chain-wide, with the Monday of
-- the week of their first sale ever (their cohort, as dim_customer.first_seen says), and
-- each customer's first and last day at each branch. Kept exact by every SQL load in
-- its transaction: the sales of the files it loads added, the customers of versions it
-- deletes counted again from the facts that remain. Weekly customers, cohorts and a
-- branch's repeat customers read these, a few million rows, instead of every sale.
CREATE TABLE IF NOT EXISTS agg_customer_week (
    customer_key BIGINT NOT NULL,
    monday DATE NOT NULL,
    cohort DATE NOT NULL,
    sales INTEGER NOT NULL
);
{unique_index agg_customer_week_key ON agg_customer_week (customer_key, monday)};

CREATE TABLE IF NOT EXISTS agg_customer_branch (
    customer_key BIGINT NOT NULL,
    branch_key BIGINT NOT NULL,
    first_key INTEGER NOT NULL,
    last_key INTEGER NOT NULL
);
{unique_index agg_customer_branch_key ON agg_customer_branch (customer_key, branch_key)};

-- Operations -----------------------------------------------------------------

CREATE TABLE IF NOT EXISTS etl_run (
    run_id BIGINT PRIMARY KEY,
    command VARCHAR(32) NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    status VARCHAR(16) NOT NULL,               -- running | succeeded | failed | stopped
    files_seen INTEGER NOT NULL DEFAULT 0,
    files_loaded INTEGER NOT NULL DEFAULT 0,
    files_failed INTEGER NOT NULL DEFAULT 0,
    files_skipped INTEGER NOT NULL DEFAULT 0,
    files_replaced INTEGER NOT NULL DEFAULT 0,
    rows_loaded BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0,
    bytes_read BIGINT NOT NULL DEFAULT 0,
    seconds DOUBLE PRECISION,
    error VARCHAR,
    version VARCHAR(32) NOT NULL
);

CREATE TABLE IF NOT EXISTS etl_file (
    file_id BIGINT PRIMARY KEY,
    location VARCHAR NOT NULL,             -- path or s3://bucket/key: the file's identity
    content_sha256 VARCHAR(64) NOT NULL,       -- the version
    size_bytes BIGINT NOT NULL,
    etag VARCHAR,
    status VARCHAR(16) NOT NULL,               -- loading | loaded | failed | skipped | replaced
    format VARCHAR,                        -- layout and encoding detected
    branch_id VARCHAR,
    business_date DATE,                    -- the day of its sales
    rows_read INTEGER,                     -- lines, header and blank lines included
    rows_loaded INTEGER,
    rows_rejected INTEGER,
    rows_ignored INTEGER,                  -- header and blank lines
    items_loaded INTEGER,
    seconds_read DOUBLE PRECISION,
    seconds_transform DOUBLE PRECISION,
    seconds_load DOUBLE PRECISION,
    copy_of BIGINT,                        -- skipped: same content as this file
    replaced_by BIGINT,                    -- replaced: by this newer version
    error VARCHAR,
    run_id BIGINT,                         -- the run that claimed (and processed) it
    discovered_at TIMESTAMP NOT NULL,
    claimed_at TIMESTAMP,
    processed_at TIMESTAMP,
    UNIQUE (location, content_sha256)
);
-- Upgrades of warehouses created by earlier versions: columns are only ever added.
ALTER TABLE etl_file ADD COLUMN IF NOT EXISTS claimed_at TIMESTAMP;
{index etl_file_content ON etl_file (content_sha256)};

CREATE TABLE IF NOT EXISTS etl_reject (
    file_id BIGINT NOT NULL,
    source_row INTEGER NOT NULL,
    reason_code VARCHAR(32) NOT NULL,
    detail VARCHAR,
    row_data VARCHAR,                      -- the row as written, personal data removed
    run_id BIGINT
);
{index etl_reject_file ON etl_reject (file_id)};

-- Seed rows.
INSERT INTO dim_time
SELECT (h * 100 + m)::SMALLINT, h::SMALLINT, m::SMALLINT,
       CASE WHEN h < 6 THEN 'night' WHEN h < 12 THEN 'morning' WHEN h < 14 THEN 'lunch'
            WHEN h < 17 THEN 'afternoon' WHEN h < 22 THEN 'evening' ELSE 'night' END
FROM generate_series(0, 23) AS hours(h), generate_series(0, 59) AS minutes(m)
WHERE NOT EXISTS (SELECT 1 FROM dim_time);

INSERT INTO dim_payment_method
SELECT v.payment_key, v.method FROM (VALUES (1, 'CASH'), (2, 'CARD')) AS v(payment_key, method)
WHERE NOT EXISTS (SELECT 1 FROM dim_payment_method);
