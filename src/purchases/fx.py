"""FX rates to AUD: loading and validating the rate table (DESIGN §3, Currency).

The shipped table (``purchases/data/fx_rates.csv``) is ILLUSTRATIVE ONLY: fixed rates, USD 1.5
as in the original design. Point PURCHASES_FX_RATES at your own table for real use.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

from purchases.errors import InputError

# Leading zeros and trailing decimal zeros are the same value, which DECIMAL(18,8) holds.
_RATE = re.compile(r"^-?0*[0-9]{1,10}(\.[0-9]{1,8}0*)?$")


@dataclass(frozen=True)
class FxRate:
    currency: str
    rate_to_aud: Decimal
    valid_from: date


def default_fx_path() -> Path:
    return Path(str(resources.files("purchases") / "data" / "fx_rates.csv"))


def load_fx_rates(path: Path | None = None) -> list[FxRate]:
    """Read and validate an FX table; the rate used for a purchase is the latest valid_from.

    Raises:
        InputError: naming the file, line and field that is wrong.
    """
    path = path or default_fx_path()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"FX table {path}: cannot read it ({exc.__class__.__name__})") from exc
    reader = csv.DictReader(text.splitlines())
    header = {(h or "").strip().lower() for h in reader.fieldnames or []}
    missing = {"currency", "rate_to_aud", "valid_from"} - header
    if missing:
        raise InputError(f"FX table {path}: missing column(s) {', '.join(sorted(missing))}")
    rates: list[FxRate] = []
    seen: set[tuple[str, date]] = set()
    width = len(reader.fieldnames or [])
    for raw in reader:
        line = reader.line_num  # the physical line: blank lines are skipped but counted
        fields = width + len(raw.get(None) or []) - sum(v is None for v in raw.values())
        if fields != width:  # DictReader files extras under None and fills gaps with None
            raise InputError(f"FX table {path}, line {line}: {fields} field(s), the header has "
                             f"{width}")
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        currency = row["currency"].upper()
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise InputError(f"FX table {path}, line {line}: currency {currency!r} is not ISO")
        if not _RATE.match(row["rate_to_aud"]):
            raise InputError(
                f"FX table {path}, line {line}: rate_to_aud {row['rate_to_aud']!r} must be a "
                "positive plain decimal of at most 10 integer digits and 8 decimal places "
                "(DECIMAL(18,8))"
            )
        try:
            rate = Decimal(row["rate_to_aud"])
            if rate.as_tuple().exponent < -8:  # trailing zeros only (_RATE): as DECIMAL(18,8)
                rate = rate.quantize(Decimal("1e-8"))
            valid_from = date.fromisoformat(row["valid_from"])
        except (InvalidOperation, ValueError):
            raise InputError(
                f"FX table {path}, line {line}: valid_from {row['valid_from']!r} is not YYYY-MM-DD"
            ) from None
        if rate <= 0:
            raise InputError(f"FX table {path}, line {line}: rate_to_aud "
                             f"{row['rate_to_aud']!r} must be > 0")
        if (currency, valid_from) in seen:
            raise InputError(f"FX table {path}, line {line}: {currency} {valid_from} repeated")
        seen.add((currency, valid_from))
        rates.append(FxRate(currency, rate, valid_from))
    if not rates:
        raise InputError(f"FX table {path}: no rates")
    return rates
