"""PaymentService on the channel's word, over SQLite with the in-memory channel: callbacks are
deduplicated by (notify id, payment), refused 补单 answers are recorded once and reported, and
`paygrid check` notices a success whose amount the channel never confirmed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from paygrid.kernel.clock import utcnow
from paygrid.kernel.money import Money
from paygrid.merchants.service import create_merchant
from paygrid.merchants.vault import KEK_BYTES, Vault
from paygrid.ops.check import check_database
from paygrid.payments.domain import PaymentStatus
from paygrid.payments.service import CreatePayment, PaymentService, Urls
from paygrid.storage.database import Database
from paygrid.storage.schema import channel_callbacks, payments
from tests.unit.fake_channel import FakeChannel

SIGNED = {"x-fake-signature": "ok"}


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.db = Database(f"sqlite:///{tmp / 't.db'}")
        self.db.migrate()
        self.channel = FakeChannel()
        self.service = PaymentService(
            self.db, {"wechatpay": self.channel}, Urls("http://cashier", "http://api")
        )
        self.mchid = create_merchant(
            self.db, Vault(os.urandom(KEK_BYTES)), "m", methods=("wechatpay",)
        ).merchant.mchid
        self.count = 0

    def create(self, total: int = 900) -> str:
        self.count += 1
        cmd = CreatePayment(
            mchid=self.mchid,
            out_trade_no=f"o{self.count}",
            total=total,
            currency="CNY",
            description="d",
            notify_url="http://127.0.0.1:9/n",
            return_url=None,
            channel="wechatpay",
            method="native",
            expire_at=utcnow() + timedelta(hours=1),
            attach=None,
            items=(),
            discounts=(),
            fingerprint=f"f{self.count}",
        )
        return self.service.create(cmd)[0].payment_id

    def callback(self, notify_id: str, ref: str, amount: int = 900) -> int:
        body = json.dumps({"id": notify_id, "ref": ref, "state": "SUCCESS", "amount": amount})
        return self.service.handle_callback("wechatpay", SIGNED, body.encode()).status

    def rows(self) -> list[tuple[str, str, str]]:
        with self.db.read() as conn:
            found = conn.execute(
                select(
                    channel_callbacks.c.notify_id,
                    channel_callbacks.c.payment_id,
                    channel_callbacks.c.outcome,
                ).order_by(channel_callbacks.c.received_at)
            ).all()
        return [tuple(r) for r in found]  # type: ignore[misc]

    def codes(self) -> list[str]:
        return [v.code for v in check_database(self.db, timedelta(days=1))]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.db.dispose()


def test_a_notify_id_is_deduplicated_per_payment_not_globally(setup: Setup) -> None:
    first, second = setup.create(), setup.create()
    assert setup.callback("n-reused", first) == 204
    assert setup.callback("n-reused", first) == 204  # redelivery: acknowledged, dropped
    assert setup.rows() == [("n-reused", first, "APPLY_SUCCESS")]
    # The same id for another payment is another callback: applied, not dropped.
    assert setup.callback("n-reused", second) == 204
    assert setup.service.get(second).status is PaymentStatus.SUCCESS
    assert setup.rows()[-1] == ("n-reused", second, "APPLY_SUCCESS")
    assert setup.codes() == []


def test_a_refused_callback_is_recorded_and_reported(setup: Setup) -> None:
    ref = setup.create()
    assert setup.callback("n-over", ref, amount=901) == 204  # acknowledged, not applied
    assert setup.service.get(ref).status is PaymentStatus.PAYING
    assert setup.rows() == [("n-over", ref, "AMOUNT_MISMATCH")]
    assert setup.codes() == ["CALLBACK_ANOMALY"]
    forged = json.dumps({"id": "n-x", "ref": ref, "state": "SUCCESS", "amount": 900}).encode()
    reply = setup.service.handle_callback("wechatpay", {"x-fake-signature": "no"}, forged)
    assert reply.status >= 400 and setup.rows() == [("n-over", ref, "AMOUNT_MISMATCH")]


def test_a_refused_recovery_answer_is_recorded_once_and_reported(setup: Setup) -> None:
    ref = setup.create()
    order = setup.channel.orders[ref]
    setup.channel.orders[ref] = replace(order, amount=Money(1, "CNY"))  # the channel's books
    setup.channel.pay(ref)  # the payer pays; the callback is lost
    for _ in range(2):
        assert setup.service.recover_pending(timedelta(seconds=-1)) == 0
    assert setup.service.get(ref).status is PaymentStatus.PAYING
    assert setup.rows() == [("recovery_query:AMOUNT_MISMATCH", ref, "AMOUNT_MISMATCH")]
    assert setup.codes() == ["CALLBACK_ANOMALY"]


def test_check_notices_a_success_the_channel_did_not_confirm(setup: Setup) -> None:
    ref = setup.create()
    assert setup.callback("n-1", ref) == 204
    with setup.db.read() as conn:
        row = conn.execute(select(payments).where(payments.c.payment_id == ref)).one()
    assert (row.confirmed_amount, row.confirmed_currency) == (900, "CNY")
    assert "CAPTURE_UNCONFIRMED" not in setup.codes()
    for confirmed in ({"confirmed_amount": None}, {"confirmed_amount": 901}):
        with setup.db.transaction() as conn:  # as if applied without (or with another) amount
            conn.execute(update(payments).where(payments.c.payment_id == ref).values(**confirmed))
        assert "CAPTURE_UNCONFIRMED" in setup.codes()
