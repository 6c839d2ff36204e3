"""At-least-once on JetStream for real: a consumer process SIGKILLed between the commit of
its batch's effects and its acks gets the messages again (another process, after the ack wait)
and still leaves one inbox row, one capture voucher, one notification per event — and
acknowledges the repeat instead of failing on it (a consumer that cannot tell a repeat from a
first delivery never drains). Payments are real: PostgreSQL, the WeChat Pay sandbox, the outbox
relay."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Table, func, select

from paygrid.bus import jetstream
from paygrid.bus.jetstream import JetStreamBus
from paygrid.config import ChannelSettings, Settings
from paygrid.kernel.clock import utcnow
from paygrid.merchants.service import create_merchant
from paygrid.payments.service import CreatePayment
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.storage.schema import inbox, ledger_vouchers, notifications, outbox
from tests.integration.consumer_process import TEST_KEK
from tests.integration.wechatpay_helpers import SandboxProcess, start_sandbox
from tests.support import NatsServer, PostgresServer, free_port, nats_server, wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
ACK_WAIT_S = 2.0
PAYMENTS = 3
EFFECT: dict[str, Table] = {"ledger": ledger_vouchers, "notify": notifications}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path / "sandbox")
    yield process
    process.stop()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as server:
        yield server


def settings(tmp_path: Path, name: str, db_url: str, nats_url: str, sandbox_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / name,
        database_url=db_url,
        nats_url=nats_url,
        run_sandboxes=False,
        channels={"wechatpay": ChannelSettings(sandbox_url, fee_rate_ppm=2000)},
        kek=TEST_KEK,
        api_port=free_port(),  # where the sandbox sends callbacks: nobody (补单 finds them)
    )


def paid_payments(producer: Platform, sandbox: SandboxProcess) -> list[str]:
    """Payments paid at the sandbox and found by 补单: payment.succeeded in the outbox."""
    mchid = create_merchant(
        producer.db, producer.vault, "killed consumer", methods=("wechatpay",)
    ).merchant.mchid
    refs = []
    for n in range(PAYMENTS):
        payment, created = producer.payments.create(
            CreatePayment(
                mchid=mchid,
                out_trade_no=f"kill-{n}-{uuid.uuid4().hex[:8]}",
                total=100 + n,
                currency="CNY",
                description="killed consumer",
                notify_url="http://127.0.0.1:9/notify",
                return_url=None,
                channel="wechatpay",
                method="native",
                expire_at=utcnow() + timedelta(hours=1),
                attach=None,
                items=(),
                discounts=(),
                fingerprint=f"kill-{n}",
            )
        )
        assert created and payment.code_url, payment
        paid = httpx.post(
            f"{sandbox.base_url}/sandbox/pay",
            json={"code_url": payment.code_url, "outcome": "SUCCESS"},
            timeout=10,
        )
        assert paid.status_code == 200, paid.text
        refs.append(payment.payment_id)
    assert producer.payments.recover_pending(timedelta(seconds=-1)) == PAYMENTS
    return refs


def counts(producer: Platform, consumer: str) -> tuple[int, int]:
    with producer.db.read() as conn:
        rows = conn.execute(
            select(func.count()).select_from(inbox).where(inbox.c.consumer == consumer)
        ).scalar_one()
        effects = conn.execute(select(func.count()).select_from(EFFECT[consumer])).scalar_one()
    return int(rows), int(effects)


@pytest.mark.parametrize("consumer", ["ledger", "notify"])
def test_consumer_killed_between_effect_and_ack(
    consumer: str,
    postgres: PostgresServer,
    nats: NatsServer,
    sandbox: SandboxProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jetstream, "ACK_WAIT_S", ACK_WAIT_S)
    db_url = postgres.create_database("k_" + uuid.uuid4().hex[:12])
    producer_bus = JetStreamBus(nats.url, "producer")
    producer_bus.connect()
    producer = bootstrap(
        settings(tmp_path, "producer", db_url, nats.url, sandbox.base_url),
        bus=producer_bus,
        consumers=(),
    )
    try:
        refs = paid_payments(producer, sandbox)
        assert producer.relay.pump() == 2 * PAYMENTS  # created + succeeded, onto JetStream

        dying = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.integration.consumer_process",
                nats.url,
                db_url,
                str(tmp_path / "dying"),
                consumer,
                str(ACK_WAIT_S),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dying.returncode == -9, dying.stdout + dying.stderr[-3000:]
        applied, effects = counts(producer, consumer)  # its batch committed, its acks never left
        assert applied == effects >= 1, (applied, effects)

        survivor_bus = JetStreamBus(nats.url, "survivor")
        survivor_bus.connect()
        survivor = bootstrap(
            settings(tmp_path, "survivor", db_url, nats.url, sandbox.base_url),
            channels={},
            bus=survivor_bus,
            consumers=(consumer,),
            migrate=False,
        )
        survivor_bus.start_consumers()
        try:
            wait_until(
                lambda: (
                    survivor_bus.counters.delivered.get(consumer, 0) == PAYMENTS
                    and survivor_bus.consumer_lag() == {consumer: 0}
                ),
                timeout=60,
            )
            # Every message came again (the killed process had fetched them all), the one it
            # had applied included; each was acknowledged, none failed or was dead-lettered.
            assert survivor_bus.counters.redelivered.get(consumer, 0) >= applied
            assert survivor_bus.dead_letters() == 0
        finally:
            survivor_bus.close()
            survivor.close()
        assert counts(producer, consumer) == (PAYMENTS, PAYMENTS)
        with producer.db.read() as conn:
            events = set(
                conn.execute(
                    select(outbox.c.event_id).where(outbox.c.event_type == "payment.succeeded")
                ).scalars()
            )
            seen = set(
                conn.execute(select(inbox.c.event_id).where(inbox.c.consumer == consumer)).scalars()
            )
            if consumer == "ledger":
                effect = list(conn.execute(select(ledger_vouchers.c.business_ref)).scalars())
                assert sorted(effect) == sorted(refs)
            else:
                effect = list(conn.execute(select(notifications.c.event_id)).scalars())
                assert sorted(effect) == sorted(events)
        assert seen == events
    finally:
        producer_bus.close()
        producer.close()
