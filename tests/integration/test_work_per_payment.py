"""The work a successful payment costs the database, end to end, is a budget (issue 9): at
most 7 transactions and 25 statements per payment, counted by the platform itself
(``paygrid_db_transactions_total``, ``paygrid_db_statements_total`` on every process's
/metrics) over a whole run: create, the channel's order, the payer pays, the callback, the
ledger's voucher, the merchant's notification, and whatever the background loops did
meanwhile. A change that makes the money path do more fails here."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from paygrid.config import Settings
from tests.conftest import PlatformFactory
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.serial]  # a budget: alone

PAYMENTS = 60
IN_FLIGHT = 6  # merchants' clients at once: the bus and the ledger see batches
MAX_TRANSACTIONS_PER_PAYMENT = 7
MAX_STATEMENTS_PER_PAYMENT = 25
DEFAULT_INTERVAL = Settings().scheduler_interval_s


def one_payment(platform: RunningPlatform, notify_url: str) -> str:
    client = platform.client()
    created = client.create_payment(
        {
            "out_trade_no": "w-" + uuid.uuid4().hex[:16],
            "amount": {"total": 10000, "currency": "CNY"},
            "description": "work budget",
            "notify_url": notify_url,
            "channel": "wechatpay",
            "method": "native",
        }
    )
    assert created.status_code == 201, created.text
    paid = platform.sandbox("POST", "/sandbox/pay", {"code_url": created.json()["code_url"]})
    assert paid.status_code == 200, paid.text
    payment_id: str = created.json()["payment_id"]
    return payment_id


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_payment_end_to_end_stays_within_its_database_budget(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    database: str,
    request: pytest.FixtureRequest,
) -> None:
    url = None
    if database == "postgres":
        url = request.getfixturevalue("postgres").create_database("w_" + uuid.uuid4().hex[:12])
    # The housekeeping loops at their default interval (the test support shortens it).
    platform = platform_factory(url, env={"PAYGRID_SCHEDULER_INTERVAL_S": str(DEFAULT_INTERVAL)})
    warm = one_payment(
        platform, merchant.url
    )  # first-use work (accounts, caches) is not per payment
    wait_until(lambda: len(merchant.received) == 1, timeout=60)
    time.sleep(1.0)
    before = platform.db_work()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        ids = list(pool.map(lambda _: one_payment(platform, merchant.url), range(PAYMENTS)))
    notified = lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) == PAYMENTS + 1  # noqa: E731
    wait_until(notified, timeout=120)
    after = platform.db_work()
    assert warm not in ids
    work = {k: (after[k] - before[k]) / PAYMENTS for k in after}
    transactions = work["read"] + work["write"]
    print(f"per payment on {database}: {work} -> {transactions:.2f} transactions")
    assert transactions <= MAX_TRANSACTIONS_PER_PAYMENT, work
    assert work["statements"] <= MAX_STATEMENTS_PER_PAYMENT, work
