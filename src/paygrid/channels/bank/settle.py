"""A channel sandbox settling a business day into the institution's reserve account.

A real channel pays its merchant's net of day D (payments − refunds − fees) into the
institution's reserve account (备付金) on D+1 (T+1) by bank transfer. A channel sandbox does
the same against the bank sandbox when its day closes, and can misbehave the way channels do:
pay late, pay short, or not at all. The transfer's reference (≤16 characters, the MT940
customer reference) names the channel, the date and the merchant, so paygrid can match it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta

import httpx

BANK_URL_ENV = "PAYGRID_SANDBOX_BANK_URL"  # set by `paygrid up` for the sandboxes it starts
TIMEOUT_S = 5.0
FAULTS = ("none", "late", "short", "missing")
FAULT_BOUNDS = {"settlement_late_days": (1, 30), "settlement_short_fen": (1, 10**9)}


@dataclass(frozen=True, slots=True)
class SettlementTerms:
    """How the channel settles: ``days`` after the business date (T+1), and the fault."""

    days: int = 1
    fault: str = "none"  # none | late | short | missing
    late_days: int = 2  # a late settlement arrives this many days after it was due
    short_fen: int = 100  # a short settlement lacks this much


@dataclass(frozen=True, slots=True)
class Settlement:
    reference: str
    amount: int
    value_date: date


def reference(prefix: str, day: date, mchid: str) -> str:
    """``WX20261201`` + the merchant number's last 6 digits: unique per channel, day, merchant."""
    return f"{prefix}{day:%Y%m%d}{mchid[-6:]}"[:16]


def plan(prefix: str, mchid: str, day: date, net: int, terms: SettlementTerms) -> Settlement | None:
    """The transfer the channel makes for ``day``'s ``net``; None when it pays nothing (a
    net of zero or less is carried, a ``missing`` fault never pays)."""
    if net <= 0 or terms.fault == "missing":
        return None
    value_date = day + timedelta(days=terms.days)
    amount = net
    if terms.fault == "late":
        value_date += timedelta(days=terms.late_days)
    elif terms.fault == "short":
        amount = max(1, net - terms.short_fen)
    return Settlement(reference(prefix, day, mchid), amount, value_date)


def bank_url() -> str | None:
    """The bank sandbox this channel sandbox settles into; None: started without one."""
    return os.environ.get(BANK_URL_ENV, "").rstrip("/") or None


def transfer(base: str, settlement: Settlement, payer_name: str, details: str) -> dict[str, object]:
    """Credit the reserve account (once per reference) and end the value date at the bank, so
    its statement is out at once, as the day's would be the next morning."""
    with httpx.Client(timeout=TIMEOUT_S) as client:
        account = client.get(f"{base}/sandbox/credentials").raise_for_status().json()
        body = {
            "account": account["account"],
            "reference": settlement.reference,
            "amount": settlement.amount,
            "currency": account["currency"],
            "value_date": settlement.value_date.isoformat(),
            "payer_name": payer_name,
            "details": details,
        }
        booked = client.post(f"{base}/sandbox/credit", json=body).raise_for_status().json()
        day = {"date": settlement.value_date.isoformat()}
        client.post(f"{base}/sandbox/close-day", json=day).raise_for_status()
    return {**body, **booked}


def settle_day(
    prefix: str, mchid: str, day: date, net: int, terms: SettlementTerms, payer_name: str
) -> dict[str, object]:
    """What the channel did about ``day``'s net: transferred it (``SETTLED``, with the
    transfer), nothing to pay (``NONE``: a net of zero or less, or the ``missing`` fault),
    the bank could not be reached (``FAILED``: closing the day again retries, once per
    reference), or no bank was given (``NO_BANK``: a sandbox started on its own)."""
    planned = plan(prefix, mchid, day, net, terms)
    base = bank_url()
    if base is None:
        return {"status": "NO_BANK", "net": net}
    if planned is None:
        return {"status": "NONE", "net": net, "fault": terms.fault}
    try:
        done = transfer(base, planned, payer_name, f"settlement {day.isoformat()} net {net}")
    except httpx.HTTPError as exc:
        return {"status": "FAILED", "net": net, "error": str(exc)}
    return {"status": "SETTLED", "net": net, "fault": terms.fault, "transfer": done}
