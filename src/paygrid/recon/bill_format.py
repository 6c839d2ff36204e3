"""What every channel's bill becomes once read: one normalised table (对账单明细), and the
refusal of a bad file.

A channel's folder reads its own layout (``channels/<name>/bill_import.py``) into a DuckDB
table of :data:`NORMAL_COLUMNS`, checks the file against its own summary lines, and raises
:class:`BillRefused` naming the file, the line and the field when anything is wrong: a bill is
imported whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

# (name, DuckDB type): one row per payment or refund the channel booked on the business date
NORMAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kind", "VARCHAR"),  # PAYMENT | REFUND
    ("trade_time", "TIMESTAMP"),  # UTC: the payment's success, the refund's acceptance
    ("channel_trade_no", "VARCHAR"),  # the channel's number for the payment
    ("payment_ref", "VARCHAR"),  # our number for the payment at the channel (its order ref)
    ("refund_ref", "VARCHAR"),  # our number for the refund at the channel; NULL on a payment
    ("amount", "BIGINT"),  # fen: the payment's amount, the refund's amount (positive)
    ("fee", "BIGINT"),  # fen, signed as the bill gives it: a refund's fee returned is negative
    ("currency", "VARCHAR"),
    ("status", "VARCHAR"),  # the channel's own word for the line's state
    ("channel_mchid", "VARCHAR"),  # our merchant number at the channel
)
PAYMENT = "PAYMENT"
REFUND = "REFUND"


class BillRefused(ValueError):
    """A bill that cannot be imported; nothing of it is. ``line`` 0: the file as a whole."""

    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        where = f"{file}: line {line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.file = file
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class BillTotals:
    """What the imported lines add up to (checked against the file's own summary)."""

    lines: int
    payments: int
    payment_amount: int
    refunds: int
    refund_amount: int
    fee: int
