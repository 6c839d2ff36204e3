"""The payer banks as NetsUnion numbers them: 14-character member ids (机构标识).

The shape is observed (``C1010211000012``, ``C1104412000011`` in public samples: ``C`` for a
bank, ``Z`` for a payment institution, ``G`` for the platform); which id is which bank is not
public. The assignment below is MODELLED: the first observed id is given to ICBC, the rest are
made up in the same shape. A real connection replaces this table with the platform's list.
"""

from __future__ import annotations

from collections.abc import Mapping

from paygrid.kernel.banks import BANKS

BANK_IDS: Mapping[str, str] = {
    "ICBC": "C1010211000012",  # observed id; the bank it belongs to is MODELLED
    "ABC": "C1010311000014",
    "BOC": "C1010411000016",
    "CCB": "C1010511000018",
    "BOCOM": "C1030111000010",
    "CMB": "C1030844000013",
    "PSBC": "C1040311000015",
    "CITIC": "C1030211000017",
}
"""kernel/banks.py code -> NetsUnion bank member id (MODELLED)."""

CODES: Mapping[str, str] = {bank_id: code for code, bank_id in BANK_IDS.items()}
ID_LENGTH = 14

assert set(BANK_IDS) == set(BANKS), "every payer bank has a NetsUnion id"
assert all(len(i) == ID_LENGTH and i.startswith("C") for i in BANK_IDS.values())


def bank_id(code: str) -> str | None:
    """The NetsUnion id of a kernel bank code; None for a bank it does not reach."""
    return BANK_IDS.get(code)


def bank_code(bank_id: str) -> str | None:
    """The kernel bank code of a NetsUnion bank id; None for an id we do not know."""
    return CODES.get(bank_id)
