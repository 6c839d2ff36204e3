"""Chart of accounts and posting rules (DESIGN.md "Ledger"). No framework imports.

A voucher balances per currency by construction (asserted); entries are never edited: a
mistake is reversed by a new voucher.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass

from paygrid.kernel.money import rate_fee


class AccountKind(enum.StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    INCOME = "income"
    EXPENSE = "expense"


@dataclass(frozen=True, slots=True)
class Account:
    code: str
    name: str
    kind: AccountKind
    currency: str


def pending_clearing(channel: str, currency: str) -> Account:
    """待清算: what the channel owes us for successful payments not yet settled."""
    return Account(
        f"pending_clearing:{channel}:{currency}",
        f"待清算 pending clearing {channel}",
        AccountKind.ASSET,
        currency,
    )


def merchant_pending_settlement(mchid: str, currency: str) -> Account:
    """商户待结算: what we owe the merchant until settlement pays it out."""
    return Account(
        f"merchant_pending_settlement:{mchid}:{currency}",
        f"商户待结算 merchant pending settlement {mchid}",
        AccountKind.LIABILITY,
        currency,
    )


def fee_income(currency: str) -> Account:
    """手续费收入: the merchant fee we earn."""
    return Account(f"fee_income:{currency}", "手续费收入 fee income", AccountKind.INCOME, currency)


def reserve_bank(currency: str) -> Account:
    """备付金银行存款: the money in the reserve account at the bank."""
    return Account(
        f"reserve_bank:{currency}", "备付金 reserve bank account", AccountKind.ASSET, currency
    )


def channel_cost(channel: str, currency: str) -> Account:
    """通道成本: the channel's fee to us."""
    return Account(
        f"channel_cost:{channel}:{currency}",
        f"通道成本 channel cost {channel}",
        AccountKind.EXPENSE,
        currency,
    )


def recon_suspense(currency: str) -> Account:
    """差错挂账: a reconciliation difference adjusted into the books, awaiting whose it is
    (the merchant's, the channel's): cleared from here by a later voucher."""
    return Account(
        f"recon_suspense:{currency}", "差错挂账 recon suspense", AccountKind.LIABILITY, currency
    )


def recon_write_off(currency: str) -> Account:
    """差错损益: a reconciliation difference written off, a loss (debit) or a gain (credit)."""
    return Account(
        f"recon_write_off:{currency}", "差错损益 recon write-off", AccountKind.EXPENSE, currency
    )


class Direction(enum.StrEnum):
    DEBIT = "D"
    CREDIT = "C"


@dataclass(frozen=True, slots=True)
class Entry:
    account: Account
    direction: Direction
    amount: int

    def __post_init__(self) -> None:
        assert type(self.amount) is int and self.amount >= 0, self.amount


@dataclass(frozen=True, slots=True)
class Voucher:
    """凭证: a balanced set of entries for one business event."""

    kind: str
    business_ref: str
    memo: str
    entries: tuple[Entry, ...]
    parent_ref: str | None = None  # the record this one belongs to (a refund's payment)

    def __post_init__(self) -> None:
        assert self.entries, "a voucher has entries"
        assert_balanced(self.entries)


class Unbalanced(AssertionError):
    pass


def assert_balanced(entries: tuple[Entry, ...]) -> None:
    net: dict[str, int] = defaultdict(int)
    for e in entries:
        net[e.account.currency] += e.amount if e.direction == Direction.DEBIT else -e.amount
    bad = {cur: n for cur, n in net.items() if n != 0}
    if bad:
        raise Unbalanced(f"voucher does not balance: {bad}")


@dataclass(frozen=True, slots=True)
class CaptureFees:
    merchant_fee: int  # what the merchant pays us
    channel_fee: int  # what the channel charges us


def capture_fees(amount: int, merchant_rate_ppm: int, channel_rate_ppm: int) -> CaptureFees:
    return CaptureFees(rate_fee(amount, merchant_rate_ppm), rate_fee(amount, channel_rate_ppm))


def capture_voucher(
    payment_id: str, mchid: str, channel: str, amount: int, currency: str, fees: CaptureFees
) -> Voucher:
    """Payment succeeds (DESIGN.md): Dr pending clearing; Cr merchant pending settlement (net)
    and fee income; channel fee accrues: Dr channel cost, Cr pending clearing."""
    assert amount > 0 and 0 <= fees.merchant_fee <= amount and 0 <= fees.channel_fee <= amount
    D, C = Direction.DEBIT, Direction.CREDIT
    entries = [
        Entry(pending_clearing(channel, currency), D, amount),
        Entry(merchant_pending_settlement(mchid, currency), C, amount - fees.merchant_fee),
    ]
    if fees.merchant_fee:
        entries.append(Entry(fee_income(currency), C, fees.merchant_fee))
    if fees.channel_fee:
        entries.append(Entry(channel_cost(channel, currency), D, fees.channel_fee))
        entries.append(Entry(pending_clearing(channel, currency), C, fees.channel_fee))
    return Voucher("capture", payment_id, f"capture {payment_id}", tuple(entries))


def refund_fee_returned(
    fee_charged: int, total: int, refunded_before: int, returned_before: int, amount: int
) -> int:
    """The merchant fee a refund of ``amount`` gives back, pro rata over the payment's
    ``total``: cumulative, so after refunds R the fee returned is round_half_up(fee × R / total).
    The refund that completes the payment returns exactly the rest; none returns more than
    remains, nor more than its own amount; over any sequence no fen is lost or created."""
    assert 0 <= fee_charged <= total and amount > 0 and refunded_before + amount <= total
    assert 0 <= returned_before <= fee_charged
    refunded = refunded_before + amount
    due = (fee_charged * refunded * 2 + total) // (2 * total)  # half up
    return max(0, min(due - returned_before, fee_charged - returned_before, amount))


def refund_voucher(
    refund_id: str,
    payment_id: str,
    mchid: str,
    channel: str,
    amount: int,
    currency: str,
    fee_returned: int,
    channel_fee_returned: int = 0,
) -> Voucher:
    """Refund succeeds (DESIGN.md): Dr merchant pending settlement (the amount less the fee
    returned) and fee income (the fee returned); Cr pending clearing of the channel. The
    channel gives back its fee pro rata too (``channel_fee_returned``): Dr pending clearing,
    Cr channel cost, so pending clearing keeps netting to what the channel will settle."""
    assert amount > 0 and 0 <= fee_returned <= amount and 0 <= channel_fee_returned <= amount
    D, C = Direction.DEBIT, Direction.CREDIT
    entries = []
    net = amount - fee_returned
    if net:
        entries.append(Entry(merchant_pending_settlement(mchid, currency), D, net))
    if fee_returned:
        entries.append(Entry(fee_income(currency), D, fee_returned))
    entries.append(Entry(pending_clearing(channel, currency), C, amount))
    if channel_fee_returned:
        entries.append(Entry(pending_clearing(channel, currency), D, channel_fee_returned))
        entries.append(Entry(channel_cost(channel, currency), C, channel_fee_returned))
    return Voucher(
        "refund", refund_id, f"refund {refund_id} of {payment_id}", tuple(entries), payment_id
    )


def settlement_voucher(channel: str, reference: str, amount: int, currency: str) -> Voucher:
    """The channel settles to the reserve bank (DESIGN.md): Dr reserve bank, Cr pending
    clearing of the channel; one per transfer (``reference``, as the bank statement shows it)."""
    assert amount > 0
    entries = (
        Entry(reserve_bank(currency), Direction.DEBIT, amount),
        Entry(pending_clearing(channel, currency), Direction.CREDIT, amount),
    )
    return Voucher(
        "settlement", f"{channel}:{reference}", f"{channel} settles {reference}", entries
    )


CASE_VOUCHER_KINDS = ("recon_adjustment", "recon_write_off")


def case_voucher(case_id: str, write_off: bool, books: Account, amount: int, memo: str) -> Voucher:
    """A 差错 case resolved by a person (DESIGN.md "Money invariants": corrections are new
    vouchers): ``books`` (the channel's pending clearing, or the reserve bank) moves by the
    case's signed ``amount`` (+: paygrid's books lacked it), against recon suspense (adjust)
    or recon write-off (write off). One per case (``business_ref``)."""
    assert amount != 0
    other = recon_write_off(books.currency) if write_off else recon_suspense(books.currency)
    D, C = Direction.DEBIT, Direction.CREDIT
    first, second = (books, other) if amount > 0 else (other, books)
    entries = (Entry(first, D, abs(amount)), Entry(second, C, abs(amount)))
    kind = CASE_VOUCHER_KINDS[1] if write_off else CASE_VOUCHER_KINDS[0]
    return Voucher(kind, case_id, memo, entries)
