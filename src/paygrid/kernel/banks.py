"""Payer banks (付款银行 / 发卡行): the channel-neutral codes the core, routing and the cashier use.

A payment's payer bank is what a cut-over is by ("1% of ICBC's payments through a new channel").
Each channel maps these codes to its own (a clearing member id, an issuer code) in its
own folder; nothing outside a channel folder knows a channel's bank numbering."""

from __future__ import annotations

from collections.abc import Mapping

BANKS: Mapping[str, str] = {
    "ICBC": "中国工商银行",
    "ABC": "中国农业银行",
    "BOC": "中国银行",
    "CCB": "中国建设银行",
    "BOCOM": "交通银行",
    "CMB": "招商银行",
    "PSBC": "中国邮政储蓄银行",
    "CITIC": "中信银行",
}
"""Code -> the bank's name as a payer reads it. Codes are upper-case ASCII, at most 8 chars."""

MAX_BANK_CODE_LEN = 8


def is_bank(code: str) -> bool:
    return code in BANKS


def bank_name(code: str) -> str:
    return BANKS[code]
