"""Sandbox knobs outside the NetsUnion protocol: validated partial updates of small dataclasses.

The same rules as the other sandboxes' knobs (each channel folder stands alone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar


class SettingsError(ValueError):
    """An unknown knob, a value of the wrong type or out of its bounds."""


class _Dataclass(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


T = TypeVar("T", bound=_Dataclass)


def updated(
    current: T, changes: Mapping[str, object], bounds: Mapping[str, tuple[float, float]]
) -> T:
    """``current`` with ``changes`` applied; each value keeps the type of the field's value."""
    values: dict[str, object] = {}
    for name, value in changes.items():
        if name not in current.__dataclass_fields__:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _checked(name, value, getattr(current, name), bounds)
    return dataclasses.replace(current, **values)


def _checked(
    name: str, value: object, like: object, bounds: Mapping[str, tuple[float, float]]
) -> object:
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be true or false")
        return value
    if isinstance(like, str):  # its own choices are checked by the owner (FaultConfig)
        if not isinstance(value, str):
            raise SettingsError(f"{name} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{name} must be a number")
    if isinstance(like, int) and not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer")
    low, high = bounds.get(name, (float("-inf"), float("inf")))
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}")
    return float(value) if isinstance(like, float) else value


REFUND_WINDOW_SECONDS = 180 * 86_400  # MODELLED refund window


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxSettings:
    retry_scale: float = 1.0  # multiplies the notification retry schedule; tests shrink it
    fee_rate_ppm: int = 300  # the platform's fee on a debit (MODELLED): 0.03 %
    refund_window_seconds: int = REFUND_WINDOW_SECONDS
    bill_ready_hour: int = 6  # day D's clearing files are out at D+1 06:00 Beijing (or close-day)
    settle_days: int = 1  # a day's net reaches the reserve account this many days later (T+1)
    batches_per_day: int = 4  # clearing batches (清算场次) a day, equal slices of the day
    debit_delay_ms: int = 300  # the bank decides a debit this long after it arrives ...
    debits_wait: bool = False  # ... or, when true, only when /sandbox/pay gives the outcome
    refund_delay_ms: int = 300  # the bank credits a refund this long after it arrives
    sms_code_ttl_seconds: int = 300  # an SMS code is good for five minutes
    sms_max_attempts: int = 5  # wrong codes before the agreement fails
    page_ttl_seconds: int = 1800  # a gateway order without TrxExpDtTm expires this much later

    def updated(self, changes: Mapping[str, object]) -> SandboxSettings:
        return updated(
            self,
            changes,
            bounds={
                "retry_scale": (0.0, 100.0),
                "fee_rate_ppm": (0, 100_000),
                "settle_days": (0, 30),
                "refund_window_seconds": (1, 10 * 365 * 86_400),
                "bill_ready_hour": (0, 23),
                "batches_per_day": (1, 24),
                "debit_delay_ms": (0, 3_600_000),
                "refund_delay_ms": (0, 3_600_000),
                "sms_code_ttl_seconds": (1, 86_400),
                "sms_max_attempts": (1, 20),
                "page_ttl_seconds": (1, 7 * 86_400),
            },
        )
