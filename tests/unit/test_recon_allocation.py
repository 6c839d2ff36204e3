"""Property-based: the largest-remainder split and the per-SKU shares never lose or create a
fen, stay within a fen of the exact share, and give a larger weight no less."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from paygrid.recon.allocation import AllocationError, allocate
from paygrid.recon.sku import Line, SkuShare, order_lines, payment_shares, refund_shares

amounts = st.integers(min_value=-(10**12), max_value=10**12)
weights = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30)


@given(amounts, weights)
def test_the_shares_sum_to_the_amount_each_within_a_fen_of_its_exact_share(
    amount: int, ws: list[int]
) -> None:
    assume(sum(ws) > 0 or amount == 0)
    shares = allocate(amount, ws)
    assert sum(shares) == amount
    whole = sum(ws)
    for share, w in zip(shares, ws, strict=True):
        exact = Fraction(amount * w, whole) if whole else Fraction(0)
        assert abs(share - exact) < 1
        assert (share >= 0) if amount >= 0 else (share <= 0)


@given(amounts, weights)
def test_a_larger_weight_never_gets_less_and_a_negative_amount_mirrors(
    amount: int, ws: list[int]
) -> None:
    assume(sum(ws) > 0)
    shares = allocate(abs(amount), ws)
    for i, wi in enumerate(ws):
        for j, wj in enumerate(ws):
            if wi > wj:
                assert shares[i] >= shares[j]
    assert allocate(-abs(amount), ws) == [-s for s in shares]


def test_ties_go_to_the_earlier_line_and_bad_weights_are_refused() -> None:
    assert allocate(1, [1, 1, 1]) == [1, 0, 0]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(100, [1, 2]) == [33, 67]
    assert allocate(0, [0, 0]) == [0, 0]
    assert allocate(5, [Fraction(1, 3), Fraction(2, 3)]) == [2, 3]
    for amount, ws in [(1, [0, 0]), (1, [1, -1]), (1, [])]:
        with pytest.raises(AllocationError):
            allocate(amount, ws)


lines_st = st.lists(
    st.builds(
        Line,
        sku=st.sampled_from(["A", "B", "C", "D"]),
        quantity=st.integers(min_value=1, max_value=20),
        unit_amount=st.integers(min_value=0, max_value=100_000),
    ),
    min_size=1,
    max_size=8,
)


@st.composite
def orders(draw: st.DrawFn) -> tuple[list[Line], int, int, int]:
    """Lines, discounts within their value, what the channel confirmed, its fee."""
    lines = draw(lines_st)
    value = sum(line.list_value for line in lines)
    assume(value > 0)
    discounts = draw(st.integers(min_value=0, max_value=value // 2))
    exact = draw(st.booleans())
    confirmed = value - discounts if exact else draw(st.integers(1, 2 * value))
    fee = draw(st.integers(min_value=0, max_value=confirmed // 100 + 1))
    return lines, discounts, confirmed, fee


@given(orders())
def test_a_payment_splits_exactly_to_the_channel_confirmed_total_and_fee(
    order: tuple[list[Line], int, int, int],
) -> None:
    lines, discounts, confirmed, fee = order
    shares = payment_shares(lines, discounts, confirmed, fee)
    assert sum(s.discount for s in shares) == discounts
    assert sum(s.paid for s in shares) == confirmed
    assert sum(s.fee for s in shares) == fee
    assert sum(s.net for s in shares) == confirmed - fee
    if confirmed == sum(line.list_value for line in lines) - discounts:
        assert all(s.paid == s.sales - s.discount for s in shares)


@given(orders(), st.data())
def test_a_refund_splits_exactly_over_the_lines_it_names(
    order: tuple[list[Line], int, int, int], data: st.DataObject
) -> None:
    lines, discounts, confirmed, fee = order
    paid = payment_shares(lines, discounts, confirmed, fee)
    by_sku: dict[str, int] = {}
    for line in lines:
        by_sku[line.sku] = by_sku.get(line.sku, 0) + line.quantity
    refunded = {sku: data.draw(st.integers(0, q)) for sku, q in by_sku.items()}
    named = {sku: q for sku, q in refunded.items() if q}
    assume(named)
    weight = sum(s.paid * q for s, q in zip(paid, _quantities(paid, named), strict=True))
    assume(weight > 0)
    amount = data.draw(st.integers(1, confirmed))
    fee_back = -data.draw(st.integers(0, fee))
    shares = refund_shares(paid, named, amount, fee_back)
    assert sum(s.refund for s in shares) == amount
    assert sum(s.fee for s in shares) == fee_back
    assert sum(s.quantity for s in shares) == sum(named.values())
    for s in shares:
        if s.quantity == 0:
            assert s.refund == 0 and s.fee == 0  # a line the refund does not name


@given(orders())
def test_a_full_refund_of_every_item_gives_back_each_lines_paid_share(
    order: tuple[list[Line], int, int, int],
) -> None:
    lines, discounts, confirmed, fee = order
    paid = payment_shares(lines, discounts, confirmed, fee)
    everything: dict[str, int] = {}
    for line in lines:
        everything[line.sku] = everything.get(line.sku, 0) + line.quantity
    for named in (everything, None):
        shares = refund_shares(paid, named, confirmed, -fee)
        assert [s.refund for s in shares] == [p.paid for p in paid]
        assert [s.fee for s in shares] == [-p.fee for p in paid]  # split as the payment's was


def test_a_refund_of_what_the_payment_has_not_is_refused() -> None:
    paid = payment_shares([Line("A", 2, 500)], 0, 1000, 6)
    with pytest.raises(AllocationError):
        refund_shares(paid, {"B": 1}, 100, 0)
    with pytest.raises(AllocationError):
        refund_shares(paid, {"A": 3}, 100, 0)
    assert order_lines([], 1234) == [Line("-", 1, 1234)]
    assert refund_shares(paid, {"A": 1}, 500, -3) == [SkuShare("A", 1, 0, 0, 0, 500, -3)]


def _quantities(paid: list[SkuShare], named: dict[str, int]) -> list[int]:
    left = dict(named)
    out = []
    for s in paid:
        q = min(left.get(s.sku, 0), s.quantity)
        left[s.sku] = left.get(s.sku, 0) - q
        out.append(q)
    return out
