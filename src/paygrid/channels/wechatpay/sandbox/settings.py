"""Sandbox knobs outside the WeChat protocol: validated partial updates of small dataclasses."""

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
    current: T,
    changes: Mapping[str, object],
    bounds: Mapping[str, tuple[float, float]],
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> T:
    """``current`` with ``changes`` applied; each value keeps the type of the field's value."""
    values: dict[str, object] = {}
    for name, value in changes.items():
        if name not in current.__dataclass_fields__:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _checked(name, value, getattr(current, name), bounds, choices or {})
    return dataclasses.replace(current, **values)


def _checked(
    name: str,
    value: object,
    like: object,
    bounds: Mapping[str, tuple[float, float]],
    choices: Mapping[str, tuple[str, ...]],
) -> object:
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be true or false")
        return value
    if isinstance(like, str):
        if not isinstance(value, str) or (name in choices and value not in choices[name]):
            raise SettingsError(f"{name} must be one of {choices.get(name, ('a string',))}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{name} must be a number")
    if isinstance(like, int) and not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer")
    low, high = bounds.get(name, (float("-inf"), float("inf")))
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}")
    return float(value) if isinstance(like, float) else value


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxSettings:
    """``callback_serial_mode``: which key signs callbacks (微信支付公钥 or 平台证书)."""

    callback_serial_mode: str = "public_key"
    retry_scale: float = 1.0  # multiplies the callback retry schedule; tests shrink it
    fee_rate_ppm: int = 2000  # channel fee on the bill: 0.20%
    refund_delay_ms: int = 1000  # a refund stays PROCESSING this long, then ends (退款到账)
    settle_days: int = 1  # a day's net reaches the reserve account this many days later (T+1)

    def updated(self, changes: Mapping[str, object]) -> SandboxSettings:
        return updated(
            self,
            changes,
            bounds={
                "retry_scale": (0.0, 100.0),
                "fee_rate_ppm": (0, 100_000),
                "settle_days": (0, 30),
                "refund_delay_ms": (0, 86_400_000),
            },
            choices={"callback_serial_mode": ("public_key", "certificate")},
        )
