from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.kernel.money import Money, MoneyError, format_major, parse_major, rate_fee


def test_parse_major_is_exact() -> None:
    assert parse_major("0.01", "CNY") == 1
    assert parse_major("123.45", "CNY") == 12345
    assert parse_major("100", "CNY") == 10000
    assert parse_major("-30.00", "CNY") == -3000
    assert parse_major("5", "JPY") == 5


@pytest.mark.parametrize("bad", ["0.001", "1e3", "abc", "", "1,000.00", "NaN"])
def test_parse_major_refuses(bad: str) -> None:
    with pytest.raises(MoneyError):
        parse_major(bad, "CNY")


@given(st.integers(min_value=-(10**14), max_value=10**14))
def test_format_parse_roundtrip(minor: int) -> None:
    assert parse_major(format_major(minor, "CNY"), "CNY") == minor


def test_money_refuses_floats_and_unknown_currency() -> None:
    with pytest.raises(MoneyError):
        Money(1.0, "CNY")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Money(1, "XYZ")
    with pytest.raises(MoneyError):
        Money(1, "CNY") + Money(1, "USD")


def test_rate_fee_rounds_half_up() -> None:
    assert rate_fee(10000, 6000) == 60  # 100.00 at 0.60% = 0.60
    assert rate_fee(3000, 6000) == 18
    assert rate_fee(83, 6000) == 0  # 0.498 fen -> 0
    assert rate_fee(84, 6000) == 1  # 0.504 fen -> 1
    assert rate_fee(250, 2000) == 1  # 0.5 fen -> 1 (half up)
