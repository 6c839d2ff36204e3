"""Per-SKU shares of what the channel confirmed (按商品对账).

The channel's bill has one line per order with the order's total and fee; finance wants the
figures per product. A payment's lines (``items``: sku, quantity, unit amount) and its order
discounts were stored at creation. From them, each line gets:

- its **discount**: the order's discounts split over the lines by their list value
  (quantity × unit amount);
- its **paid** share: the channel-confirmed order total split over the lines by what they
  cost after discounts (equal to list value − discount whenever the channel confirmed our
  total);
- its **fee**: the channel's fee split the same way;
- for a refund, its **refund** share and its share of the fee returned: over the refunded
  lines by their paid share per unit × the quantity refunded, or over every line by its paid
  share when the refund names no items.

Every split is :func:`paygrid.recon.allocation.allocate`: the shares sum exactly to the
confirmed amounts, so per-SKU figures add up to the channel's totals to the fen.

Domain-level: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from paygrid.recon.allocation import AllocationError, Weight, allocate

WHOLE_ORDER_SKU = "-"  # the one line of a payment created without items


@dataclass(frozen=True, slots=True)
class Line:
    """A line of the order as the merchant created it."""

    sku: str
    quantity: int
    unit_amount: int

    @property
    def list_value(self) -> int:
        return self.quantity * self.unit_amount


@dataclass(frozen=True, slots=True)
class SkuShare:
    """One line's share of a payment (``refund`` 0) or of a refund (``paid`` 0, ``quantity``
    the quantity refunded, ``fee`` the fee returned, negative)."""

    sku: str
    quantity: int
    sales: int  # list value (quantity × unit amount); 0 on a refund's share
    discount: int
    paid: int
    refund: int
    fee: int

    @property
    def net(self) -> int:
        """What the line brought in after refunds and the channel's fee."""
        return self.paid - self.refund - self.fee


def order_lines(lines: Sequence[Line], total: int) -> list[Line]:
    """The order's lines; a payment created without items is one line of its total."""
    return list(lines) if lines else [Line(WHOLE_ORDER_SKU, 1, total)]


def payment_shares(
    lines: Sequence[Line], discounts: int, confirmed_total: int, fee: int
) -> list[SkuShare]:
    """Split a payment the channel confirmed (``confirmed_total``, ``fee``) over its lines."""
    off = allocate(discounts, [line.list_value for line in lines])
    after = [line.list_value - d for line, d in zip(lines, off, strict=True)]
    if any(a < 0 for a in after):
        raise AllocationError(f"discounts {discounts} exceed a line's list value")
    paid = allocate(confirmed_total, after)
    fees = allocate(fee, paid if any(paid) else after)
    return [
        SkuShare(line.sku, line.quantity, line.list_value, d, p, 0, f)
        for line, d, p, f in zip(lines, off, paid, fees, strict=True)
    ]


def refund_shares(
    paid: Sequence[SkuShare],
    refunded: Mapping[str, int] | None,
    amount: int,
    fee_returned: int,
) -> list[SkuShare]:
    """Split a refund (``amount``; ``fee_returned`` as the bill gives it, negative) over the
    payment's line shares ``paid`` (from :func:`payment_shares`). ``refunded``: quantity per
    SKU the refund names, or None for a refund of no particular items."""
    quantities = _refunded_quantities(paid, refunded)
    weights: list[Weight] = [
        Fraction(share.paid * q, share.quantity) if refunded is not None else share.paid
        for share, q in zip(paid, quantities, strict=True)
    ]
    refunds = allocate(amount, weights)
    fees = allocate(fee_returned, weights)
    return [
        SkuShare(share.sku, q, 0, 0, 0, r, f)
        for share, q, r, f in zip(paid, quantities, refunds, fees, strict=True)
    ]


def refund_shares_or_spread(
    paid: Sequence[SkuShare],
    refunded: Mapping[str, int] | None,
    amount: int,
    fee_returned: int,
) -> list[SkuShare]:
    """As :func:`refund_shares`, but a refund that cannot be weighed by the lines it names
    (they carry no paid value, e.g. an item given away, or the payment has not that many) is
    split over every line as a refund of no particular items, keeping the quantities it named
    where they are the payment's. What the channel confirmed is always split in full."""
    try:
        return refund_shares(paid, refunded, amount, fee_returned)
    except AllocationError:
        if refunded is None:
            raise
    spread = refund_shares(paid, None, amount, fee_returned)
    try:
        counted = refund_shares(paid, refunded, 0, 0)
    except AllocationError:
        return spread
    return [replace(s, quantity=c.quantity) for s, c in zip(spread, counted, strict=True)]


def _refunded_quantities(paid: Sequence[SkuShare], refunded: Mapping[str, int] | None) -> list[int]:
    """Each line's refunded quantity; a SKU on several lines is taken from the first first."""
    if refunded is None:
        return [0] * len(paid)
    unknown = set(refunded) - {share.sku for share in paid}
    if unknown:
        raise AllocationError(f"refund names SKUs the payment does not have: {sorted(unknown)}")
    left = dict(refunded)
    quantities = []
    for share in paid:
        q = min(left.get(share.sku, 0), share.quantity)
        left[share.sku] = left.get(share.sku, 0) - q
        quantities.append(q)
    over = {sku: n for sku, n in left.items() if n > 0}
    if over:
        raise AllocationError(f"refund names more than the payment has of: {sorted(over)}")
    return quantities
