from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.payments.domain import (
    FINAL,
    TRANSITIONS,
    Discount,
    IllegalTransition,
    Item,
    OrderInvalid,
    PaymentStatus,
    check_items,
    check_transition,
)

statuses = st.sampled_from(list(PaymentStatus))


@given(statuses, statuses)
def test_transition_table_is_the_only_authority(
    current: PaymentStatus, target: PaymentStatus
) -> None:
    if target in TRANSITIONS[current]:
        check_transition("pay_x", current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition("pay_x", current, target)


def test_final_states_have_no_way_out() -> None:
    for status in FINAL:
        assert TRANSITIONS[status] == frozenset()


def test_items_must_sum_to_total() -> None:
    items = (Item("A", "apple", 2, 500), Item("B", "pear", 1, 300))
    check_items(1200, items, (Discount("coupon", 100),))
    with pytest.raises(OrderInvalid) as exc:
        check_items(1300, items, (Discount("coupon", 100),))
    assert exc.value.code == "ITEMS_TOTAL_MISMATCH"
    with pytest.raises(OrderInvalid):
        check_items(100, (), (Discount("coupon", 100),))
