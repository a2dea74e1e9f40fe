"""Settings a careless user may get wrong are refused when they load, naming the variable."""

from __future__ import annotations

import pytest

from purchases.config import load_settings
from purchases.errors import ConfigError


@pytest.mark.parametrize(("given", "expected"), [
    ("1GB", 10**9), ("512MiB", 512 * 2**20), ("2.5GB", 2_500_000_000), ("1 GiB", 2**30)])
def test_memory_limit_sizes(given: str, expected: int) -> None:
    assert load_settings(memory_limit=given).memory_limit == expected


@pytest.mark.parametrize("given", ["lots", "1", "-1GB"])
def test_a_memory_limit_that_is_no_usable_size_is_refused_by_name(given: str) -> None:
    with pytest.raises(ConfigError, match="PURCHASES_MEMORY_LIMIT"):
        load_settings(memory_limit=given)
