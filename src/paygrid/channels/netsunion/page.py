"""Gateway payments (网关支付, method ``page``): the payer's browser is sent to the payer bank's
pay page with a form the platform signed, pays (or fails) there, and comes back to the
merchant. Everything here is MODELLED (docs/netsunion.md "Gateway payments"): NetsUnion does
route online-banking gateway payments between institutions and banks, but its messages for them
are not public.

- epcc.211 registers the order at the platform (idempotent on TrxId); the answer (epcc.212)
  carries ``PageInf``: the bank page's URL, a one-order token (``Tkn``), the expiry, and the
  platform's SM2 signature over the page fields (:data:`PAGE_FIELDS`, :func:`signed_text`).
- The page fields are what the browser POSTs to the bank's page: the bank verifies them with the
  platform's key; the adapter verifies them too before handing them to the payer.
- epcc.213 closes an unpaid gateway order (the page then refuses it); epcc.214 answers with the
  order as it stands.

Pure computation: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from paygrid.channels.netsunion import crypto, wire
from paygrid.channels.ports import ChannelError, CloseOutcome, OrderRequest

METHOD = "page"
MAX_DESCRIPTION_CHARS = 64
MAX_URL_CHARS = 512  # as the merchant API takes return_url
# The form the payer's browser posts to the bank's page, in the order they are signed.
PAGE_FIELDS: tuple[str, ...] = (
    "IssrId",  # the platform, who signed the fields
    "InstgId",  # the member (payee institution)
    "PyerAcctIssrId",  # the payer's bank: the page is that bank's
    "TrxId",
    "TrxAmt",
    "TrxExpDtTm",
    "Tkn",
    "SignSN",
)
SIGNATURE_FIELD = "Sgntr"
_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def signed_text(fields: Mapping[str, str]) -> bytes:
    """``IssrId=…&InstgId=…&…`` in :data:`PAGE_FIELDS` order: the bytes the platform signs.
    Values are plain tokens (no ``&`` or ``=``), so the text names one set of fields."""
    return "&".join(f"{name}={fields[name]}" for name in PAGE_FIELDS).encode("ascii")


def well_formed(fields: Mapping[str, str]) -> bool:
    """Exactly the page fields and the signature, each a plain token."""
    names = set(PAGE_FIELDS) | {SIGNATURE_FIELD}
    if set(fields) != names:
        return False
    return all(_VALUE.fullmatch(fields[n]) for n in PAGE_FIELDS) and bool(fields[SIGNATURE_FIELD])


def sign_fields(pair: crypto.KeyPair, fields: Mapping[str, str]) -> dict[str, str]:
    unsigned = {name: fields[name] for name in PAGE_FIELDS}
    return {**unsigned, SIGNATURE_FIELD: crypto.sign(pair, signed_text(unsigned))}


def verify_fields(public: bytes, fields: Mapping[str, str]) -> bool:
    return well_formed(fields) and crypto.verify(
        public, signed_text(fields), fields[SIGNATURE_FIELD]
    )


# --- the member's side -------------------------------------------------------------------------


def order_body(
    request: OrderRequest, bank: str, member_id: str, reserve: str, now: datetime
) -> wire.Node:
    """The epcc.211 body of a gateway payment."""
    expiry = wire.beijing_text(request.expire_at) if request.expire_at is not None else None
    return {
        "PyerInf": {"PyerAcctIssrId": bank},
        "PyeeInf": {"PyeeAcctIssrId": member_id, "PyeeAcctId": reserve},
        "TrxInf": {
            "TrxCtgy": wire.DEBIT_CATEGORY,
            "TrxId": request.payment_ref,
            "TrxDtTm": wire.beijing_text(now),
            "TrxAmt": wire.amount_text(request.amount.minor),
            "TrxExpDtTm": expiry,
            "NtfyUrl": request.notify_url,  # MODELLED, as for debits
            "RtrnUrl": request.return_url or None,  # where the bank page sends the payer back
        },
        "OrdrInf": {
            "OrdrId": request.payment_ref,
            "OrdrDesc": request.description[:MAX_DESCRIPTION_CHARS],
        },
        "InstgInf": {"InstgId": member_id},
    }


def checked_request(request: OrderRequest, now: datetime) -> None:
    """A gateway payment the platform could take; ChannelError (not retryable) otherwise."""
    if request.amount.minor <= 0:
        raise ChannelError("INVALID_PARAMETER", "a gateway payment needs a positive amount")
    if request.expire_at is not None and request.expire_at <= now:
        raise ChannelError("INVALID_PARAMETER", "the payment has already expired")
    url = request.return_url or ""
    if len(url) > MAX_URL_CHARS or (url and not url.startswith(("http://", "https://"))):
        raise ChannelError("INVALID_PARAMETER", "return_url must be an http(s) address")


def page_fields(
    answer: wire.Message, request: OrderRequest, bank: str, member_id: str
) -> dict[str, str]:
    """The form fields of the answer's ``PageInf``, for our order only."""
    fields = {
        "IssrId": answer.issuer,
        "InstgId": member_id,
        "PyerAcctIssrId": bank,
        "TrxId": request.payment_ref,
        "TrxAmt": wire.amount_text(request.amount.minor),
        "TrxExpDtTm": answer.text("PageInf/TrxExpDtTm") or "",
        "Tkn": answer.text("PageInf/Tkn") or "",
        "SignSN": answer.text("PageInf/SignSN") or "",
        SIGNATURE_FIELD: answer.text("PageInf/Sgntr") or "",
    }
    return fields


def close_outcome(status: str | None) -> CloseOutcome | None:
    """A gateway order's TrxStatus after epcc.213; None while it is somehow still open."""
    if status in (wire.TRX_CLOSED, wire.BIZ_FAILED):
        return CloseOutcome.CLOSED
    if status == wire.BIZ_SUCCESS:
        return CloseOutcome.ALREADY_PAID
    return None
