"""Transform: baskets to line items, each parsed once per distinct spelling.

A month of a 200-branch chain holds millions of basket items but only a few
hundred distinct item texts, so items are parsed in a small dictionary
(``stg_item_dict``) and joined back, instead of string-crunching every item.

V1 item: ``SIZE NAME - PRICE``; the price is split off at the last " - " and the
flavour at the first, so ``Large Flavoured latte - Vanilla - 2.85`` is size Large,
name "Flavoured latte", flavour Vanilla. Legacy V0 baskets are flat
``size,name,price`` triples with a possibly empty size. Names keep their case:
``Hot Chocolate`` and ``Hot chocolate`` are two products.
"""

from __future__ import annotations

from decimal import Decimal

from cafe_etl.engine import Engine
from cafe_etl.rules import EXPECTED_FIELDS, MAX_NAME_CHARS, SIZES, Layout

# A plain number (an amount or a count), which no product name or flavour is.
_NUMBER = r"\s*[-+£$€]?[0-9]+([.,][0-9]+)?\s*"

_SIZE_CASE = "CASE lower({x}) " + " ".join(f"WHEN '{s.lower()}' THEN '{s}'" for s in SIZES) + " END"

# stg_basket_text: each distinct basket spelling of the batch (regulars order the
# same things every day), numbered; stg_item: its items (V1) or size/name/price
# triples (V0).
_BASKETS = f"""
CREATE OR REPLACE TEMP TABLE stg_basket_text AS
SELECT row_number() OVER () AS basket_no, legacy, basket
FROM (SELECT DISTINCT s.layout = '{Layout.V0}' AS legacy, l.basket
      FROM stg_line l JOIN stg_shape s USING (idx)
      WHERE NOT l.blank AND l.n_fields = {EXPECTED_FIELDS})
"""

_ITEMS = """
CREATE OR REPLACE TEMP TABLE stg_item AS
WITH listed AS (
    SELECT basket_no, legacy,
           CASE WHEN legacy
                THEN list_transform(range(0, len(cells) // 3),
                                    lambda i: cells[3 * i + 1] || ',' || cells[3 * i + 2] || ',' || cells[3 * i + 3])
                ELSE cells END AS items
    FROM (SELECT basket_no, legacy, string_split(basket, ',') AS cells FROM stg_basket_text)
)
SELECT basket_no, legacy, generate_subscripts(items, 1)::INTEGER AS item_no, unnest(items) AS item_text
FROM listed
"""

_DICTIONARY = f"""
CREATE OR REPLACE TEMP TABLE stg_item_dict AS
WITH spelling AS (
    SELECT DISTINCT legacy, item_text FROM stg_item
), cut AS (
    SELECT legacy, item_text, trim(item_text, ' "') AS t,
           CASE WHEN legacy THEN trim(split_part(item_text, ',', 1), ' "') END AS v0_size,
           CASE WHEN legacy THEN trim(split_part(item_text, ',', 2), ' "')
                ELSE trim(left(t, length(t) - length(split_part(t, ' - ', -1)) - 3)) END AS head,
           CASE WHEN legacy THEN trim(split_part(item_text, ',', 3), ' "')
                ELSE trim(split_part(t, ' - ', -1)) END AS price_text
    FROM spelling
), sized AS (
    SELECT *,
           CASE WHEN legacy THEN {_SIZE_CASE.format(x="v0_size")}
                ELSE {_SIZE_CASE.format(x="split_part(head, ' ', 1)")} END AS size,
           CASE WHEN legacy OR size IS NULL THEN head
                ELSE trim(substr(head, length(split_part(head, ' ', 1)) + 2)) END AS product
    FROM cut
), named AS (
    SELECT *,
           trim(split_part(product, ' - ', 1)) AS name,
           nullif(trim(substr(product, length(split_part(product, ' - ', 1)) + 4)), '') AS flavour,
           to_money(price_text) AS price
    FROM sized
), judged AS (
    SELECT *,
           -- a name or flavour that is a number: a price written twice, say
           CASE WHEN regexp_full_match(name, '{_NUMBER}') THEN true
                WHEN flavour IS NULL THEN false
                ELSE list_bool_or(list_transform(string_split(flavour, ' - '),
                                                 lambda part: regexp_full_match(part, '{_NUMBER}')))
           END AS numeric_part
    FROM named
)
SELECT legacy, item_text, size, name, flavour, price,
       key_of(coalesce(size, '') || chr(31) || name || chr(31) || coalesce(flavour, '')) AS product_key,
       CASE
           WHEN is_missing(t) THEN 'BAD_ITEM'
           WHEN NOT legacy AND NOT contains(t, ' - ') THEN 'BAD_ITEM'
           WHEN legacy AND v0_size <> '' AND size IS NULL THEN 'BAD_ITEM'
           WHEN name = '' THEN 'BAD_ITEM'
           WHEN regexp_matches(head, '[0-9]([ -]?[0-9]){{11,}}') THEN 'BAD_ITEM'
           WHEN regexp_matches(head, '(^|- )[=+@]') OR unprintable(head) THEN 'BAD_ITEM'
           WHEN length(product) > {MAX_NAME_CHARS} THEN 'BAD_ITEM'
           WHEN numeric_part THEN 'BAD_ITEM'
           WHEN is_missing(price_text) THEN 'BAD_PRICE'
           WHEN price IS NULL THEN 'BAD_PRICE'
           WHEN price < 0 THEN 'BAD_PRICE'
           WHEN price > $max_price THEN 'BAD_PRICE'
       END AS reason,
       CASE
           WHEN is_missing(t) THEN 'an item of the basket is empty'
           WHEN NOT legacy AND NOT contains(t, ' - ')
               THEN format('item ''{{}}'' is not written SIZE NAME - PRICE', t)
           WHEN legacy AND v0_size <> '' AND size IS NULL THEN format('item ''{{}}'' has an unknown size', t)
           WHEN name = '' THEN format('item ''{{}}'' has no product name', t)
           -- A product name never holds a card-like number; the detail does not repeat it.
           WHEN regexp_matches(head, '[0-9]([ -]?[0-9]){{11,}}') THEN 'item name holds a long number (not shown)'
           WHEN regexp_matches(head, '(^|- )[=+@]') OR unprintable(head)
               THEN format('item ''{{}}'' is not a product name (formula, control or unreadable characters)',
                           regexp_replace(t, '[[:cntrl:]]', '?', 'g'))
           WHEN length(product) > {MAX_NAME_CHARS}
               THEN format('item name is {{}} characters long, more than {MAX_NAME_CHARS}: ''{{}}…''', length(product),
                           left(product, 40))
           WHEN numeric_part THEN format('item ''{{}}'' has a number where a name or flavour belongs', t)
           WHEN is_missing(price_text) THEN format('item ''{{}}'' has no price', t)
           WHEN price IS NULL THEN format('price ''{{}}'' of item ''{{}}'' is not an amount', price_text, name)
           WHEN price < 0 THEN format('price {{}} of item ''{{}}'' is negative', price_text, name)
           WHEN price > $max_price
               THEN format('price {{}} of item ''{{}}'' is above the plausible maximum {{}}', price_text, name,
                           $max_price)
       END AS detail
FROM judged
"""

# stg_basket_item: the items of every basket, parsed; stg_basket: per basket, the
# item count, the sum of prices and the first bad item.
_PRICED = """
CREATE OR REPLACE TEMP TABLE stg_basket_item AS
SELECT i.basket_no, i.item_no, d.product_key, d.price, d.reason, d.detail
FROM stg_item i JOIN stg_item_dict d USING (legacy, item_text)
"""

_TOTALS = """
CREATE OR REPLACE TEMP TABLE stg_basket AS
SELECT b.basket_no, b.legacy, b.basket, hash(b.basket) AS basket_hash, t.n_items, t.items_total, t.reason,
       t.detail
FROM stg_basket_text b
JOIN (SELECT basket_no, count(*) AS n_items, sum(price) AS items_total,
             arg_min(reason, item_no) FILTER (WHERE reason IS NOT NULL) AS reason,
             arg_min(detail, item_no) FILTER (WHERE reason IS NOT NULL) AS detail
      FROM stg_basket_item GROUP BY basket_no) t USING (basket_no)
"""


def transform(engine: Engine, max_price: Decimal) -> None:
    engine.run(_BASKETS)
    engine.run(_ITEMS)
    engine.run(_DICTIONARY, {"max_price": max_price})
    engine.run(_PRICED)
    engine.run(_TOTALS)
