"""Payer banks (kernel/banks.py codes) as UnionPay issuer institution codes (发卡机构代码).

Sent as ``issInsCode`` on a front consume, so the payer lands at that bank's page (MODELLED:
the field's effect at the real gateway is unverified; the codes are the institutions' 8-digit
UnionPay/CNAPS codes). A bank not listed is not sent: the payer picks one at UnionPay.
"""

from __future__ import annotations

from collections.abc import Mapping

ISSUERS: Mapping[str, str] = {
    "ICBC": "01020000",
    "ABC": "01030000",
    "BOC": "01040000",
    "CCB": "01050000",
    "BOCOM": "03010000",
    "CITIC": "03020000",
    "CMB": "03080000",
    "PSBC": "01000000",
}
BANK_OF_ISSUER: Mapping[str, str] = {code: bank for bank, code in ISSUERS.items()}


def issuer_of(bank: str | None) -> str | None:
    return ISSUERS.get(bank) if bank else None
