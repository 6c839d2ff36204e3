"""An agreement and its state table. The channel's answers are facts; the agreement decides
what they change. Domain code: no framework, no database.

The account's details (number, holder, identity, mobile) go to the channel once and are never
stored: an agreement keeps the bank, the masked account and, once signed, the channel's
agreement number (协议号)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from paygrid.channels.ports import AgreementResult, AgreementState


class AgreementStatus(enum.StrEnum):
    REQUESTED = "REQUESTED"  # written down before the channel was asked: it may have it
    PENDING_CODE = "PENDING_CODE"  # the bank sent the payer an SMS code; confirm with it
    SIGNED = "SIGNED"  # payments may debit the account under the agreement number
    FAILED = "FAILED"  # refused (details, expired or too many wrong codes): sign anew


_S = AgreementStatus
TRANSITIONS: Mapping[AgreementStatus, frozenset[AgreementStatus]] = {
    _S.REQUESTED: frozenset({_S.PENDING_CODE, _S.SIGNED, _S.FAILED}),
    _S.PENDING_CODE: frozenset({_S.PENDING_CODE, _S.SIGNED, _S.FAILED}),  # a wrong code: again
    _S.SIGNED: frozenset(),
    _S.FAILED: frozenset(),
}
_FROM_CHANNEL = {
    AgreementState.PENDING_CODE: _S.PENDING_CODE,
    AgreementState.SIGNED: _S.SIGNED,
    AgreementState.FAILED: _S.FAILED,
}
MAX_MESSAGE_LEN = 256


class IllegalAgreementTransition(Exception):
    def __init__(self, agreement_id: str, current: AgreementStatus, target: AgreementStatus):
        super().__init__(f"agreement {agreement_id}: {current} -> {target} is not allowed")
        self.current, self.target = current, target


class AgreementMismatch(Exception):
    """The channel's answer is about another agreement, or signed without a number."""


@dataclass(frozen=True, slots=True)
class Agreement:
    agreement_id: str  # also our ref for it toward the channel
    mchid: str
    out_agreement_no: str  # the merchant's own number for it, unique per merchant
    channel: str
    bank: str  # kernel/banks.py code
    masked_account: str
    status: AgreementStatus
    agreement_no: str | None  # the channel's 协议号, once SIGNED; never shown to the merchant
    message: str  # the channel's last words to the payer ("验证码错误" ...)
    created_at: datetime
    updated_at: datetime
    version: int

    def apply(self, result: AgreementResult, now: datetime) -> Agreement:
        """The channel's answer applied; an answer the table does not allow raises."""
        if result.agreement_ref != self.agreement_id:
            raise AgreementMismatch(f"answer for {result.agreement_ref}, not {self.agreement_id}")
        target = _FROM_CHANNEL[result.state]
        if target not in TRANSITIONS[self.status]:
            raise IllegalAgreementTransition(self.agreement_id, self.status, target)
        if target == _S.SIGNED and not result.agreement_no:
            raise AgreementMismatch(f"{self.agreement_id}: signed without an agreement number")
        return replace(
            self,
            status=target,
            agreement_no=result.agreement_no if target == _S.SIGNED else None,
            message=(result.message or "")[:MAX_MESSAGE_LEN],
            updated_at=now,
            version=self.version + 1,
        )

    @property
    def open(self) -> bool:
        """The channel may still be asked about it (request again, confirm)."""
        return self.status in (_S.REQUESTED, _S.PENDING_CODE)


def mask_account(account_no: str) -> str:
    """``6222021234567890123`` -> ``6222********0123``: what the payer recognises, no more."""
    digits = account_no.strip()
    if len(digits) <= 8:
        return "*" * len(digits)
    return f"{digits[:4]}{'*' * 8}{digits[-4:]}"
