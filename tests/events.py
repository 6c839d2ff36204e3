"""A typed event for bus tests that need events without a payment behind them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Numbered:
    """The n-th event of aggregate ``ref``; travels as ``payment.succeeded`` so the bus
    routes it as it would a real one."""

    TYPE: ClassVar[str] = "payment.succeeded"
    VERSION: ClassVar[int] = 1
    ref: str
    i: int

    @property
    def aggregate_id(self) -> str:
        return self.ref
