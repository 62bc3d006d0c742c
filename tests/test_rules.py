"""The processing rules of DESIGN §3, line by line, through the engine's stages."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from cafe_etl.config import Rules
from cafe_etl.engine import EnginePool
from cafe_etl.pipeline import clean, extract, transform, validate

GOOD = ('25/08/2021 09:00,Leeds,Ann Lee,"Regular Latte - 2.15, Large Flavoured latte - Vanilla - 2.85",5.0,CARD,'
        "4111111111111111")


@pytest.fixture(scope="module")
def engine():
    with EnginePool(workers=1, threads=1, memory_limit="256MB") as pool:
        yield pool.engines[0]


def judge(engine, *texts: str, rules: Rules | None = None):
    """Per file: the FileCounts, and per line (outcome, reason, detail)."""
    rules = rules or Rules()
    extract.extract(engine, [extract.Document(t, None) for t in texts])
    clean.clean(engine, b"k" * 32)
    transform.transform(engine, rules.max_item_price)
    counts = validate.validate(engine, rules, datetime(2026, 1, 1))
    lines = engine.rows("SELECT idx, line_no, outcome, reason, detail FROM stg_check ORDER BY idx, line_no")
    per_file = {}
    for idx, _line, outcome, reason, detail in lines:
        per_file.setdefault(idx, []).append((outcome, reason, detail))
    return counts, per_file


def outcomes(engine, text: str) -> list[tuple]:
    return [(o, r) for o, r, _ in judge(engine, text)[1][1]]


def items(engine, text: str) -> list[tuple]:
    judge(engine, text)
    return engine.rows(
        """SELECT d.size, d.name, d.flavour, i.price FROM stg_check c
           JOIN stg_basket_item i ON i.basket_no = c.basket_no
           JOIN (SELECT DISTINCT product_key, size, name, flavour FROM stg_item_dict) d USING (product_key)
           WHERE c.outcome = 'sale' ORDER BY c.line_no, i.item_no""")


def test_a_good_row(engine):
    assert outcomes(engine, GOOD) == [("sale", None)]


def test_items_split_price_at_last_and_flavour_at_first_separator(engine):
    line = ('25/08/2021 09:00,Leeds,Ann,"Large Frappes - Strawberries & Cream - 3.25, Regular Speciality Tea - '
            'English breakfast - 1.30, Regular Hot Chocolate - 1.40, Large Hot chocolate - 2.90",8.85,CASH,')
    assert items(engine, line) == [
        ("Large", "Frappes", "Strawberries & Cream", Decimal("3.25")),
        ("Regular", "Speciality Tea", "English breakfast", Decimal("1.30")),
        ("Regular", "Hot Chocolate", None, Decimal("1.40")),
        ("Large", "Hot chocolate", None, Decimal("2.90")),
    ]


def test_legacy_triples_with_empty_sizes(engine):
    line = ('2021-02-23 09:02:27,Isle of Wight,Amber Roberts,",Frappes - Coffee,2.75,Large,Latte,2.45,,Babyccino,0.0"'
            ',CARD,5.20,"discover,6011893765428836"')
    judged = judge(engine, line)
    assert judged[0][1].layout == "v0-legacy"
    assert items(engine, line) == [
        (None, "Frappes", "Coffee", Decimal("2.75")),
        ("Large", "Latte", None, Decimal("2.45")),
        (None, "Babyccino", None, Decimal("0.00")),  # free, and valid
    ]


def test_repeated_items_are_separate_lines(engine):
    line = '25/08/2021 09:00,Leeds,Ann,"Large Latte - 2.45, Large Latte - 2.45",4.9,CASH,'
    assert len(items(engine, line)) == 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH", "BAD_FIELD_COUNT"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH,,extra", "BAD_FIELD_COUNT"),
        ("31/02/2024 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH,", "BAD_TIMESTAMP"),
        ("25/13/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH,", "BAD_TIMESTAMP"),
        ("25/08/1999 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH,", "BAD_TIMESTAMP"),
        ("25/08/2031 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,CASH,", "BAD_TIMESTAMP"),
        ("25/08/2021 09:00,N/A,Ann,Regular Latte - 2.15,2.15,CASH,", "MISSING_BRANCH"),
        ("25/08/2021 09:00, ,Ann,Regular Latte - 2.15,2.15,CASH,", "MISSING_BRANCH"),
        ("25/08/2021 09:00,Leeds,Ann,,2.15,CASH,", "EMPTY_BASKET"),
        ("25/08/2021 09:00,Leeds,Ann,null,2.15,CASH,", "EMPTY_BASKET"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte 2.15,2.15,CASH,", "BAD_ITEM"),
        ("25/08/2021 09:00,Leeds,Ann,Regular - 2.15,2.15,CASH,", "BAD_ITEM"),
        ('25/08/2021 09:00,Leeds,Ann,"Regular Latte - 2.15, ",2.15,CASH,', "BAD_ITEM"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - abc,2.15,CASH,", "BAD_PRICE"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - -2.15,-2.15,CASH,", "BAD_PRICE"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 99999.99,99999.99,CASH,", "BAD_PRICE"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,,CASH,", "BAD_TOTAL"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,£2.15,CASH,", "BAD_TOTAL"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.16,CASH,", "TOTAL_MISMATCH"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,BITCOIN,", "BAD_PAYMENT"),
        ("25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.15,N/A,", "BAD_PAYMENT"),
    ],
)
def test_each_reason_code(engine, line, reason):
    # Two good rows first, so the file's branch and layout are clear.
    text = "\n".join([GOOD, GOOD.replace("09:00", "09:01"), line]) + "\n"
    _, per_line = judge(engine, text)
    assert per_line[1][2][0:2] == ("reject", reason), per_line[1][2]
    assert per_line[1][2][2]  # every reject says why


def test_detail_messages_are_specific(engine):
    text = "\n".join([GOOD, "25/08/2021 09:05,Leeds,Ann,Regular Latte - 2.15,2.20,CASH,",
                      "25/08/2021 09:06,York,Ann,Regular Latte - 2.15,2.15,CASH,", GOOD]) + "\n"
    _, per_line = judge(engine, text)
    details = [d for _, _, d in per_line[1]]
    assert details[1] == "total 2.20 but the items add up to 2.15"
    assert details[2] == "branch 'York' differs from the file's branch 'leeds'"
    assert details[3] == "same bytes as line 1"


def test_zero_price_and_one_penny_tolerance(engine):
    text = "25/08/2021 09:00,Leeds,Ann,Regular Latte - 0.00,0,CASH,\n"
    assert outcomes(engine, text) == [("sale", None)]


def test_duplicates_are_byte_for_byte_only(engine):
    same_after_pii = GOOD.replace("Ann Lee", "Bob Roe")  # identical once personal data is removed
    text = "\n".join([GOOD, same_after_pii, GOOD]) + "\n"
    assert outcomes(engine, text) == [("sale", None), ("sale", None), ("reject", "DUPLICATE_ROW")]


def test_branch_identity_ignores_case_and_spaces(engine):
    text = "\n".join([GOOD, GOOD.replace("Leeds", "leeds ").replace("09:00", "09:01"),
                      GOOD.replace("Leeds", "LEEDS").replace("09:00", "09:02")]) + "\n"
    assert outcomes(engine, text) == [("sale", None)] * 3
    names = engine.rows("SELECT branch_id, name FROM stg_branch_name")
    assert names == [("leeds", "Leeds")]


def test_header_detected_from_content_with_any_wording(engine):
    for header in ("Timestamp,Location,Customer Name,Items Ordered,Total Amount,Payment Method,Card Number",
                   "date,branch_name,customer,orders,total_price,payment_method,card_number",
                   "when,where,who,what,how much,how,card"):
        counts, per_line = judge(engine, f"{header}\n{GOOD}\n")
        assert [o for o, _, _ in per_line[1]] == ["header", "sale"]
        assert counts[1].header_lines == 1


def test_first_line_is_data_when_it_looks_like_data(engine):
    counts, per_line = judge(engine, f"{GOOD}\n{GOOD.replace('09:00', '09:05')}\n")
    assert [o for o, _, _ in per_line[1]] == ["sale", "sale"] and counts[1].header_lines == 0


def test_layout_comes_from_rows_not_from_a_misleading_header(engine):
    """A legacy export under a V1-style header: the rows decide."""
    header = "Timestamp,Location,Customer Name,Items Ordered,Total Amount,Payment Method,Card Number"
    rows = ['2021-02-23 09:00:48,Isle of Wight,Morgan Berka,"Large,Latte,2.45",CASH,2.45,None',
            '2021-02-23 09:01:45,Isle of Wight,William Perdomo,"Large,Latte,2.45",CARD,2.45,"visa,4111111111111111"']
    counts, per_line = judge(engine, "\n".join([header, *rows]) + "\n")
    assert counts[1].layout == "v0-legacy"
    assert [o for o, _, _ in per_line[1]] == ["header", "sale", "sale"]


def test_variants_need_no_flag(engine):
    crlf = f"{GOOD}\r\n{GOOD.replace('09:00', '09:01')}\r\n"
    padded = ('25/08/2021 09:00 ,Leeds ,Ann Lee     ,"Regular Latte - 2.15, Large Latte - 2.45"      ,4.6   ,CARD '
              ',4111111111111111\n')
    unpadded_date = "9/5/2023 9:00,Leeds,Ann,Regular Latte - 2.15,2.15,CARD,5.49417E+15"
    no_final_newline = GOOD
    trailing_space_line = f"{GOOD}\n "
    every_field_quoted = ('"25/08/2021 09:00","Leeds","Ann ""Nan"" Lee","Regular Latte - 2.15, Large Latte - 2.45",'
                          '"4.6","CARD","4111"')
    name_with_comma = '25/08/2021 09:00,Leeds,"Lee, Ann","Regular Latte - 2.15, Large Latte - 2.45",4.6,CARD,4111'
    name_with_comma_one_item = '25/08/2021 09:00,Leeds,"Lee, Ann",Regular Latte - 2.15,2.15,CASH,'
    for text in (crlf.replace("\r\n", "\n"), padded, unpadded_date, no_final_newline, trailing_space_line,
                 every_field_quoted, name_with_comma, name_with_comma_one_item):
        counts, per_line = judge(engine, text)
        assert all(o in ("sale", "blank") for o, _, _ in per_line[1]), (text, per_line)
        assert counts[1].loaded >= 1


@pytest.mark.parametrize(
    ("written", "meant"),
    [("9/5/2023 9:00", datetime(2023, 5, 9, 9, 0)), ("09/05/2023 09:00:30", datetime(2023, 5, 9, 9, 0, 30)),
     ("2023-05-09 09:00:30", datetime(2023, 5, 9, 9, 0, 30)), ("2023-05-09T09:00:30", datetime(2023, 5, 9, 9, 0, 30)),
     ("2023/05/09 09:00", datetime(2023, 5, 9, 9, 0))],
)
def test_timestamps_are_day_first_or_year_first(engine, written, meant):
    judge(engine, f"{written},Leeds,Ann,Regular Latte - 2.15,2.15,CASH,\n")
    (sold_at,) = engine.rows("SELECT sold_at FROM stg_check")[0]
    assert sold_at == meant


def test_customer_key_is_the_keyed_hash_of_normalised_name_and_card(engine):
    import hashlib
    import hmac

    secret = b"k" * 32
    text = "\n".join([
        "25/08/2021 09:00,Leeds,  Ann   Lee ,Regular Latte - 2.15,2.15,CARD,4111 1111 1111 1111",
        "25/08/2021 09:01,Leeds,ANN LEE,Regular Latte - 2.15,2.15,CARD,4111111111111111",
        "25/08/2021 09:02,Leeds,Ann Lee,Regular Latte - 2.15,2.15,CASH,4111111111111111",
        "25/08/2021 09:03,Leeds,N/A,Regular Latte - 2.15,2.15,CASH,",
    ]) + "\n"
    judge(engine, text)
    keys = [k for (k,) in engine.rows("SELECT customer_key FROM stg_check ORDER BY line_no")]

    def expected(identity: str) -> int:
        return int(hmac.new(secret, identity.encode(), hashlib.sha256).hexdigest()[:15], 16)

    assert keys == [expected("ann lee\x004111111111111111")] * 2 + [expected("ann lee\x00"), None]


def test_a_file_of_eight_fields_is_not_a_branch_export(engine):
    counts, _ = judge(engine, "1,2,3,4,5,6,7,8\n" * 5)
    assert validate.verdict(counts[1], 5) == "7 fields expected, found 8 in 100% of rows: not a branch export"


def test_a_file_with_only_bad_rows_fails_with_its_reasons(engine):
    bad = "25/08/2021 09:00,Leeds,Ann,Regular Latte - 2.15,2.16,CASH,\n"
    counts, _ = judge(engine, bad)
    assert validate.verdict(counts[1], 1) == "no loadable row: all 1 rows rejected (TOTAL_MISMATCH 1)"


def test_accounting_check_catches_a_lost_line(engine):
    counts, _ = judge(engine, GOOD + "\n")
    assert validate.verdict(counts[1], 1) is None
    assert validate.verdict(counts[1], 2).startswith("accounting check failed: 2 lines read")


def test_rejected_rows_keep_no_personal_data(engine):
    text = "\n".join([GOOD, "25/08/2021 09:00,Leeds,Zed Quux,Regular Latte - 2.15,9.99,CARD,5500005555555559",
                      "25/08/2021 09:00,Leeds,Zed Quux,5500005555555559"]) + "\n"
    judge(engine, text)
    rows = engine.rows("SELECT row_data FROM stg_check WHERE outcome = 'reject' ORDER BY line_no")
    assert rows == [("25/08/2021 09:00,Leeds,,Regular Latte - 2.15,9.99,CARD,",),
                    ("25/08/2021 09:00,<removed>,<removed>,<number removed>",)]


def _checked(engine, texts: list[str], *, collide: bool = False) -> list[tuple]:
    """Every column of ``stg_check`` for ``texts``; ``collide`` gives two customers and two
    baskets the same hash, as a 64-bit hash may (once in billions of batches)."""
    rules = Rules()
    extract.extract(engine, [extract.Document(t, None) for t in texts])
    clean.clean(engine, b"k" * 32)
    transform.transform(engine, rules.max_item_price)
    if collide:
        engine.run("UPDATE stg_customer SET identity_hash = 7 WHERE identity IN "
                   "(SELECT identity FROM stg_customer ORDER BY identity LIMIT 2)")
        engine.run("UPDATE stg_basket SET basket_hash = 7 WHERE basket_no IN "
                   "(SELECT basket_no FROM stg_basket ORDER BY basket_no LIMIT 2)")
    validate.validate(engine, rules, datetime(2026, 1, 1))
    return engine.rows("SELECT * FROM stg_check ORDER BY idx, line_no")


def test_rows_find_the_same_basket_and_customer_by_hash_as_by_text(engine, monkeypatch):
    from tests.conftest import FIXTURES, SAMPLES

    hostile = FIXTURES / "hostile"

    texts = [p.read_text(errors="replace") for p in sorted(SAMPLES.rglob("*.csv")) + sorted(hostile.glob("*.csv"))]
    by_hash = _checked(engine, texts)
    monkeypatch.setattr(validate, "_HASHES_UNIQUE", "SELECT false")
    by_text = _checked(engine, texts)
    assert by_hash == by_text
    assert sum(1 for row in by_hash if row[-4] == "sale") > 4000  # outcome: most rows are sales


def test_a_hash_shared_by_two_customers_or_baskets_falls_back_to_the_text(engine):
    texts = [GOOD + "\n25/08/2021 09:01,Leeds,Bo Ray,Regular Latte - 2.15,2.15,CASH,\n"
             "25/08/2021 09:02,Leeds,Cy Day,Large Latte - 2.45,2.45,CASH,\n"]
    expected = _checked(engine, texts)
    assert len({row[8] for row in expected}) == 3  # three customers, three keys
    assert _checked(engine, texts, collide=True) == expected
