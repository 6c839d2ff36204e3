"""差错 cases: the explicit state table, the history that only grows, and what a person may do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paygrid.recon.cases import (
    TRANSITIONS,
    Action,
    AutoRule,
    CaseRefused,
    CaseStatus,
    DifferenceKind,
    open_case,
)

AT = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def _case(kind: DifferenceKind = DifferenceKind.AMOUNT_MISMATCH, amount: int = -100):
    return open_case("case_1", kind, "wechatpay", "2026-12-01", amount, "CNY", AT, "found")


def test_every_state_reaches_closed_and_closed_is_final() -> None:
    assert TRANSITIONS[CaseStatus.CLOSED] == frozenset()
    for status, nexts in TRANSITIONS.items():
        if status is not CaseStatus.CLOSED:
            assert nexts, status
    assert set(TRANSITIONS) == set(CaseStatus)


def test_a_person_adjusts_with_a_voucher_and_the_history_keeps_each_step() -> None:
    case = _case()
    done = case.resolve(Action.ADJUST, "channel bill right", "li.finance", AT, "vch_1")
    assert done.status is CaseStatus.CLOSED and done.resolution is CaseStatus.ADJUSTED
    assert done.history[: len(case.history)] == case.history  # appended, never edited
    assert [(s.status, s.by, s.voucher_id) for s in done.history] == [
        (CaseStatus.OPEN, "recon", None),
        (CaseStatus.ADJUSTED, "li.finance", "vch_1"),
        (CaseStatus.CLOSED, "li.finance", None),
    ]
    written_off = _case().resolve(Action.WRITE_OFF, "too small", "wang", AT, "vch_2")
    assert written_off.resolution is CaseStatus.WRITTEN_OFF
    assert case.status is CaseStatus.OPEN  # the original is a value: unchanged


def test_a_closed_case_cannot_be_resolved_again() -> None:
    done = _case().resolve(Action.ADJUST, "fixed", "li", AT, "vch_1")
    with pytest.raises(CaseRefused, match="CLOSED -> ADJUSTED is not allowed"):
        done.resolve(Action.ADJUST, "again", "li", AT, "vch_2")
    auto = _case().auto_resolve(AutoRule.CROSS_DAY, AT, "matched on 2026-12-02")
    assert auto.status is CaseStatus.CLOSED and auto.resolution is CaseStatus.AUTO_RESOLVED
    with pytest.raises(CaseRefused):
        auto.auto_resolve(AutoRule.LATE_ARRIVAL, AT, "again")


@pytest.mark.parametrize(
    ("reason", "by", "voucher", "amount", "kind"),
    [
        ("", "li", "vch_1", -100, DifferenceKind.AMOUNT_MISMATCH),  # no reason
        ("ok", " ", "vch_1", -100, DifferenceKind.AMOUNT_MISMATCH),  # no name
        ("a\x00b", "li", "vch_1", -100, DifferenceKind.AMOUNT_MISMATCH),  # control character
        ("x" * 501, "li", "vch_1", -100, DifferenceKind.AMOUNT_MISMATCH),  # too long
        ("ok", "li", None, -100, DifferenceKind.AMOUNT_MISMATCH),  # money without a voucher
        ("ok", "li", "vch_1", 0, DifferenceKind.VOUCHER_ORPHAN),  # a voucher for nothing
        ("ok", "li", None, 0, DifferenceKind.STATUS_REPAIRED),  # only its rule resolves it
    ],
)
def test_a_bad_resolution_is_refused_and_changes_nothing(
    reason: str, by: str, voucher: str | None, amount: int, kind: DifferenceKind
) -> None:
    case = _case(kind, amount)
    with pytest.raises(CaseRefused):
        case.resolve(Action.ADJUST, reason, by, AT, voucher)
    assert case.status is CaseStatus.OPEN and len(case.history) == 1
