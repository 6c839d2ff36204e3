"""Largest-remainder allocation (最大余额法): split an amount of fen over weights exactly.

Per-SKU reconciliation (按商品对账) splits what the channel confirmed for an order (its total,
its fee, a refund) over the order's lines. Each share is the exact proportional share rounded
down, and the fen left over go one each to the shares with the largest remainders, ties to the
earlier line. So the shares sum to the amount (no fen lost or created), each is within one fen
of its exact share, and a larger weight never gets less than a smaller one.

Domain-level: standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

Weight = int | Fraction
MAX_PARTS = 10_000  # lines of one order: far beyond any cart, small enough to stay cheap


class AllocationError(ValueError):
    """The amount cannot be split over these weights (none positive, or one negative)."""


def allocate(amount: int, weights: Sequence[Weight]) -> list[int]:
    """``amount`` fen split in proportion to ``weights`` (non-negative, exact: int or
    Fraction). A negative amount is split as its magnitude and every share negated, so a
    refund's fee is split the way its payment's was. All weights zero: only an amount of zero
    can be split (all shares zero)."""
    if not 0 < len(weights) <= MAX_PARTS:
        raise AllocationError(f"between 1 and {MAX_PARTS} weights, got {len(weights)}")
    if any(w < 0 for w in weights):
        raise AllocationError(f"weights must not be negative: {list(weights)}")
    if amount < 0:
        return [-share for share in allocate(-amount, weights)]
    whole = sum(weights, Fraction(0))
    if whole == 0:
        if amount != 0:
            raise AllocationError(f"cannot split {amount} over weights that are all zero")
        return [0] * len(weights)
    exact = [Fraction(amount) * w / whole for w in weights]
    shares = [int(e) for e in exact]  # floor: every exact share is non-negative here
    left = amount - sum(shares)
    assert 0 <= left < len(weights), (amount, weights, shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    assert sum(shares) == amount
    return shares
