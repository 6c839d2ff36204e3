"""NetsUnion (网联) end to end through `paygrid up`: an agreement signed through the merchant API
(the SMS code read off the sandbox's phone), a payment debiting it, a gateway payment at the
payer's bank's page, the cashier's own agreement flow over real HTTP, a refund, and the day's
clearing files into `paygrid recon fetch` / `run`."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, wait_status
from tests.integration.test_refunds import wait_refund
from tests.support import MerchantReceiver, RunningPlatform

pytestmark = pytest.mark.timeout(240)
CHANNEL = "netsunion"
ACCOUNT = {
    "bank": "ICBC",
    "account_no": "6222021234567890123",
    "holder_name": "张三",
    "id_type": "01",
    "id_no": "11010519491231002X",
    "mobile": "13800138000",
}


def sms(running: RunningPlatform, mobile: str) -> str:
    sent = running.channel_sandbox(CHANNEL, "GET", f"/sandbox/sms?mobile={mobile}").json()["sms"]
    assert sent, f"no SMS to {mobile}"
    code: str = sent[0]["code"]
    return code


def debit_order(merchant: MerchantReceiver, agreement_id: str) -> dict[str, Any]:
    body = order(merchant, method="agreement", payer={"agreement_id": agreement_id})
    del body["channel"]  # the agreement says which channel
    return body


def test_agreement_debit_gateway_refund_and_recon(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    asked = client.request("POST", "/v1/agreements", {"out_agreement_no": "card-1", **ACCOUNT})
    assert asked.status_code == 201, asked.text
    agreement = asked.json()
    assert agreement["status"] == "PENDING_CODE" and agreement["channel"] == CHANNEL
    assert agreement["masked_account"] == "6222********0123"
    assert "agreement_no" not in agreement and "6222021234567890123" not in asked.text
    again = client.request("POST", "/v1/agreements", {"out_agreement_no": "card-1", **ACCOUNT})
    assert again.status_code == 200 and again.json()["agreement_id"] == agreement["agreement_id"]
    other = {**ACCOUNT, "mobile": "13900139000"}
    clash = client.request("POST", "/v1/agreements", {"out_agreement_no": "card-1", **other})
    assert clash.status_code == 409 and clash.json()["code"] == "DUPLICATE_OUT_AGREEMENT_NO"

    confirm = f"/v1/agreements/{agreement['agreement_id']}/confirm"
    unsigned = client.create_payment(debit_order(merchant, agreement["agreement_id"]))
    assert unsigned.status_code == 400 and unsigned.json()["code"] == "INVALID_PAYER"
    wrong = client.request("POST", confirm, {"sms_code": "000000"}).json()
    assert wrong["status"] == "PENDING_CODE" and wrong["message"], wrong
    signed = client.request("POST", confirm, {"sms_code": sms(running, ACCOUNT["mobile"])})
    assert signed.status_code == 200 and signed.json()["status"] == "SIGNED", signed.text

    created = client.create_payment(debit_order(merchant, agreement["agreement_id"]))
    assert created.status_code == 201, created.text
    debit = created.json()
    assert debit["channel"] == CHANNEL and debit["payer_action"]["kind"] == "wait"
    paid = wait_status(client, debit["payment_id"], "SUCCESS")  # the bank debits by itself

    gateway = client.create_payment(order(merchant, channel=CHANNEL, method="page",
                                          payer={"bank": "CMB"})).json()  # fmt: skip
    action = gateway["payer_action"]
    assert action["kind"] == "form" and "/bank/" in action["url"], action
    page = httpx.post(action["url"], data=action["fields"], timeout=10)
    assert page.status_code == 200 and "招商银行" in page.text, page.text[:500]
    pay = {"out_trade_no": gateway["payment_id"], "outcome": "SUCCESS"}
    assert running.channel_sandbox(CHANNEL, "POST", "/sandbox/pay", pay).status_code == 200
    wait_status(client, gateway["payment_id"], "SUCCESS")

    body = {"payment_id": paid["payment_id"], "out_refund_no": "r-1", "amount": 3_000}
    refund = client.request("POST", "/v1/refunds", body).json()
    assert wait_refund(client, refund["refund_id"], "SUCCESS")["amount"] == 3_000

    day = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    closed = running.channel_sandbox(CHANNEL, "POST", "/sandbox/close-day", {"date": str(day)})
    assert closed.status_code == 200, closed.text
    fetched = running.paygrid("recon", "fetch", "--channel", CHANNEL, "--date", str(day))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    run = running.paygrid("recon", "run", "--date", str(day), "--channel", CHANNEL, "--json",
                          "--grace-seconds", "0")  # fmt: skip
    assert run.returncode == 0, run.stderr
    [result] = json.loads(run.stdout)["results"]
    assert result["matched"] == {"count": 3, "amount": 10_000 + 10_000 - 3_000}, result
    assert result["differences"] == [], json.dumps(result["differences"], indent=1)
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_cashier_signs_an_agreement_and_debits_it(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    payment = client.create_payment(order(merchant, channel=None, method="cashier")).json()
    cashier = httpx.Client(base_url=running.cashier_url, timeout=10, follow_redirects=True)
    token = re.search(r"t=([^&]+)", payment["cashier_url"])[1]  # type: ignore[index]
    pid = payment["payment_id"]
    start = cashier.get(f"/pay/{pid}", params={"t": token})
    assert "method-netsunion" in start.text, start.text[:2000]
    form = cashier.post(f"/pay/{pid}/method", data={"t": token, "method": "netsunion:agreement"})
    assert 'id="details-form"' in form.text, form.text[:2000]
    details = {"t": token, "m": "netsunion:agreement", **ACCOUNT, "mobile": "13700137000"}
    bad = cashier.post(f"/pay/{pid}/agreement", data={**details, "id_no": "123"})
    assert 'id="details-form"' in bad.text and "Check the details" in bad.text
    code_page = cashier.post(f"/pay/{pid}/agreement", data=details)
    assert 'id="code-form"' in code_page.text, code_page.text[:2000]
    action = re.search(r'action="(/pay/[^"]+/confirm)"', code_page.text)[1]  # type: ignore[index]
    confirm = {"t": token, "m": "netsunion:agreement", "sms_code": sms(running, "13700137000")}
    waiting = cashier.post(action, data=confirm)
    assert waiting.status_code == 200, waiting.text[:2000]
    assert 'id="waiting"' in waiting.text or 'id="result"' in waiting.text, waiting.text[:2000]
    done = wait_status(client, pid, "SUCCESS")
    assert done["channel"] == CHANNEL and done["method"] == "agreement"
    # the agreement was the cashier's, for this payment: another payment cannot use its URL
    other = client.create_payment(order(merchant, channel=None, method="cashier")).json()
    other_token = re.search(r"t=([^&]+)", other["cashier_url"])[1]  # type: ignore[index]
    agreement_path = action.rsplit("/confirm", 1)[0].replace(pid, other["payment_id"])
    stolen = cashier.get(
        agreement_path + "/pay", params={"t": other_token, "m": "netsunion:agreement"}
    )
    assert stolen.status_code == 404
