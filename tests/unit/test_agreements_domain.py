"""The agreement's state table: the channel's answers are facts the agreement applies or
refuses; the account's details are never kept, only the masked account."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paygrid.agreements.domain import (
    TRANSITIONS,
    Agreement,
    AgreementMismatch,
    AgreementStatus,
    IllegalAgreementTransition,
    mask_account,
)
from paygrid.channels.ports import AgreementResult, AgreementState

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
S = AgreementStatus


def agreement(status: S = S.REQUESTED) -> Agreement:
    return Agreement(
        agreement_id="agr_1",
        mchid="m1",
        out_agreement_no="card-1",
        channel="ch",
        bank="ICBC",
        masked_account="6222********0123",
        status=status,
        agreement_no=None,
        message="",
        created_at=NOW,
        updated_at=NOW,
        version=1,
    )


def answer(state: AgreementState, number: str | None = None, message: str = "") -> AgreementResult:
    return AgreementResult("agr_1", state, number, "6222********0123", "ICBC", message)


def test_request_code_then_sign() -> None:
    pending = agreement().apply(answer(AgreementState.PENDING_CODE), NOW)
    assert pending.status == S.PENDING_CODE and pending.version == 2 and pending.open
    wrong = pending.apply(answer(AgreementState.PENDING_CODE, message="验证码错误"), NOW)
    assert wrong.status == S.PENDING_CODE and wrong.message == "验证码错误"
    signed = wrong.apply(answer(AgreementState.SIGNED, "SGN0001"), NOW)
    assert signed.status == S.SIGNED and signed.agreement_no == "SGN0001" and not signed.open


@pytest.mark.parametrize("final", [S.SIGNED, S.FAILED])
def test_a_final_agreement_takes_no_other_answer(final: S) -> None:
    done = agreement(final)
    for state in AgreementState:
        with pytest.raises(IllegalAgreementTransition):
            done.apply(answer(state, "SGN"), NOW)
    assert TRANSITIONS[final] == frozenset()


def test_an_answer_about_another_agreement_or_signed_without_number_is_refused() -> None:
    with pytest.raises(AgreementMismatch):
        agreement().apply(AgreementResult("agr_2", AgreementState.PENDING_CODE), NOW)
    with pytest.raises(AgreementMismatch):
        agreement(S.PENDING_CODE).apply(answer(AgreementState.SIGNED, None), NOW)


def test_the_account_is_masked() -> None:
    assert mask_account("6222021234567890123") == "6222********0123"
    assert mask_account("12345678") == "********"
