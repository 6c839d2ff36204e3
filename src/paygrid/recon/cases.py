"""差错 cases: a difference reconciliation could not explain, and its workflow until resolved.

A case is opened for every unexplained difference of a run. It is resolved automatically when a
rule explains it later (the money arrived late, the record was found on the neighbouring day,
the status was repaired through the payment's state machine), or by a person: *adjust* (an
adjustment voucher corrects paygrid's books to what happened) or *write off* (the difference is
booked as a loss or gain). Either way it is then closed. Nothing is edited in place: every step
is an entry of the case's history with who, when and why, and a correction of money is a new
voucher in the ledger.

The states are an explicit table; an illegal step is an error, never applied.

Domain-level: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

MAX_REASON = 500  # characters of a person's reason: a sentence or two, not a document
MAX_ACTOR = 64


class DifferenceKind(StrEnum):
    """What a reconciliation run found (the names are the contract of ``recon run --json``)."""

    # payment flow vs channel flow (the channel is the authority for status)
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    STATUS_REPAIRED = "STATUS_REPAIRED"
    CHANNEL_ONLY = "CHANNEL_ONLY"  # 长款
    PAYGRID_ONLY = "PAYGRID_ONLY"  # 短款
    FEE_MISMATCH = "FEE_MISMATCH"
    # accounting flow vs payment flow
    VOUCHER_MISSING = "VOUCHER_MISSING"
    VOUCHER_ORPHAN = "VOUCHER_ORPHAN"
    VOUCHER_AMOUNT_MISMATCH = "VOUCHER_AMOUNT_MISMATCH"
    # channel settlement vs bank statement
    SETTLEMENT_MISSING = "SETTLEMENT_MISSING"
    SETTLEMENT_AMOUNT_MISMATCH = "SETTLEMENT_AMOUNT_MISMATCH"
    BANK_ONLY = "BANK_ONLY"
    PENDING_CLEARING_MISMATCH = "PENDING_CLEARING_MISMATCH"


class CaseStatus(StrEnum):
    OPEN = "OPEN"
    AUTO_RESOLVED = "AUTO_RESOLVED"
    ADJUSTED = "ADJUSTED"
    WRITTEN_OFF = "WRITTEN_OFF"
    CLOSED = "CLOSED"


C = CaseStatus
TRANSITIONS: Mapping[CaseStatus, frozenset[CaseStatus]] = {
    C.OPEN: frozenset({C.AUTO_RESOLVED, C.ADJUSTED, C.WRITTEN_OFF}),
    C.AUTO_RESOLVED: frozenset({C.CLOSED}),
    C.ADJUSTED: frozenset({C.CLOSED}),
    C.WRITTEN_OFF: frozenset({C.CLOSED}),
    C.CLOSED: frozenset(),
}


class AutoRule(StrEnum):
    """Why a case resolved itself."""

    LATE_ARRIVAL = "LATE_ARRIVAL"  # the settlement or bill line arrived after the run
    CROSS_DAY = "CROSS_DAY"  # its counterpart was booked on a neighbouring business date
    STATUS_REPAIRED = "STATUS_REPAIRED"  # repaired through the payment's state machine


class Action(StrEnum):
    """What a person may do with an open case."""

    ADJUST = "adjust"
    WRITE_OFF = "write-off"


RESOLVED_BY: Mapping[Action, CaseStatus] = {
    Action.ADJUST: C.ADJUSTED,
    Action.WRITE_OFF: C.WRITTEN_OFF,
}
# An amount-less difference has nothing to post: only a rule explains it.
POSTS_NOTHING = frozenset({DifferenceKind.STATUS_REPAIRED})


class CaseRefused(ValueError):
    """A step the case does not allow (its state, its kind, or a bad reason or name)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of a case's history: append-only."""

    at: datetime
    status: CaseStatus
    by: str  # a person's name, or "recon" for a rule
    reason: str
    voucher_id: str | None = None  # the adjustment or write-off voucher, if one was posted


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    kind: DifferenceKind
    channel: str
    business_date: str  # YYYY-MM-DD, the channel's business date (账期)
    amount: int  # the difference in fen, signed: channel's side − paygrid's side
    currency: str
    status: CaseStatus
    history: tuple[Step, ...]

    @property
    def resolution(self) -> CaseStatus | None:
        """How it was resolved (auto-resolved, adjusted, written off), or None while open."""
        done = [step.status for step in self.history if step.status not in (C.OPEN, C.CLOSED)]
        return done[-1] if done else None

    def auto_resolve(self, rule: AutoRule, at: datetime, detail: str) -> Case:
        """A rule explains the difference: resolved and closed, with no voucher."""
        resolved = self._to(
            C.AUTO_RESOLVED, Step(at, C.AUTO_RESOLVED, "recon", f"{rule}: {detail}")
        )
        return resolved._to(C.CLOSED, Step(at, C.CLOSED, "recon", "closed after auto-resolution"))

    def resolve(
        self, action: Action, reason: str, by: str, at: datetime, voucher_id: str | None
    ) -> Case:
        """A person adjusts or writes off the difference; ``voucher_id`` is the voucher the
        service posted for it in the same transaction (None only for a zero amount)."""
        reason, by = _checked_text(reason, "reason", MAX_REASON), _checked_text(by, "by", MAX_ACTOR)
        if self.kind in POSTS_NOTHING:
            raise CaseRefused(f"a {self.kind} case is resolved by its rule, not by a person")
        if (voucher_id is None) != (self.amount == 0):
            raise CaseRefused("a difference with an amount is resolved with a voucher, only then")
        status = RESOLVED_BY[action]
        done = self._to(status, Step(at, status, by, reason, voucher_id))
        return done._to(C.CLOSED, Step(at, C.CLOSED, by, f"closed after {action}"))

    def _to(self, status: CaseStatus, step: Step) -> Case:
        if status not in TRANSITIONS[self.status]:
            raise CaseRefused(f"case {self.case_id}: {self.status} -> {status} is not allowed")
        return replace(self, status=status, history=(*self.history, step))


def open_case(
    case_id: str,
    kind: DifferenceKind,
    channel: str,
    business_date: str,
    amount: int,
    currency: str,
    at: datetime,
    detail: str,
) -> Case:
    """A new case for an unexplained difference found by a run."""
    step = Step(at, C.OPEN, "recon", detail)
    return Case(case_id, kind, channel, business_date, amount, currency, C.OPEN, (step,))


_K = DifferenceKind
# kinds whose amount is paygrid's record against the other party's (channel or bank) figure
_SIDES = frozenset(
    {
        _K.AMOUNT_MISMATCH,
        _K.CHANNEL_ONLY,
        _K.PAYGRID_ONLY,
        _K.SETTLEMENT_MISSING,
        _K.SETTLEMENT_AMOUNT_MISMATCH,
        _K.BANK_ONLY,
        _K.PENDING_CLEARING_MISMATCH,
    }
)


def case_amount(
    kind: DifferenceKind,
    refund: bool,
    paygrid: int | None,
    other: int | None,
    booked: int | None = None,
    expected_fee: int | None = None,
    channel_fee: int | None = None,
) -> int:
    """The difference in fen, signed as what paygrid's books lack (+) or hold too much of
    (−) against what really moved: the other party's figure (``other``: the channel's, the
    bank's) less paygrid's, the voucher's (``booked``) against its record's. A refund's money
    flows out, so its sign is turned; FEE_MISMATCH is the contracted fee less the fee taken."""
    sign = -1 if refund else 1
    if kind == _K.STATUS_REPAIRED:
        return 0
    if kind == _K.FEE_MISMATCH:
        assert expected_fee is not None and channel_fee is not None
        return expected_fee - channel_fee
    if kind == _K.VOUCHER_MISSING:
        return sign * (paygrid or 0)
    if kind == _K.VOUCHER_ORPHAN:
        return -sign * (booked or 0)
    if kind == _K.VOUCHER_AMOUNT_MISMATCH:
        return sign * ((paygrid or 0) - (booked or 0))
    assert kind in _SIDES, kind
    return sign * ((other or 0) - (paygrid or 0))


def rule_when_gone(kind: DifferenceKind, cross_day: bool) -> AutoRule:
    """Why an open case's difference is no longer found by a later run: its status was
    repaired, its counterpart found on a neighbouring date, or else what was missing (a bill
    line, a transfer, a voucher) arrived late."""
    if kind == _K.STATUS_REPAIRED:
        return AutoRule.STATUS_REPAIRED
    return AutoRule.CROSS_DAY if cross_day else AutoRule.LATE_ARRIVAL


def _checked_text(value: str, name: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise CaseRefused(f"--{name} must not be empty")
    if len(text) > limit or any(ord(ch) < 32 for ch in text):
        raise CaseRefused(f"--{name} must be at most {limit} printable characters")
    return text
