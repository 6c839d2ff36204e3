"""Money as an integer of minor units (fen) with an ISO 4217 currency (金额, 分).

Never a float: amounts come in as ints, yuan strings at channel boundaries are parsed exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from babel.numbers import get_currency_precision, list_currencies

_KNOWN_CURRENCIES: frozenset[str] = frozenset(list_currencies())
MAX_MINOR_UNITS = 10**15  # explicit upper bound: no single amount beyond this is plausible


class MoneyError(ValueError):
    """An amount or currency that cannot be money."""


def is_known_currency(code: str) -> bool:
    return code in _KNOWN_CURRENCIES and len(code) == 3 and code.isupper()


def minor_unit_digits(currency: str) -> int:
    """How many decimal digits the currency's minor unit has (CNY: 2)."""
    return int(get_currency_precision(currency))


@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.minor) is not int:
            raise MoneyError(f"amount must be an integer of minor units, got {self.minor!r}")
        if not is_known_currency(self.currency):
            raise MoneyError(f"unknown ISO 4217 currency {self.currency!r}")
        if abs(self.minor) > MAX_MINOR_UNITS:
            raise MoneyError(f"amount {self.minor} is beyond the limit {MAX_MINOR_UNITS}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor - other.minor, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(f"currency mismatch {self.currency} vs {other.currency}")

    def major_str(self) -> str:
        """The amount in major units as an exact decimal string: 12345 CNY -> '123.45'."""
        return format_major(self.minor, self.currency)


def format_major(minor: int, currency: str) -> str:
    digits = minor_unit_digits(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


_MAJOR_RE = re.compile(r"^-?\d{1,15}(\.\d+)?$")


def parse_major(text: str, currency: str) -> int:
    """Parse a yuan string exactly ('0.01' -> 1); too many decimals is an error."""
    cleaned = text.strip()
    if not _MAJOR_RE.match(cleaned):
        raise MoneyError(f"not a decimal amount: {text!r}")
    value = Decimal(cleaned)
    digits = minor_unit_digits(currency)
    scaled = value.scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{text!r} has more than {digits} decimals for {currency}")
    return int(scaled)


def rate_fee(amount_minor: int, rate_ppm: int) -> int:
    """Fee at a rate in parts per million, rounded half up to the minor unit (0.60% = 6000 ppm)."""
    assert amount_minor >= 0 and 0 <= rate_ppm <= 1_000_000
    return (amount_minor * rate_ppm + 500_000) // 1_000_000
