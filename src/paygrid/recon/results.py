"""What a reconciliation run reports, per channel: the contract of ``recon run --json``."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class ChannelResult:
    channel: str
    matched_count: int
    matched_amount: int  # payments − refunds
    differences: tuple[Difference, ...]
    held: tuple[Difference, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "matched": {"count": self.matched_count, "amount": self.matched_amount},
            "differences": [_fields(d) for d in self.differences],
            "held": [_fields(d) for d in self.held],
        }


def _fields(d: Difference) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "payment_id": d.payment_id,
        "out_trade_no": d.out_trade_no,
        "refund_id": d.refund_id,
        "out_refund_no": d.out_refund_no,
        "channel_trade_no": d.channel_trade_no,
        "paygrid_amount": d.paygrid_amount,
        "channel_amount": d.channel_amount,
        "case_id": d.case_id,
        "booked_amount": d.booked_amount,
    }
