"""The reserve account's statement (备付金账户对账单) in SWIFT MT940: writer (the bank sandbox)
and parser (paygrid, through the well-kept ``mt-940`` library).

One statement per account and date, in a FIN envelope (``{1:…}{2:O940…}{4:`` … ``-}``)::

    :20:  reference of this statement        :25:  the account
    :28C: statement number / page            :60F: opening balance (C|D, YYMMDD, currency, amount)
    :61:  one entry each: value date YYMMDD, entry date MMDD, C|D, amount ("1234,56"),
          N + transaction type, the customer reference (≤16), "//" the bank's reference
    :86:  the entry's details (who paid, why)  :62F: closing balance

Amounts use a comma for the decimal point and are parsed exactly into fen, never through a
float. SWIFT's character set has no Chinese: every field but :86: is plain ASCII, and :86:
carries the payer's name in UTF-8 with the usual codewords
(``/EREF/<reference>/ORDP//NAME/<payer>/REMI/<details>``; MODELLED: what Chinese banks put there
for a channel's settlement is not public). The bytes are decoded strictly (``mt-940`` would fall
back to cp852 and never fail). The opening balance plus the entries must equal the closing
balance, and an entry's sign must follow its mark (a reversal ``RC`` is money out), or the
statement is refused whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import mt940

from paygrid.kernel.money import MoneyError, format_major, parse_major

MAX_REFERENCE = 16  # :61: customer reference, SWIFT's limit
MAX_DETAILS = 6 * 65  # :86:, six lines of 65
MAX_ENTRIES = 100_000  # one day's entries on one reserve account: far beyond the sandbox's
MAX_BYTES = 64 * 1024 * 1024
SENDER = "PAYGBANKXXXX"  # the bank sandbox's BIC-like logical terminal (MODELLED)
OPTIONS = mt940.Options(  # the next major's behaviour: see docs/recon.md
    reversal_sign=True,  # an RC is money out (5.x's default signs it positive)
    unbounded_details=True,  # never cut :86: silently
    strip_bom=True,
    merge_keeps_values=True,
    case_insensitive_marks=True,
)
SIGN = {"C": 1, "RD": 1, "D": -1, "RC": -1}
_BLOCK4 = re.compile(r"\{4:\r?\n(.*?)\r?\n-\}", re.S)


class StatementError(ValueError):
    """The statement cannot be read, or it does not add up; ``where`` names the place."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the statement (流水): ``amount`` in fen, positive for money in."""

    value_date: date
    amount: int
    reference: str  # ours: what the payer put on the transfer (the settlement's batch)
    bank_reference: str
    details: str


@dataclass(frozen=True, slots=True)
class Statement:
    account: str
    statement_date: date
    number: int
    currency: str
    opening: int
    closing: int
    entries: tuple[Entry, ...]

    def check(self, where: str) -> None:
        moved = sum(e.amount for e in self.entries)
        if self.opening + moved != self.closing:
            raise StatementError(
                where,
                f"opening {self.opening} + entries {moved} != closing {self.closing} (fen)",
            )


def write_mt940(statement: Statement) -> str:
    """The statement as a bank sends it (the sandbox's side)."""
    statement.check(f"statement {statement.account} {statement.statement_date}")
    day = statement.statement_date
    lines = [
        f"{{1:F01{SENDER}0000000000}}{{2:O9402359{day:%y%m%d}{SENDER}0000000000{day:%y%m%d}2359N}}{{4:",
        f":20:STMT{day:%Y%m%d}",
        f":25:{statement.account}",
        f":28C:{statement.number:05d}/001",
        f":60F:{_balance(statement.opening, day, statement.currency)}",
    ]
    for entry in statement.entries:
        assert len(entry.reference) <= MAX_REFERENCE and len(entry.details) <= MAX_DETAILS
        mark = "C" if entry.amount >= 0 else "D"
        lines.append(
            f":61:{entry.value_date:%y%m%d}{day:%m%d}{mark}"
            f"{_amount(abs(entry.amount), statement.currency)}"
            f"NTRF{entry.reference}//{entry.bank_reference}"
        )
        lines.append(f":86:{entry.details}")
    lines.append(f":62F:{_balance(statement.closing, day, statement.currency)}")
    lines.append("-}")
    return "\r\n".join(lines) + "\r\n"


def details(reference: str, payer: str, remittance: str) -> str:
    """An entry's :86: with the codewords paygrid reads back (``/EREF/`` the reference)."""
    return f"/EREF/{reference}/ORDP//NAME/{payer}/REMI/{remittance}"


def parse_mt940(content: bytes, source: str) -> Statement:
    """Read one statement (UTF-8, strictly); ``source`` (a file name) names it in errors."""
    if len(content) > MAX_BYTES:
        raise StatementError(source, f"larger than {MAX_BYTES} bytes")
    try:
        text = content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise StatementError(source, f"not UTF-8 at byte {exc.start}") from None
    blocks = _BLOCK4.findall(text) or [text]  # the FIN envelope's block 4, else the bare text
    try:
        pages = [p for block in blocks for p in mt940.parse_statements(block, options=OPTIONS)]
    except Exception as exc:  # the library raises plain errors on bad tags
        raise StatementError(source, f"not an MT940 statement ({exc})") from None
    if len(pages) != 1:
        raise StatementError(source, f"{len(pages)} statements: one per file and date")
    return _statement(pages[0], source)


def _statement(parsed: mt940.models.Transactions, source: str) -> Statement:
    data = parsed.data
    for tag, name in (("final_opening_balance", ":60F:"), ("final_closing_balance", ":62F:")):
        if tag not in data:
            raise StatementError(source, f"no {name} balance")
    opening, closing = data["final_opening_balance"], data["final_closing_balance"]
    currency = str(opening.amount.currency)
    if len(parsed.transactions) > MAX_ENTRIES:
        raise StatementError(source, f"more than {MAX_ENTRIES} entries")
    entries = tuple(_entry(t.data, currency, source, n) for n, t in enumerate(parsed, 1))
    statement = Statement(
        account=str(data.get("account_identification", "")),
        statement_date=date.fromisoformat(closing.date.isoformat()),
        number=int(data.get("statement_number") or 0),
        currency=currency,
        opening=_fen(opening.amount.amount, currency, f"{source} :60F:"),
        closing=_fen(closing.amount.amount, currency, f"{source} :62F:"),
        entries=entries,
    )
    statement.check(source)
    return statement


def _entry(t: dict[str, object], currency: str, source: str, n: int) -> Entry:
    where = f"{source} entry {n} (:61:)"
    amount = t["amount"]
    if str(getattr(amount, "currency", currency)) != currency:
        raise StatementError(where, "currency differs from the balance's")
    raw = t["date"]
    fen = _fen(amount.amount, currency, where)  # type: ignore[attr-defined]
    mark = str(t.get("status") or "")
    if mark not in SIGN or fen * SIGN[mark] < 0:
        raise StatementError(where, f"the amount's sign does not follow its mark {mark!r}")
    return Entry(
        value_date=date.fromisoformat(raw.isoformat()),  # type: ignore[attr-defined]
        amount=fen,
        reference=str(t.get("customer_reference") or ""),
        bank_reference=str(t.get("bank_reference") or ""),
        details=str(t.get("transaction_details") or "").replace("\n", ""),
    )


def _fen(value: Decimal, currency: str, where: str) -> int:
    try:
        return parse_major(format(value, "f"), currency)
    except MoneyError as exc:
        raise StatementError(where, str(exc)) from None


def _amount(fen: int, currency: str) -> str:
    return format_major(fen, currency).replace(".", ",")


def _balance(fen: int, day: date, currency: str) -> str:
    mark = "C" if fen >= 0 else "D"
    return f"{mark}{day:%y%m%d}{currency}{_amount(abs(fen), currency)}"
