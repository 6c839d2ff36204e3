"""Signing agreements (签约) for the merchant API and the cashier: ask the channel (the bank
texts the payer a code), confirm with the code, and find a signed one for a payment.

Crash safety: the agreement is written REQUESTED before the channel is asked, under its own id
that the channel takes once; a repeat of the request asks again with the same id."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import cast

from sqlalchemy.exc import IntegrityError

from paygrid.agreements import repository
from paygrid.agreements.domain import (
    Agreement,
    AgreementMismatch,
    AgreementStatus,
    IllegalAgreementTransition,
    mask_account,
)
from paygrid.channels.ports import AgreementChannel, AgreementRequest, AgreementResult, ChannelError
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.payments.core import Channels, channel_refusal
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import PaymentService
from paygrid.storage.database import Database

log = logging.getLogger(__name__)
AGREEMENT_METHOD = "agreement"  # the payment method of channels that sign agreements


@dataclass(frozen=True, slots=True)
class RequestAgreement:
    mchid: str
    out_agreement_no: str
    channel: str | None  # None: the merchant's one channel that signs agreements
    bank: str
    account_no: str
    holder_name: str
    id_type: str
    id_no: str
    mobile: str
    allowed_channels: frozenset[str]

    def fingerprint(self) -> str:
        """Tells a repeat from another request; a hash of the whole request, not its details."""
        body = {k: v for k, v in asdict(self).items() if k != "allowed_channels"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def resource(a: Agreement) -> dict[str, object]:
    """The agreement as the merchant sees it: never the channel's agreement number."""
    return {
        "agreement_id": a.agreement_id,
        "out_agreement_no": a.out_agreement_no,
        "channel": a.channel,
        "bank": a.bank,
        "masked_account": a.masked_account,
        "status": a.status.value,
        "message": a.message,
        "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat(),
    }


class AgreementService:
    def __init__(self, db: Database, channels: Channels, cell: int = 0) -> None:
        self._db = db
        self._channels = channels
        self._cell = cell

    @classmethod
    def over(cls, db: Database, payments: PaymentService) -> AgreementService:
        """Agreements over the channels the payment core reaches in this process."""
        return cls(db, payments.channels, payments.core.cell)

    def signing_channels(self, allowed: Collection[str]) -> list[str]:
        """The channels of ``allowed`` that sign agreements, in registry order."""
        return [
            name
            for name in sorted(self._channels.names)
            if name in allowed and AGREEMENT_METHOD in self._channels.capabilities(name).methods
        ]

    def request(self, cmd: RequestAgreement) -> tuple[Agreement, bool]:
        """Sign (step one): the bank texts the payer a code. A repeat with the same body
        returns the agreement (asking the channel again while it never answered); another
        body is DUPLICATE_OUT_AGREEMENT_NO."""
        fingerprint = cmd.fingerprint()
        with self._db.read() as conn:
            found = repository.find(conn, cmd.mchid, cmd.out_agreement_no)
        if found is None:
            agreement = self._new(cmd)
            try:
                with self._db.transaction() as conn:
                    repository.add(conn, agreement, fingerprint)
            except IntegrityError:
                with self._db.read() as conn:
                    found = repository.find(conn, cmd.mchid, cmd.out_agreement_no)
                if found is None:
                    raise
            else:
                return self._ask(agreement, cmd), True
        existing, made_by = found
        if made_by != fingerprint:
            raise PaymentRejected(
                "DUPLICATE_OUT_AGREEMENT_NO",
                f"out_agreement_no {cmd.out_agreement_no!r} was used for another agreement "
                f"({existing.agreement_id}) with a different body",
            )
        if existing.status == AgreementStatus.REQUESTED:
            return self._ask(existing, cmd), False
        return existing, False

    def confirm(self, mchid: str, agreement_id: str, sms_code: str) -> Agreement:
        """Sign (step two) with the code the payer received: SIGNED, PENDING_CODE again (a
        wrong code: ``message`` says so) or FAILED."""
        agreement = self.get(mchid, agreement_id)
        if agreement.status != AgreementStatus.PENDING_CODE:
            raise PaymentRejected(
                "AGREEMENT_NOT_PENDING",
                f"agreement {agreement_id} is {agreement.status.value}: nothing to confirm",
            )
        adapter = self._adapter(agreement.channel)
        try:
            result = adapter.confirm_agreement(agreement.agreement_id, sms_code)
        except ChannelError as exc:
            raise channel_refusal(agreement.channel, exc, doing="confirm") from exc
        return self._apply(agreement, result)

    def get(self, mchid: str | None, agreement_id: str) -> Agreement:
        with self._db.read() as conn:
            agreement = repository.get(conn, agreement_id)
        if agreement is None or (mchid is not None and agreement.mchid != mchid):
            raise PaymentRejected("AGREEMENT_NOT_FOUND", f"no agreement {agreement_id}")
        return agreement

    def signed(self, mchid: str, agreement_id: str) -> Agreement:
        """The merchant's agreement a payment debits; refused unless SIGNED."""
        try:
            agreement = self.get(mchid, agreement_id)
        except PaymentRejected:
            raise PaymentRejected("INVALID_PAYER", f"no agreement {agreement_id}") from None
        if agreement.status != AgreementStatus.SIGNED or agreement.agreement_no is None:
            raise PaymentRejected(
                "INVALID_PAYER", f"agreement {agreement_id} is {agreement.status.value}"
            )
        return agreement

    def _new(self, cmd: RequestAgreement) -> Agreement:
        channels = self.signing_channels(cmd.allowed_channels)
        channel = cmd.channel or (channels[0] if len(channels) == 1 else None)
        if channel is None or channel not in channels:
            raise PaymentRejected(
                "AGREEMENT_NOT_SUPPORTED",
                f"{cmd.channel or 'none of your channels'} signs no agreements"
                + (f"; name one of {', '.join(channels)}" if len(channels) > 1 else ""),
            )
        now = utcnow()
        return Agreement(
            agreement_id=new_id("agr", self._cell),
            mchid=cmd.mchid,
            out_agreement_no=cmd.out_agreement_no,
            channel=channel,
            bank=cmd.bank,
            masked_account=mask_account(cmd.account_no),
            status=AgreementStatus.REQUESTED,
            agreement_no=None,
            message="",
            created_at=now,
            updated_at=now,
            version=1,
        )

    def _ask(self, agreement: Agreement, cmd: RequestAgreement) -> Agreement:
        request = AgreementRequest(
            agreement_ref=agreement.agreement_id,
            bank=agreement.bank,
            account_no=cmd.account_no,
            holder_name=cmd.holder_name,
            id_type=cmd.id_type,
            id_no=cmd.id_no,
            mobile=cmd.mobile,
        )
        try:
            result = self._adapter(agreement.channel).request_agreement(request)
        except ChannelError as exc:
            raise channel_refusal(agreement.channel, exc, doing="sign") from exc
        return self._apply(agreement, result)

    def _apply(self, agreement: Agreement, result: AgreementResult) -> Agreement:
        try:
            after = agreement.apply(result, utcnow())
        except (IllegalAgreementTransition, AgreementMismatch) as exc:
            log.error("agreement %s: channel answer refused: %s", agreement.agreement_id, exc)
            raise PaymentRejected("CHANNEL_ERROR", f"{agreement.channel}: {exc}") from None
        try:
            with self._db.transaction() as conn:
                repository.save(conn, agreement, after)
        except repository.ConcurrentChange:
            raise PaymentRejected(
                "CONCURRENT_UPDATE", f"agreement {agreement.agreement_id} changed meanwhile"
            ) from None
        return after

    def _adapter(self, channel: str) -> AgreementChannel:
        adapter = self._channels.adapter(channel)
        if not hasattr(adapter, "request_agreement"):
            raise PaymentRejected("AGREEMENT_NOT_SUPPORTED", f"{channel} signs no agreements")
        return cast(AgreementChannel, adapter)
