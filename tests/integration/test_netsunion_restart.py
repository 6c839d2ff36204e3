"""A restarted NetsUnion sandbox keeps its member, agreements, trades and pending
notifications: a debit decided while the member was unreachable is notified after the restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from paygrid.channels.ports import OrderRequest, TradeState
from paygrid.kernel.money import Money
from tests.integration.netsunion_helpers import (
    adapter_for,
    new_ref,
    receiver,
    sign_agreement,
    start_sandbox,
)
from tests.support import wait_until

pytestmark = pytest.mark.timeout(120)


def test_state_and_notifications_survive_a_restart(tmp_path: Path) -> None:
    first = start_sandbox(tmp_path)
    try:
        adapter = adapter_for(first)
        with first.http() as http:
            http.post("/sandbox/settings", json={"retry_scale": 0.01, "debit_delay_ms": 50})
            agreement_no = sign_agreement(adapter, http)
            ref = new_ref()
            request = OrderRequest(
                ref, Money(4321, "CNY"), "restart", "http://127.0.0.1:9/gone", "agreement",
                payer_bank="ICBC", agreement_no=agreement_no,
            )  # fmt: skip
            adapter.create_order(request)
            wait_until(lambda: adapter.query(ref).state is TradeState.SUCCESS, timeout=15)
    finally:
        first.stop()
    second = start_sandbox(tmp_path)
    try:
        again = adapter_for(second)
        assert again.account == adapter.account  # the same member and keys
        assert again.query(ref).state is TradeState.SUCCESS
        with receiver(lambda body: again.callback_ack()) as member, second.http() as http:
            # the same agreement debits again after the restart
            other = new_ref()
            again.create_order(
                OrderRequest(
                    other,
                    Money(100, "CNY"),
                    "after",
                    member.url,
                    "agreement",
                    payer_bank="ICBC",
                    agreement_no=agreement_no,
                )
            )
            member.wait_for(1)
            parsed = again.parse_callback(*member.received[0])
            assert parsed.trade.payment_ref == other  # type: ignore[union-attr]
            rows = http.get("/sandbox/notifications", params={"out_trade_no": ref}).json()
            assert rows["notifications"][0]["attempts"] >= 1  # kept trying the dead URL
    finally:
        second.stop()
