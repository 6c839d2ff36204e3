"""What a reconciliation run reports, per channel: the contract of ``recon run --json``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str
    payment_id: str | None
    out_trade_no: str | None
    refund_id: str | None
    out_refund_no: str | None
    channel_trade_no: str | None
    paygrid_amount: int | None
    channel_amount: int | None
    case_id: str | None = None
    booked_amount: int | None = None  # the voucher's amount (the accounting flow's kinds)
    flow: str = "PAYMENT"  # PAYMENT or REFUND: which record the difference is about
    expected_fee: int | None = None  # FEE_MISMATCH: the fee at the contracted rate
    channel_fee: int | None = None  # FEE_MISMATCH: the fee the channel's bill shows
    currency: str = "CNY"
    repaired: bool = False  # STATUS_REPAIRED: paygrid's record now holds the channel's success


@dataclass(frozen=True, slots=True)
class ChannelResult:
    channel: str
    matched_count: int
    matched_amount: int  # payments − refunds
    differences: tuple[Difference, ...]
    held: tuple[Difference, ...]
    cross_day: frozenset[str] = frozenset()  # payments matched on a neighbouring date's bill

    def with_cases(self, case_ids: dict[tuple[str, str], str]) -> ChannelResult:
        """The same result, each difference naming its case (keyed by kind and reference)."""
        named = tuple(
            replace(d, case_id=case_ids.get((d.kind, reference(d)), d.case_id))
            for d in self.differences
        )
        return replace(self, differences=named)

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "matched": {"count": self.matched_count, "amount": self.matched_amount},
            "differences": [_fields(d) for d in self.differences],
            "held": [_fields(d) for d in self.held],
        }


JSON_FIELDS = (
    "kind",
    "payment_id",
    "out_trade_no",
    "refund_id",
    "out_refund_no",
    "channel_trade_no",
    "paygrid_amount",
    "channel_amount",
    "case_id",
    "booked_amount",
    "flow",
    "expected_fee",
    "channel_fee",
)
"""A difference's fields in ``recon run --json``: the contract's, then ours beyond it."""


def _fields(d: Difference) -> dict[str, Any]:
    return {name: getattr(d, name) for name in JSON_FIELDS}


def reference(d: Difference) -> str:
    """What a difference is about, within its channel, date and kind: the refund, the payment,
    or the channel's (or bank's) own reference; empty for a date-wide one."""
    return d.refund_id or d.payment_id or d.channel_trade_no or ""
