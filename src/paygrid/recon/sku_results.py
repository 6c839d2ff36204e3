"""The figures of per-SKU reconciliation (按商品对账), as :mod:`paygrid.recon.sku_report` adds
them up: per merchant and SKU what was sold, discounted, paid, refunded and charged, per merchant
the channel-confirmed totals they add up to, per bill its own totals; as JSON or CSV.

Amounts are integers of fen. Standard library only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

from paygrid.recon.sku import SkuShare

CSV_COLUMNS = (
    "business_date",
    "sku",
    "quantity",
    "sales",
    "discount",
    "paid",
    "refund_quantity",
    "refund",
    "fee",
    "net",
)


class NotTied(RuntimeError):
    """The per-SKU figures do not add up to the channel-confirmed totals (a bug)."""


@dataclass(frozen=True, slots=True)
class Totals:
    """Channel-confirmed totals: payments and refunds (count, amount) and the net fee (the
    payments' fees less the fees refunds gave back)."""

    payments: int = 0
    payment_amount: int = 0
    refunds: int = 0
    refund_amount: int = 0
    fee: int = 0

    @property
    def net(self) -> int:
        return self.payment_amount - self.refund_amount - self.fee

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    def as_json(self) -> dict[str, Any]:
        return {
            "payments": {"count": self.payments, "amount": self.payment_amount},
            "refunds": {"count": self.refunds, "amount": self.refund_amount},
            "fee": self.fee,
            "net": self.net,
        }


@dataclass(frozen=True, slots=True)
class SkuRow:
    """One SKU's figures of the day: ``quantity`` sold, ``sales`` its list value, ``paid`` what
    the channels confirmed for it, ``fee`` the channels' fee less the fee refunds gave back."""

    sku: str
    quantity: int = 0
    sales: int = 0
    discount: int = 0
    paid: int = 0
    refund_quantity: int = 0
    refund: int = 0
    fee: int = 0

    @property
    def net(self) -> int:
        return self.paid - self.refund - self.fee

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"net": self.net}


@dataclass(frozen=True, slots=True)
class MerchantFigures:
    mchid: str
    skus: tuple[SkuRow, ...]  # by SKU
    confirmed: Totals  # what the SKUs add up to: the merchant's lines on the bills

    def as_json(self) -> dict[str, Any]:
        skus = [s.as_json() for s in self.skus]
        return {"mchid": self.mchid, "confirmed": self.confirmed.as_json(), "skus": skus}


@dataclass(frozen=True, slots=True)
class BillFigures:
    channel: str
    bill_id: str
    totals: Totals  # the bill's own
    attributed: Totals  # its lines of the merchants reported
    unattributed: Totals | None  # lines of no paygrid payment; None when one merchant is asked

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "bill_id": self.bill_id,
            "totals": self.totals.as_json(),
            "attributed": self.attributed.as_json(),
            "unattributed": self.unattributed.as_json() if self.unattributed else None,
        }


@dataclass(frozen=True, slots=True)
class SkuFigures:
    business_date: date
    bills: tuple[BillFigures, ...]  # by channel
    merchants: tuple[MerchantFigures, ...]  # by mchid

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(b.channel for b in self.bills)

    @property
    def unattributed(self) -> Totals | None:
        parts = [b.unattributed for b in self.bills]
        return None if None in parts else sum((p for p in parts if p), Totals())

    def merchant(self, mchid: str) -> MerchantFigures | None:
        return next((m for m in self.merchants if m.mchid == mchid), None)

    def as_json(self) -> dict[str, Any]:
        unattributed = self.unattributed
        return {
            "date": self.business_date.isoformat(),
            "channels": list(self.channels),
            "merchants": [m.as_json() for m in self.merchants],
            "unattributed": unattributed.as_json() if unattributed else None,
            "bills": [b.as_json() for b in self.bills],
        }


def sku_csv(figures: SkuFigures, mchid: str) -> str:
    """The merchant's rows of ``figures`` as CSV (:data:`CSV_COLUMNS`), one per SKU."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    merchant = figures.merchant(mchid)
    day = figures.business_date.isoformat()
    for row in merchant.skus if merchant else ():
        writer.writerow([day, *(getattr(row, c) for c in CSV_COLUMNS[1:])])
    return out.getvalue()


# --- adding up ------------------------------------------------------------------------------
class Tally:
    """Per (merchant, SKU) the figures, per merchant the confirmed totals, as they add up."""

    def __init__(self) -> None:
        self.skus: dict[tuple[str, str], list[int]] = {}
        self.confirmed: dict[str, list[int]] = {}

    def add(
        self, mchid: str, shares: Sequence[SkuShare], is_payment: bool, amount: int, fee: int
    ) -> None:
        for s in shares:
            if not is_payment and not (s.quantity or s.refund or s.fee):
                continue  # a line the refund leaves alone
            row = self.skus.setdefault((mchid, s.sku), [0] * 7)
            row[0 if is_payment else 4] += s.quantity
            row[1] += s.sales
            row[2] += s.discount
            row[3] += s.paid
            row[5] += s.refund
            row[6] += s.fee
        count_line(self.confirmed.setdefault(mchid, [0] * 5), is_payment, amount, fee)

    def merchants(self) -> tuple[MerchantFigures, ...]:
        by_merchant: dict[str, list[SkuRow]] = {m: [] for m in self.confirmed}
        for (mchid, sku), values in sorted(self.skus.items()):
            by_merchant[mchid].append(SkuRow(sku, *values))
        out = []
        for mchid in sorted(by_merchant):
            rows, confirmed = by_merchant[mchid], Totals(*self.confirmed[mchid])
            summed = (
                sum(r.paid for r in rows),
                sum(r.refund for r in rows),
                sum(r.fee for r in rows),
            )
            if summed != (confirmed.payment_amount, confirmed.refund_amount, confirmed.fee):
                raise NotTied(f"{mchid}: SKUs add up to {summed}, confirmed {confirmed}")
            out.append(MerchantFigures(mchid, tuple(rows), confirmed))
        return tuple(out)


def count_line(totals: list[int], is_payment: bool, amount: int, fee: int) -> None:
    totals[0 if is_payment else 2] += 1
    totals[1 if is_payment else 3] += amount
    totals[4] += fee


def _values(totals: Totals) -> tuple[int, ...]:
    return tuple(getattr(totals, f.name) for f in fields(totals))
