"""DESIGN §3 row rules: one crafted row per reason code, standardisation, and warnings."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from conftest import HEADER
from purchases.contract import DEFAULT_MAX_RECORD_BYTES, RAW_PREFIX_BYTES, Reason
from purchases.orchestrator import RunFailed

GOOD = "1,John,Doe,john@example.com,100,2024-01-10,100.00,USD"


def fields(**override: str) -> str:
    base = dict(
        customer_id="1",
        first_name="John",
        last_name="Doe",
        email="john@example.com",
        purchase_id="100",
        purchase_date="2024-01-10",
        amount="100.00",
        currency="USD",
    )
    base.update(override)
    return ",".join(base.values())


CASES = [
    ("1,John,Doe", Reason.MALFORMED_ROW),
    (GOOD + ",extra", Reason.MALFORMED_ROW),
    (fields(first_name="J" * DEFAULT_MAX_RECORD_BYTES), Reason.RECORD_TOO_LARGE),
    (fields(customer_id=""), Reason.MISSING_CUSTOMER_ID),
    (fields(customer_id="   "), Reason.MISSING_CUSTOMER_ID),
    (fields(customer_id="abc"), Reason.INVALID_CUSTOMER_ID),
    (fields(customer_id="4.0"), Reason.INVALID_CUSTOMER_ID),
    (fields(customer_id="0"), Reason.INVALID_CUSTOMER_ID),
    (fields(customer_id="-3"), Reason.INVALID_CUSTOMER_ID),
    (fields(customer_id="9223372036854775808"), Reason.INVALID_CUSTOMER_ID),
    (fields(purchase_id=""), Reason.MISSING_PURCHASE_ID),
    (fields(purchase_id="1e3"), Reason.INVALID_PURCHASE_ID),
    (fields(purchase_id="x12"), Reason.INVALID_PURCHASE_ID),
    (fields(purchase_date=""), Reason.MISSING_PURCHASE_DATE),
    (fields(purchase_date="2024-02-30"), Reason.INVALID_PURCHASE_DATE),
    (fields(purchase_date="2024-1-5"), Reason.INVALID_PURCHASE_DATE),
    (fields(purchase_date="15/01/2024"), Reason.INVALID_PURCHASE_DATE),
    (fields(purchase_date="2024-01-17"), Reason.FUTURE_PURCHASE_DATE),
    (fields(amount=""), Reason.MISSING_AMOUNT),
    (fields(amount="$5"), Reason.INVALID_AMOUNT),
    (fields(amount='"1,000"'), Reason.INVALID_AMOUNT),
    (fields(amount="1e3"), Reason.INVALID_AMOUNT),
    (fields(amount=".5"), Reason.INVALID_AMOUNT),
    (fields(amount="5."), Reason.INVALID_AMOUNT),
    (fields(amount="1.00000"), Reason.INVALID_AMOUNT),
    (fields(amount="-12.50"), Reason.NEGATIVE_AMOUNT),
    (fields(amount="1000000.0001"), Reason.AMOUNT_TOO_LARGE),
    # More digits than even DECIMAL(38,4) holds: still a plain decimal, so still too large
    # (it was invalid_amount from 35 digits on), and negative before that.
    (fields(amount="9" * 35), Reason.AMOUNT_TOO_LARGE),
    (fields(amount="9" * 60 + ".25"), Reason.AMOUNT_TOO_LARGE),
    (fields(amount="-" + "9" * 35), Reason.NEGATIVE_AMOUNT),
    (fields(amount="9" * 35 + "x"), Reason.INVALID_AMOUNT),
    (fields(currency=""), Reason.MISSING_CURRENCY),
    (fields(currency="XYZ"), Reason.UNKNOWN_CURRENCY),
]


@pytest.mark.parametrize(
    ("row", "reason"), CASES, ids=[f"{r}:{i}" for i, (_, r) in enumerate(CASES)]
)
def test_each_reason_code(harness, row: str, reason: Reason) -> None:
    harness.land("one.csv", HEADER + row + "\n")
    record = harness.run()
    assert record.status == "succeeded"
    quarantined = harness.quarantine()
    assert [q["reason"] for q in quarantined] == [reason.value]
    assert harness.silver() == []
    assert quarantined[0]["source_file"].endswith("one.csv")
    assert quarantined[0]["ingestion_date"] == date(2024, 1, 15)
    if reason is Reason.MALFORMED_ROW:
        assert quarantined[0]["raw_line"] == row
        assert quarantined[0]["line_number"] == 2
    elif reason is Reason.RECORD_TOO_LARGE:  # a prefix of the record's text, no fields
        assert quarantined[0]["raw_line"] == row[:RAW_PREFIX_BYTES]
        assert quarantined[0]["line_number"] == 2
        assert quarantined[0]["customer_id"] is None
    else:
        # raw value kept (an empty CSV field reads as NULL)
        assert (quarantined[0]["customer_id"] or "") == row.split(",")[0]


def test_every_reason_code_is_covered() -> None:
    covered = {reason for _, reason in CASES} | {Reason.CONFLICTING_DUPLICATE}
    assert covered == set(Reason)


def test_first_failing_reason_wins(harness) -> None:
    harness.land("one.csv", HEADER + fields(customer_id="x", amount="-1", currency="") + "\n")
    harness.run()
    assert [q["reason"] for q in harness.quarantine()] == ["invalid_customer_id"]


def test_boundaries_that_are_accepted(harness) -> None:
    rows = [
        fields(customer_id="+42", purchase_id="1"),
        fields(customer_id="007", purchase_id="2"),
        fields(customer_id="9223372036854775807", purchase_id="3"),
        fields(purchase_id="4", purchase_date="2024-01-16"),  # ingestion date + 1 day
        fields(purchase_id="5", amount="-0"),
        fields(purchase_id="6", amount="1000000"),
        fields(purchase_id="7", amount="0.0001", currency="aud"),
        fields(purchase_id="8", amount="10.5"),
    ]
    harness.land("ok.csv", HEADER + "\n".join(rows) + "\n")
    harness.run()
    silver = {r["purchase_id"]: r for r in harness.silver()}
    assert harness.quarantine() == []
    assert silver[1]["customer_id"] == 42
    assert silver[2]["customer_id"] == 7
    assert silver[3]["customer_id"] == 2**63 - 1
    assert silver[4]["purchase_date"] == date(2024, 1, 16)
    assert silver[5]["amount"] == Decimal("0") and silver[5]["amount_aud"] == Decimal("0.00")
    assert silver[6]["amount_aud"] == Decimal("1500000.00")
    assert silver[7]["currency"] == "AUD" and silver[7]["amount_aud"] == Decimal("0.00")
    assert silver[8]["amount"] == Decimal("10.5000") and silver[8]["amount_aud"] == Decimal("15.75")


def test_original_transformer_cases(harness) -> None:
    """USD 100.00 -> 150.00 AUD at the default rate; full_name; ingestion_date = landing date."""
    harness.land("orig.csv", HEADER + GOOD + "\n", day="2024-01-15")
    harness.run()
    [row] = harness.silver()
    assert row["amount_aud"] == Decimal("150.00")
    assert row["rate_to_aud"] == Decimal("1.50000000")
    assert row["full_name"] == "John Doe"
    assert row["ingestion_date"] == date(2024, 1, 15)


def test_standardisation(harness) -> None:
    row = (
        ' 5 ,"  Mary\t  Ann ",  van der  Berg ," Mary@Example.COM ", 200 , 2024-01-10 , 1.5 , usd '
    )
    harness.land("std.csv", HEADER + row + "\n")
    harness.run()
    [s] = harness.silver()
    assert (s["customer_id"], s["purchase_id"]) == (5, 200)
    assert s["first_name"] == "Mary Ann"
    assert s["last_name"] == "van der Berg"  # names are not re-cased
    assert s["full_name"] == "Mary Ann van der Berg"
    assert s["email"] == "mary@example.com"
    assert s["currency"] == "USD"
    assert s["amount_aud"] == Decimal("2.25")


def test_unicode_whitespace_is_trimmed(harness) -> None:
    row = "1,\u00a0Zoë\u2003,Ng,z@x.io,300,2024-01-10,\u00a05.00,AUD"
    harness.land("ws.csv", HEADER + row + "\n")
    harness.run()
    [s] = harness.silver()
    assert s["first_name"] == "Zoë"
    assert s["amount"] == Decimal("5.0000")


def test_invalid_email_keeps_the_purchase(harness) -> None:
    rows = [fields(purchase_id="1", email="not-an-email"), fields(purchase_id="2", email="")]
    harness.land("mail.csv", HEADER + "\n".join(rows) + "\n")
    record = harness.run()
    silver = harness.silver()
    assert [r["email"] for r in silver] == [None, None]
    assert harness.quarantine() == []
    [f] = record.files
    assert f["invalid_emails"] == 1  # an absent email is not a warning
    assert f["accepted"] == 2


def test_empty_names_become_null(harness) -> None:
    harness.land("names.csv", HEADER + fields(first_name=" ", last_name="") + "\n")
    harness.run()
    [s] = harness.silver()
    assert s["first_name"] is None and s["last_name"] is None and s["full_name"] is None


def test_fx_rate_is_the_latest_valid_from(harness, tmp_path) -> None:
    fx = tmp_path / "fx.csv"
    fx.write_text(
        "currency,rate_to_aud,valid_from\nAUD,1,2000-01-01\n"
        "USD,1.40000000,2000-01-01\nUSD,1.60000000,2024-01-10\n"
    )
    harness.settings = harness.settings.model_copy(update={"fx_rates": fx})
    rows = [
        fields(purchase_id="1", purchase_date="2024-01-09"),
        fields(purchase_id="2", purchase_date="2024-01-10"),
        fields(purchase_id="3", purchase_date="1999-12-31"),
    ]
    harness.land("fx.csv", HEADER + "\n".join(rows) + "\n")
    harness.run()
    silver = {r["purchase_id"]: r["amount_aud"] for r in harness.silver()}
    assert silver == {1: Decimal("140.00"), 2: Decimal("160.00")}
    assert [q["reason"] for q in harness.quarantine()] == ["unknown_currency"]


def test_half_up_rounding_to_the_cent(harness, tmp_path) -> None:
    fx = tmp_path / "fx.csv"
    fx.write_text("currency,rate_to_aud,valid_from\nAUD,1,2000-01-01\nUSD,1.5,2000-01-01\n")
    harness.settings = harness.settings.model_copy(update={"fx_rates": fx})
    rows = [
        fields(purchase_id="1", amount="0.0010"),  # 0.0015 -> 0.00
        fields(purchase_id="2", amount="0.0050"),  # 0.0075 -> 0.01
        fields(purchase_id="3", amount="0.0100", currency="AUD"),
        fields(purchase_id="4", amount="1.0050", currency="AUD"),
    ]  # 1.005 -> 1.01
    harness.land("round.csv", HEADER + "\n".join(rows) + "\n")
    harness.run()
    got = {r["purchase_id"]: r["amount_aud"] for r in harness.silver()}
    assert got == {1: Decimal("0.00"), 2: Decimal("0.01"), 3: Decimal("0.01"), 4: Decimal("1.01")}


def test_an_aud_amount_beyond_the_serving_type_is_rejected_not_a_failed_run(
    harness, tmp_path
) -> None:
    """Amounts are capped in their own currency; a high rate can still take one past
    DECIMAL(18,2) AUD. That row is amount_too_large; the rest of the file goes on."""
    fx = tmp_path / "fx.csv"
    fx.write_text("currency,rate_to_aud,valid_from\nZZZ,9999999999.99999999,2000-01-01\n")
    harness.settings = harness.settings.model_copy(
        update={"fx_rates": fx, "max_amount": Decimal("99999999999999")})
    rows = [
        fields(purchase_id="1", amount="1000000", currency="ZZZ"),  # 9999999999999999.99
        fields(purchase_id="2", amount="1000000.0001", currency="ZZZ"),  # rounds to 10^16
        fields(purchase_id="3", amount="99999999999.9999", currency="ZZZ"),
    ]
    harness.land("big.csv", HEADER + "\n".join(rows) + "\n")
    record = harness.run()
    assert record.status == "succeeded"
    assert {r["purchase_id"]: r["amount_aud"] for r in harness.silver()} == {
        1: Decimal("9999999999999999.99")}
    assert sorted((q["purchase_id"], q["reason"]) for q in harness.quarantine()) == [
        ("2", "amount_too_large"), ("3", "amount_too_large")]


def test_a_customer_total_beyond_the_serving_type_fails_the_run_naming_the_customer(
    harness,
) -> None:
    """Rows each within a raised PURCHASES_MAX_AMOUNT can add up, over two batches, past what
    DECIMAL(18,2) holds: the run fails naming the customer and the setting (not DuckDB's cast
    error), nothing of the batch is served, and lowering the setting lets it through."""
    def totals() -> dict[int, Decimal]:
        return {c: row["total_spent_aud"] for c, row in harness.summary().items()}

    raised = harness.settings.model_copy(update={"max_amount": Decimal("99999999999999")})
    harness.settings = raised
    big = [fields(customer_id="7", purchase_id=str(i), amount="99999999999999", currency="AUD")
           for i in range(1, 61)]  # 5999999999999940.00 AUD
    harness.land("first.csv", HEADER + "\n".join(big) + "\n", day="2024-01-15")
    assert harness.run().status == "succeeded"
    more = [fields(customer_id="7", purchase_id=str(i), amount="99999999999999", currency="AUD")
            for i in range(61, 101)]  # then 9999999999999900.00, within the type
    more.append(fields(customer_id="7", purchase_id="101", amount="100.01", currency="AUD"))
    more.append(fields(customer_id="8", purchase_id="102", amount="1.00", currency="AUD"))
    harness.land("second.csv", HEADER + "\n".join(more) + "\n", day="2024-01-16")
    with pytest.raises(RunFailed) as failed:
        harness.run()
    assert (
        "failed in step silver_to_gold: PermanentError: customer 7: total_spent_aud would pass "
        "9999999999999999.99 AUD, the most the serving table holds (DECIMAL(18,2)); purchases "
        "that large pass only a raised PURCHASES_MAX_AMOUNT (now 99999999999999): lower it to "
        "reject them as amount_too_large") in str(failed.value)
    assert totals() == {7: Decimal("5999999999999940.00")}
    harness.settings = raised.model_copy(update={"max_amount": Decimal("1000")})
    assert harness.run().status == "succeeded"
    assert totals() == {7: Decimal("6000000000000040.01"), 8: Decimal("1.00")}
    assert [q["purchase_id"] for q in harness.quarantine()] == [str(i) for i in range(61, 101)]


def test_email_with_inner_unicode_whitespace_is_invalid(harness) -> None:
    harness.land("mail.csv", HEADER + fields(email="ann\u00a0lee@x.io") + "\n")
    record = harness.run()
    assert harness.silver()[0]["email"] is None
    assert record.files[0]["invalid_emails"] == 1
