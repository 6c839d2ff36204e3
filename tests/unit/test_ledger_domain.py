from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.ledger.domain import (
    Direction,
    Entry,
    Unbalanced,
    Voucher,
    capture_fees,
    capture_voucher,
    fee_income,
    pending_clearing,
)


def test_design_example_capture() -> None:
    """DESIGN.md: 100.00 at 0.60% merchant rate and 0.20% channel rate."""
    fees = capture_fees(10000, 6000, 2000)
    v = capture_voucher("pay_1", "m1", "wechatpay", 10000, "CNY", fees)
    book = {(e.account.code, e.direction): e.amount for e in v.entries}
    assert book[("pending_clearing:wechatpay:CNY", Direction.DEBIT)] == 10000
    assert book[("merchant_pending_settlement:m1:CNY", Direction.CREDIT)] == 9940
    assert book[("fee_income:CNY", Direction.CREDIT)] == 60
    assert book[("channel_cost:wechatpay:CNY", Direction.DEBIT)] == 20
    assert book[("pending_clearing:wechatpay:CNY", Direction.CREDIT)] == 20


@given(st.integers(min_value=1, max_value=10**12), st.integers(0, 100_000), st.integers(0, 100_000))
def test_capture_always_balances(amount: int, mrate: int, crate: int) -> None:
    v = capture_voucher("p", "m", "wechatpay", amount, "CNY", capture_fees(amount, mrate, crate))
    debit = sum(e.amount for e in v.entries if e.direction == Direction.DEBIT)
    credit = sum(e.amount for e in v.entries if e.direction == Direction.CREDIT)
    assert debit == credit


def test_unbalanced_voucher_is_refused() -> None:
    with pytest.raises(Unbalanced):
        Voucher(
            "x",
            "r",
            "m",
            (
                Entry(pending_clearing("wechatpay", "CNY"), Direction.DEBIT, 5),
                Entry(fee_income("CNY"), Direction.CREDIT, 4),
            ),
        )
    with pytest.raises(AssertionError):
        Entry(fee_income("CNY"), Direction.CREDIT, -1)
