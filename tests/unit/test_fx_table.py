"""The FX table a user supplies (PURCHASES_FX_RATES): each refusal names the line and the fix."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from purchases.errors import InputError
from purchases.fx import load_fx_rates


@pytest.mark.parametrize(("rate", "said"), [
    # Plain decimals both, refused before as "must be a plain decimal with at most 8 places".
    ("-1", "must be a positive plain decimal of at most 10 integer digits and 8 decimal places"),
    ("100000000000", "of at most 10 integer digits"),
    ("1.123456789", "and 8 decimal places (DECIMAL(18,8))"),
    ("0", "rate_to_aud must be > 0"),
])
def test_a_rate_the_table_cannot_hold_is_refused_naming_the_line(
    tmp_path: Path, rate: str, said: str
) -> None:
    table = tmp_path / "fx.csv"
    table.write_text(f"currency,rate_to_aud,valid_from\nUSD,1.5,2024-01-01\nEUR,{rate},2024-01-01\n")
    with pytest.raises(InputError) as refused:
        load_fx_rates(table)
    assert str(refused.value).startswith(f"FX table {table}, line 3: ")
    assert said in str(refused.value)


def test_the_widest_rate_is_kept_exactly(tmp_path: Path) -> None:
    table = tmp_path / "fx.csv"
    table.write_text("currency,rate_to_aud,valid_from\nIDR,9999999999.12345678,2024-01-01\n")
    assert [r.rate_to_aud for r in load_fx_rates(table)] == [Decimal("9999999999.12345678")]
