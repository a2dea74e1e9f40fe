"""The FX table a user supplies (PURCHASES_FX_RATES): each refusal names the line and the fix."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from purchases.errors import InputError
from purchases.fx import load_fx_rates


def _refused(tmp_path: Path, rows: str) -> tuple[Path, str]:
    """The table of these rows under the header, and what loading it is refused with."""
    table = tmp_path / "fx.csv"
    table.write_text(f"currency,rate_to_aud,valid_from\n{rows}")
    with pytest.raises(InputError) as refused:
        load_fx_rates(table)
    return table, str(refused.value)


@pytest.mark.parametrize(("rate", "said"), [
    # Plain decimals both, refused before as "must be a plain decimal with at most 8 places".
    ("1e3", "must be a positive plain decimal of at most 10 integer digits and 8 decimal places"),
    ("100000000000", "of at most 10 integer digits"),
    ("1.123456789", "and 8 decimal places (DECIMAL(18,8))"),
    ("0", "rate_to_aud '0' must be > 0"),
    ("-0", "rate_to_aud '-0' must be > 0"),  # one answer for zero, however it is written
    ("-1.5", "rate_to_aud '-1.5' must be > 0"),
])
def test_a_rate_the_table_cannot_hold_is_refused_naming_the_line(
    tmp_path: Path, rate: str, said: str
) -> None:
    table, refusal = _refused(tmp_path, f"USD,1.5,2024-01-01\nEUR,{rate},2024-01-01\n")
    assert refusal.startswith(f"FX table {table}, line 3: ")
    assert said in refusal


def test_the_widest_rate_is_kept_exactly(tmp_path: Path) -> None:
    table = tmp_path / "fx.csv"
    table.write_text("currency,rate_to_aud,valid_from\nIDR,9999999999.12345678,2024-01-01\n")
    assert [r.rate_to_aud for r in load_fx_rates(table)] == [Decimal("9999999999.12345678")]


def test_leading_and_trailing_zeros_are_the_same_rate(tmp_path: Path) -> None:
    table = tmp_path / "fx.csv"
    table.write_text("currency,rate_to_aud,valid_from\nUSD,00000000001.500000000,2024-01-01\n")
    [rate] = load_fx_rates(table)
    assert rate.rate_to_aud == Decimal("1.5") and rate.rate_to_aud.as_tuple().exponent >= -8


@pytest.mark.parametrize(("row", "said"), [
    ("USD,1.5,2024-01-01,extra", "4 field(s), the header has 3"),  # was an AttributeError
    ("USD,1.5,2024-01-01,a,b", "5 field(s), the header has 3"),
    ("USD,1.5", "2 field(s), the header has 3"),
])
def test_a_row_of_the_wrong_width_is_refused_naming_its_line(
    tmp_path: Path, row: str, said: str
) -> None:
    # The blank line is skipped but counted: the line named is the one in an editor.
    table, refusal = _refused(tmp_path, f"EUR,1.6,2024-01-01\n\n{row}\n")
    assert refusal == f"FX table {table}, line 4: {said}"
