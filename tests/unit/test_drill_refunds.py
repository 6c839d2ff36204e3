"""The crash drill's refund checks judge what they are shown: a refund the channel made but
paygrid left PROCESSING, an over-refund, a counter off by a fen, a voucher or a notification
missing or twice, a refused refund paygrid kept — each is a problem; the converged state is
none. And the concurrent partial refunds it asks always sum above the payment."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from paygrid.ops.drill_refund_checks import (
    ChannelRefund,
    PaygridRefund,
    PaymentCounters,
    RefundState,
    refund_problems,
)
from paygrid.ops.drill_refunds import ACCEPTED, EXCEEDS, Asked, partial_amounts

PAY = "pay_1"


def converged() -> tuple[RefundState, set[str], list[Asked]]:
    """A payment of 1000 refunded 600 + 400 at the channel; a third partial of 300 refused."""
    refunds = [
        PaygridRefund("rfd_a", PAY, "chan", "rfd_a", "m-a", 600, "SUCCESS"),
        PaygridRefund("rfd_b", PAY, "chan", "rfd_b", "m-b", 400, "SUCCESS"),
    ]
    state = RefundState(
        channel=[
            ChannelRefund("chan", "rfd_a", 600, "DONE", True),
            ChannelRefund("chan", "rfd_b", 400, "DONE", True),
        ],
        refunds=refunds,
        payments={PAY: PaymentCounters(PAY, 1000, 1000, 0)},
        vouchers={"rfd_a": 1, "rfd_b": 1},
        notified={"rfd_a": ["ntf_a"], "rfd_b": ["ntf_b"]},
    )
    asked = [
        Asked(PAY, "m-a", 600, False, ACCEPTED, "rfd_a"),
        Asked(PAY, "m-b", 400, False, ACCEPTED, "rfd_b"),
        Asked(PAY, "m-c", 300, False, EXCEEDS),
    ]
    return state, {"ntf_a", "ntf_b"}, asked


def test_a_converged_state_has_no_problem() -> None:
    state, acked, asked = converged()
    assert refund_problems(state, acked, asked) == []


def test_a_refund_the_channel_made_left_processing_is_a_problem() -> None:
    state, acked, asked = converged()
    stuck = replace(state.refunds[1], status="PROCESSING")
    state = replace(
        state,
        refunds=[state.refunds[0], stuck],
        payments={PAY: PaymentCounters(PAY, 1000, 600, 400)},
        vouchers={"rfd_a": 1},
        notified={"rfd_a": ["ntf_a"]},
    )
    problems = refund_problems(state, acked, asked)
    assert any("gave back 400 for refund rfd_b, but paygrid says PROCESSING" in p for p in problems)
    assert any("rfd_b is stuck PROCESSING (chan: DONE)" in p for p in problems)


def test_success_the_channel_did_not_make_is_a_problem() -> None:
    state, acked, asked = converged()
    state = replace(state, channel=[state.channel[0], replace(state.channel[1], refunded=False)])
    assert refund_problems(state, acked, asked) == ["refund rfd_b is SUCCESS but chan says DONE"]
    state = replace(state, channel=[state.channel[0]])
    assert refund_problems(state, acked, asked) == ["refund rfd_b is SUCCESS but chan says nothing"]


def test_over_refund_and_counters_off_are_problems() -> None:
    state, acked, asked = converged()
    third = PaygridRefund("rfd_c", PAY, "chan", "rfd_c", "m-c", 300, "SUCCESS")
    over = replace(
        state,
        channel=[*state.channel, ChannelRefund("chan", "rfd_c", 300, "DONE", True)],
        refunds=[*state.refunds, third],
        vouchers={**state.vouchers, "rfd_c": 1},
        notified={**state.notified, "rfd_c": ["ntf_c"]},
    )
    problems = refund_problems(over, {*acked, "ntf_c"}, asked)
    assert "payment pay_1 of 1000 was refunded 1300" in problems
    assert any("refund m-c was refused (REFUND_EXCEEDS_REMAINING) but is" in p for p in problems)
    off = replace(state, payments={PAY: PaymentCounters(PAY, 1000, 999, 0)})
    assert refund_problems(off, acked, asked) == [
        "payment pay_1 says refunded 999, in progress 0; its refunds: 1000 SUCCESS, 0 PROCESSING"
    ]


def test_vouchers_and_notifications_once_each_and_acknowledged() -> None:
    state, acked, asked = converged()
    twice = replace(state, vouchers={"rfd_a": 2, "rfd_b": 1})
    assert refund_problems(twice, acked, asked) == ["refund rfd_a has 2 refund vouchers"]
    none = replace(state, vouchers={"rfd_a": 1})
    assert refund_problems(none, acked, asked) == ["refund rfd_b has 0 refund vouchers"]
    stray = replace(state, vouchers={**state.vouchers, "rfd_x": 1})
    assert refund_problems(stray, acked, asked) == ["refund voucher for rfd_x, which is None"]
    doubled = replace(state, notified={"rfd_a": ["ntf_a", "ntf_z"], "rfd_b": ["ntf_b"]})
    assert refund_problems(doubled, acked, asked) == [
        "refund rfd_a has 2 refund.succeeded notifications"
    ]
    assert refund_problems(state, {"ntf_a"}, asked) == [
        "merchant never acknowledged the notification of refund rfd_b"
    ]


def test_an_accepted_refund_paygrid_lost_is_a_problem() -> None:
    state, acked, asked = converged()
    lost = [*asked, Asked(PAY, "m-d", 1, False, ACCEPTED, "rfd_d")]
    assert refund_problems(state, acked, lost) == ["accepted refund m-d (rfd_d) is None"]


@given(st.integers(1, 10_000_000), st.integers(2, 4), st.integers(0, 2**32))
def test_partial_amounts_sum_above_the_payment(amount: int, parts: int, seed: int) -> None:
    cut = partial_amounts(amount, parts, random.Random(seed))
    assert len(cut) == parts
    assert sum(cut) > amount
    assert all(1 <= c <= amount for c in cut)
