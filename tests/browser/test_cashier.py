"""The cashier (收银台) in a real browser: Debian's Chromium driven by Playwright against
`paygrid up` running as a subprocess. The QR code is read off the rendered page with zxing, as a
phone camera would, and paid on the WeChat Pay sandbox's payer page."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from paygrid.platform.embedded import DEMO_MERCHANT_NAME
from tests.conftest import PlatformFactory
from tests.support import MerchantReceiver, RunningPlatform

pytestmark = [pytest.mark.browser, pytest.mark.serial]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CODE_URL_PREFIX = "weixin://wxpay/bizpayurl?pr="
SUCCESS_TEXT = "支付成功"
# The success page goes back to the merchant with a 3 s meta refresh; leave slack for a slow box.
RETURN_REFRESH_S = 3.0
RETURN_SLACK_S = 4.0
# The cashier polls every 1.5 s (JS) or refreshes every 3 s (no JS); the platform has to learn
# of the payment from the sandbox's callback (or its own query) first.
FOLLOW_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI: scripts/install-system-deps.sh")
        pytest.skip(f"{CHROMIUM} not installed")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


class MerchantShop:
    """The merchant's own web site on 127.0.0.1: the return_url lands on its thank-you page."""

    def __init__(self) -> None:
        self.visits: list[str] = []
        self.posts: list[dict[str, str]] = []  # forms posted back (UnionPay's frontUrl)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode("ascii")))
                outer.posts.append(form)
                self.do_GET()

            def do_GET(self) -> None:
                outer.visits.append(self.path)
                body = (
                    "<!doctype html><html lang='zh-CN'><meta charset='utf-8'>"
                    "<title>Thank you</title>"
                    "<h1 id='thanks'>merchant thank-you 感谢您的购买</h1>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def shop() -> Iterator[MerchantShop]:
    running = MerchantShop()
    yield running
    running.close()


def cashier_order(merchant: MerchantReceiver, **extra: Any) -> dict[str, Any]:
    """12.00 yuan: two lattes and a croissant, less a 2.00 welcome coupon."""
    body: dict[str, Any] = {
        "out_trade_no": "c-" + uuid.uuid4().hex[:16],
        "amount": {"total": 1200, "currency": "CNY"},
        "description": "早餐 breakfast",
        "notify_url": merchant.url,
        "method": "cashier",
        "items": [
            {"sku": "LATTE", "name": "拿铁咖啡 latte", "quantity": 2, "unit_amount": 500},
            {"sku": "CROISSANT", "name": "可颂 croissant", "quantity": 1, "unit_amount": 400},
        ],
        "discounts": [{"name": "新客立减 welcome coupon", "amount": 200}],
    }
    body.update(extra)
    return body


def create(running: RunningPlatform, body: dict[str, Any]) -> dict[str, Any]:
    created = running.client().create_payment(body)
    assert created.status_code == 201, created.text
    payment: dict[str, Any] = created.json()
    assert payment["status"] == "CREATED" and "code_url" not in payment
    assert payment["cashier_url"].startswith(running.cashier_url + "/pay/")
    return payment


def read_qr(page: Page, path: Path) -> str:
    """Screenshot the QR <img> as rendered and decode it: what a phone camera would read."""
    qr = page.locator("#qr")
    expect(qr).to_be_visible()
    # Its box is laid out (width and height are given) before the PNG arrives: on a busy
    # machine a screenshot taken then is blank. Wait until the browser has decoded it.
    decoded = "() => { const i = document.querySelector('#qr'); return i.naturalWidth > 0 }"
    page.wait_for_function(decoded, timeout=15_000)
    qr.screenshot(path=str(path))
    found = zxingcpp.read_barcodes(Image.open(path))
    assert len(found) == 1, f"expected one barcode in {path}, found {len(found)}"
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    text: str = found[0].text
    return text


def code_url_of(running: RunningPlatform, payment_id: str) -> str:
    fetched = running.client().get_payment(payment_id)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["status"] == "PAYING"
    code_url: str = fetched.json()["code_url"]
    return code_url


@pytest.mark.timeout(120)
def test_pay_through_the_cashier(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    shop: MerchantShop,
    browser: Browser,
    tmp_path: Path,
) -> None:
    running = platform_factory()
    return_url = f"{shop.base_url}/thanks?order=42"
    payment = create(running, cashier_order(merchant, return_url=return_url))

    context = browser.new_context(locale="zh-CN", viewport={"width": 480, "height": 900})
    page = context.new_page()
    blocked: list[str] = []  # whatever the cashier's Content-Security-Policy refused
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    opened = page.goto(payment["cashier_url"])
    assert opened is not None and opened.status == 200
    expect(page).to_have_title(f"收银台 · {DEMO_MERCHANT_NAME}")
    expect(page.locator("#merchant-name")).to_have_text(DEMO_MERCHANT_NAME)
    expect(page.locator("#amount")).to_have_text("12.00")
    rows = page.locator("#items tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("拿铁咖啡 latte")
    expect(rows.nth(0)).to_contain_text("5.00")
    expect(rows.nth(0)).to_contain_text("10.00")
    expect(rows.nth(1)).to_contain_text("可颂 croissant")
    expect(rows.nth(2)).to_contain_text("新客立减 welcome coupon")
    expect(rows.nth(2)).to_contain_text("-2.00")
    expect(page.locator("#qr")).to_have_count(0)

    page.locator("#method-wechatpay").click()
    expect(page.locator("#waiting")).to_be_visible()
    decoded = read_qr(page, tmp_path / "qr.png")
    page.screenshot(path=str(tmp_path / "cashier-qr.png"), full_page=True)
    code_url = code_url_of(running, payment["payment_id"])
    assert decoded == code_url
    assert decoded.startswith(CODE_URL_PREFIX)

    # The payer's phone: a second browser opens the sandbox's payer page for that code_url.
    phone = browser.new_context(
        locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    payer = phone.new_page()
    payer.goto(f"{running.sandbox_url}/sandbox/pay?code_url={quote(code_url, safe='')}")
    expect(payer.locator("#amount")).to_have_text("¥12.00")
    expect(payer.locator("#trade-state")).to_have_text("NOTPAY")
    payer.locator("#pay").click()
    expect(payer.locator("#trade-state")).to_have_text("SUCCESS")
    phone.close()

    # The cashier tab was left alone: it follows the status and shows the success by itself...
    expect(page.locator("#result")).to_contain_text(SUCCESS_TEXT, timeout=FOLLOW_TIMEOUT_MS)
    shown_at = time.monotonic()
    assert blocked == []  # the strict CSP lets the page's own CSS, script, QR and polling work
    expect(page.locator("#returning")).to_be_visible()
    expect(page.locator("#return")).to_have_attribute("href", return_url)
    # ...then goes back to the merchant within the 3 s meta refresh.
    page.wait_for_url(return_url, timeout=(RETURN_REFRESH_S + RETURN_SLACK_S) * 1000)
    assert time.monotonic() - shown_at <= RETURN_REFRESH_S + RETURN_SLACK_S
    expect(page.locator("#thanks")).to_contain_text("merchant thank-you")
    assert "/thanks?order=42" in shop.visits

    paid = running.client().get_payment(payment["payment_id"]).json()
    assert paid["status"] == "SUCCESS"
    assert paid["amount"]["total"] == 1200
    context.close()


@pytest.mark.timeout(120)
def test_pay_by_form_post_through_the_channels_pay_page_and_back(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    shop: MerchantShop,
    browser: Browser,
) -> None:
    """UnionPay's front consume: the cashier posts the signed form from the payer's browser to
    the channel's gateway, the channel's pay page takes the payment, and the browser is posted
    back to the merchant's return_url (frontUrl) with the signed result."""
    running = platform_factory()
    return_url = f"{shop.base_url}/thanks?order=43"
    payment = create(running, cashier_order(merchant, return_url=return_url))
    context = browser.new_context(locale="zh-CN", viewport={"width": 1024, "height": 900})
    page = context.new_page()
    page.goto(payment["cashier_url"])
    page.locator("#method-unionpay").click()
    page.wait_for_url(f"{running.sandbox_urls['unionpay']}/sandbox/cashier/**")
    expect(page.locator("#amount")).to_have_text("¥12.00")
    page.locator("#pay").click()
    expect(page.locator("#message")).to_have_text(SUCCESS_TEXT)
    page.wait_for_url(return_url, timeout=10_000)  # the pay page posts back on its own
    expect(page.locator("#thanks")).to_contain_text("merchant thank-you")
    [posted] = shop.posts
    assert (posted["respCode"], posted["txnAmt"], posted["signMethod"]) == ("00", "1200", "01")
    paid = running.client().get_payment(payment["payment_id"])
    deadline = time.monotonic() + FOLLOW_TIMEOUT_MS / 1000
    while paid.json()["status"] != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.2)
        paid = running.client().get_payment(payment["payment_id"])
    assert paid.json()["status"] == "SUCCESS" and paid.json()["channel"] == "unionpay"
    context.close()


@pytest.mark.timeout(120)
def test_closed_and_unknown_payments(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, browser: Browser
) -> None:
    running = platform_factory()
    client = running.client()
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()

    # Closed before the payer opens the page: the page says so and offers no way to pay.
    payment = create(running, cashier_order(merchant))
    closed = client.close_payment(payment["payment_id"])
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    opened = page.goto(payment["cashier_url"])
    assert opened is not None and opened.status == 200
    expect(page.locator("#result")).to_contain_text("订单已关闭")
    expect(page.locator("#cashier")).to_have_attribute("data-state", "CLOSED")
    expect(page.locator("#method-wechatpay")).to_have_count(0)
    expect(page.locator("#qr")).to_have_count(0)

    # Closed while the payer looks at the page: the poller notices without a manual reload.
    live = create(running, cashier_order(merchant))
    page.goto(live["cashier_url"])
    expect(page.locator("#method-wechatpay")).to_be_visible()
    assert client.close_payment(live["payment_id"]).status_code == 200
    expect(page.locator("#result")).to_contain_text("订单已关闭", timeout=FOLLOW_TIMEOUT_MS)

    # A wrong token, or an unknown payment, is a plain 404 that reveals nothing.
    parts = urlsplit(payment["cashier_url"])
    wrong_token = urlunsplit(parts._replace(query="t=" + "x" * 32))
    for url in (
        wrong_token,
        urlunsplit(parts._replace(query="")),
        f"{running.cashier_url}/pay/pay_doesnotexist?t=abc",
    ):
        answer = page.goto(url)
        assert answer is not None and answer.status == 404, url
        expect(page.locator("body")).to_contain_text("No such payment")
        expect(page.locator("#cashier")).to_have_count(0)
    context.close()


@pytest.mark.timeout(120)
def test_cashier_works_without_javascript(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    browser: Browser,
    tmp_path: Path,
) -> None:
    running = platform_factory()
    payment = create(running, cashier_order(merchant))
    context = browser.new_context(java_script_enabled=False, locale="zh-CN")
    page = context.new_page()
    page.goto(payment["cashier_url"])
    expect(page.locator("#amount")).to_have_text("12.00")

    # Choosing the method is a plain form POST answered by a redirect back to the page.
    with page.expect_navigation():
        page.locator("#method-wechatpay").click()
    assert "/method" not in page.url and "error=" not in page.url
    expect(page.locator("#waiting")).to_be_visible()
    decoded = read_qr(page, tmp_path / "qr-nojs.png")
    assert decoded == code_url_of(running, payment["payment_id"])

    paid = running.sandbox("POST", "/sandbox/pay", {"code_url": decoded, "outcome": "SUCCESS"})
    assert paid.status_code == 200, paid.text
    assert paid.json()["transaction"]["trade_state"] == "SUCCESS"

    # No script runs: the <noscript> meta refresh alone brings the page to the result.
    expect(page.locator("#result")).to_contain_text(SUCCESS_TEXT, timeout=FOLLOW_TIMEOUT_MS)
    expect(page.locator("#return")).to_have_count(0)  # no return_url given
    assert running.client().get_payment(payment["payment_id"]).json()["status"] == "SUCCESS"
    context.close()


# --- Alipay: a QR code and a redirect to its own pay page ----------------------------------
@pytest.mark.timeout(120)
def test_pay_with_alipay_by_qr_code(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    browser: Browser,
    tmp_path: Path,
) -> None:
    """The cashier offers Alipay beside WeChat Pay; its QR code, read off the page, opens the
    Alipay sandbox's payer page on the phone, which pays; the cashier follows."""
    running = platform_factory()
    payment = create(running, cashier_order(merchant))
    context = browser.new_context(locale="zh-CN", viewport={"width": 480, "height": 900})
    page = context.new_page()
    page.goto(payment["cashier_url"])
    expect(page.locator("#method-wechatpay")).to_be_visible()
    expect(page.locator("#method-alipay")).to_contain_text("支付宝")
    page.locator("#method-alipay").click()
    expect(page.locator("#waiting")).to_be_visible()
    decoded = read_qr(page, tmp_path / "alipay-qr.png")
    fetched = running.client().get_payment(payment["payment_id"]).json()
    assert fetched["channel"] == "alipay" and fetched["payer_action"]["kind"] == "qr_code"
    assert decoded == fetched["payer_action"]["content"] == fetched["code_url"]

    phone = browser.new_context(locale="zh-CN", is_mobile=True, has_touch=True)
    payer = phone.new_page()
    payer.goto(decoded)  # the sandbox serves a payer page at its QR codes' URLs
    expect(payer.locator("#amount")).to_have_text("¥12.00")
    payer.locator("#pay").click()
    expect(payer.locator("#trade-status")).to_contain_text("TRADE_SUCCESS")
    phone.close()

    expect(page.locator("#result")).to_contain_text(SUCCESS_TEXT, timeout=FOLLOW_TIMEOUT_MS)
    paid = running.client().get_payment(payment["payment_id"]).json()
    assert (paid["status"], paid["channel"]) == ("SUCCESS", "alipay")
    context.close()


@pytest.mark.timeout(120)
def test_pay_with_alipay_on_its_own_page(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    shop: MerchantShop,
    browser: Browser,
) -> None:
    """Alipay page pay: the cashier sends the browser on to Alipay's pay page (a redirect the
    page's CSP allows), the payer pays there and Alipay brings the browser back to the
    merchant's return_url; the notify makes the payment SUCCESS."""
    running = platform_factory()
    return_url = f"{shop.base_url}/thanks?order=77"
    payment = create(running, cashier_order(merchant, return_url=return_url))
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    blocked: list[str] = []
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(payment["cashier_url"])
    page.locator("#method-alipay-page").click()
    alipay = urlsplit(running.sandbox_urls["alipay"]).netloc
    page.wait_for_url(lambda url: urlsplit(url).netloc == alipay, timeout=FOLLOW_TIMEOUT_MS)
    expect(page.locator("#amount")).to_have_text("¥12.00")
    fetched = running.client().get_payment(payment["payment_id"]).json()
    assert (fetched["method"], fetched["payer_action"]["kind"]) == ("page", "redirect")
    page.locator("#pay").click()
    page.wait_for_url(lambda url: url.startswith(return_url), timeout=FOLLOW_TIMEOUT_MS)
    expect(page.locator("#thanks")).to_contain_text("merchant thank-you")
    assert blocked == []
    deadline = time.monotonic() + FOLLOW_TIMEOUT_MS / 1000
    status = ""
    while time.monotonic() < deadline and status != "SUCCESS":
        status = running.client().get_payment(payment["payment_id"]).json()["status"]
        time.sleep(0.2)
    assert status == "SUCCESS"
    context.close()


# --- NetsUnion (网联): an agreement signed in the cashier, or a gateway payment at the bank ----
NETSUNION = "netsunion"
NETSUNION_ACCOUNT = {
    "bank": "ICBC",
    "account_no": "6222021234567890123",
    "holder_name": "张三",
    "id_no": "11010519491231002X",
}


def csp_refusals(page: Page) -> list[str]:
    """Whatever the page's Content-Security-Policy refuses from now on (a form post, a script)."""
    blocked: list[str] = []
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return blocked


def wait_paid(running: RunningPlatform, payment_id: str) -> dict[str, Any]:
    """The payment once SUCCESS (the channel's notify, or paygrid's own query, gets it there)."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT_MS / 1000
    while True:
        fetched: dict[str, Any] = running.client().get_payment(payment_id).json()
        if fetched["status"] == "SUCCESS" or time.monotonic() >= deadline:
            return fetched
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_netsunion_agreement_in_the_cashier(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    shop: MerchantShop,
    browser: Browser,
    tmp_path: Path,
) -> None:
    """协议支付 in the cashier: the payer fills in the bank account, the bank "texts" a code
    (read off the sandbox's phone), a wrong code is refused on the code page, the right one
    signs the agreement and the payment debits it; the page follows the debit to 支付成功 and
    goes back to the merchant."""
    running = platform_factory()
    # The bank decides the debit only when told: the page shows the debit in progress first.
    held = running.channel_sandbox(NETSUNION, "POST", "/sandbox/settings", {"debits_wait": True})
    assert held.status_code == 200, held.text
    return_url = f"{shop.base_url}/thanks?order=88"
    payment = create(running, cashier_order(merchant, return_url=return_url))
    mobile = "1370013" + f"{uuid.uuid4().int % 10_000:04d}"
    context = browser.new_context(locale="zh-CN", viewport={"width": 480, "height": 900})
    page = context.new_page()
    blocked = csp_refusals(page)
    page.goto(payment["cashier_url"])
    choice = page.locator("#method-netsunion")
    expect(choice).to_contain_text("网联 NetsUnion")
    expect(choice).to_contain_text("银行卡快捷支付")
    expect(choice).to_have_attribute("value", "netsunion:agreement")
    choice.click()

    form = page.locator("#details-form")
    expect(form).to_be_visible()
    page.locator("#bank").select_option(NETSUNION_ACCOUNT["bank"])
    page.locator("#account_no").fill(NETSUNION_ACCOUNT["account_no"])
    page.locator("#holder_name").fill(NETSUNION_ACCOUNT["holder_name"])
    page.locator("#id_no").fill(NETSUNION_ACCOUNT["id_no"])
    page.locator("#mobile").fill(mobile)
    page.screenshot(path=str(tmp_path / "netsunion-agreement-form.png"), full_page=True)
    page.locator("#send-code").click()

    code_form = page.locator("#code-form")
    expect(code_form).to_be_visible()
    expect(page.locator("#code-sent")).to_contain_text("6222")  # the masked account
    expect(page.locator("#code-sent")).not_to_contain_text(NETSUNION_ACCOUNT["account_no"])
    sent = running.channel_sandbox(NETSUNION, "GET", f"/sandbox/sms?mobile={mobile}")
    assert sent.status_code == 200, sent.text
    [sms] = sent.json()["sms"]
    code: str = sms["code"]
    assert code in sms["text"] and "中国工商银行" in sms["text"], sms

    # A wrong code: the sandbox's word for it, on the code form again.
    wrong = "".join(str((int(d) + 1) % 10) for d in code)
    page.locator("#sms_code").fill(wrong)
    page.locator("#confirm").click()
    expect(page.locator("#agreement-message")).to_contain_text("短信验证码错误")
    expect(code_form).to_be_visible()
    expect(page.locator("#agreement")).to_have_attribute("data-step", "code")
    expect(page.locator("#result")).to_have_count(0)

    page.locator("#sms_code").fill(code)
    page.locator("#confirm").click()
    expect(page.locator("#waiting")).to_be_visible()
    expect(page.locator("#state")).to_contain_text("扣款处理中")
    debiting = running.client().get_payment(payment["payment_id"]).json()
    assert debiting["status"] == "PAYING", debiting
    assert (debiting["channel"], debiting["method"]) == (NETSUNION, "agreement")

    # The bank debits the account; the cashier tab notices by itself.
    decided = running.channel_sandbox(
        NETSUNION, "POST", "/sandbox/pay",
        {"out_trade_no": payment["payment_id"], "outcome": "SUCCESS"},
    )  # fmt: skip
    assert decided.status_code == 200, decided.text
    expect(page.locator("#result")).to_contain_text(SUCCESS_TEXT, timeout=FOLLOW_TIMEOUT_MS)
    expect(page.locator("#return")).to_have_attribute("href", return_url)
    page.wait_for_url(return_url, timeout=(RETURN_REFRESH_S + RETURN_SLACK_S) * 1000)
    expect(page.locator("#thanks")).to_contain_text("merchant thank-you")
    assert "/thanks?order=88" in shop.visits
    assert blocked == []

    paid = wait_paid(running, payment["payment_id"])
    assert (paid["status"], paid["channel"]) == ("SUCCESS", NETSUNION), paid
    assert paid["amount"]["total"] == 1200
    context.close()


@pytest.mark.timeout(120)
def test_netsunion_gateway_page_in_the_cashier(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    shop: MerchantShop,
    browser: Browser,
    tmp_path: Path,
) -> None:
    """网关支付: the payer picks a bank, the cashier posts the signed fields from the browser to
    that bank's pay page (the one form post its CSP lets leave the cashier), the payer pays there
    and the bank sends the browser back to the merchant's return_url."""
    running = platform_factory()
    return_url = f"{shop.base_url}/thanks?order=89"
    payment = create(running, cashier_order(merchant, return_url=return_url))
    context = browser.new_context(locale="zh-CN", viewport={"width": 1024, "height": 900})
    page = context.new_page()
    blocked = csp_refusals(page)
    page.goto(payment["cashier_url"])
    choice = page.locator("#method-netsunion-page")
    expect(choice).to_contain_text("网联 NetsUnion")
    expect(choice).to_contain_text("网页支付")
    choice.click()

    expect(page.locator("#bank-form")).to_be_visible()
    expect(page.locator("#bank-ICBC")).to_be_visible()
    page.locator("#bank-CMB").click()
    bank = urlsplit(running.sandbox_urls[NETSUNION]).netloc
    page.wait_for_url(
        lambda url: urlsplit(url).netloc == bank and "/bank/" in urlsplit(url).path,
        timeout=FOLLOW_TIMEOUT_MS,
    )
    expect(page.locator("#bank")).to_contain_text("招商银行")
    expect(page.locator("#amount")).to_have_text("¥12.00")
    expect(page.locator("#trx-id")).to_have_text(payment["payment_id"])
    page.screenshot(path=str(tmp_path / "netsunion-bank-page.png"), full_page=True)
    at_bank = running.client().get_payment(payment["payment_id"]).json()
    started = (at_bank["status"], at_bank["channel"], at_bank["method"])
    assert started == ("PAYING", NETSUNION, "page"), at_bank

    page.locator("#pay").click()
    # Back at the merchant, the bank's result added to its return_url's query.
    page.wait_for_url(lambda url: url.startswith(return_url + "&"), timeout=FOLLOW_TIMEOUT_MS)
    expect(page.locator("#thanks")).to_contain_text("merchant thank-you")
    [visit] = [v for v in shop.visits if v.startswith("/thanks")]  # not /favicon.ico
    back = dict(parse_qsl(urlsplit(visit).query))
    assert back == {"order": "89", "TrxId": payment["payment_id"], "TrxStatus": "00"}, visit
    assert blocked == []

    paid = wait_paid(running, payment["payment_id"])
    assert (paid["status"], paid["channel"]) == ("SUCCESS", NETSUNION), paid
    context.close()
