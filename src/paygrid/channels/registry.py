"""The channel registry (通道注册表): the one place that knows which channels exist.

Each channel is one folder under ``paygrid/channels/`` with the same shape: ``capabilities.py``
(what it can do), ``adapter.py`` with ``build_adapter(credentials, base_url)`` (the port's
implementation), and ``sandbox/`` with ``run(data_dir, host, port)`` and
``load_or_create_credentials(data_dir)`` (``python -m paygrid.channels.<name>.sandbox``).
Settings, the embedded runtime, the supervisor, the CLI and the cashier read this table; no
channel's name appears anywhere else outside its folder."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paygrid.channels.alipay import capabilities as alipay
from paygrid.channels.netsunion import capabilities as netsunion
from paygrid.channels.ports import ChannelAdapter, ChannelCapabilities
from paygrid.channels.unionpay import capabilities as unionpay
from paygrid.channels.wechatpay import capabilities as wechatpay


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str  # as the API, the settings (PAYGRID_<NAME>_…) and the callback path know it
    title: str  # as the cashier shows it
    default_port: int  # its sandbox's loopback port in the embedded default
    fee_rate_ppm: int  # the contracted rate the channel charges us (0.20% = 2000)
    settlement_prefix: str  # how its settlements into the reserve account are referenced
    bill_ready_after_s: int  # its bill of a date is out this long after the date's end
    capabilities: ChannelCapabilities
    sandbox_qr_field: str  # how its sandbox's payer names a QR code (POST /sandbox/pay)
    # Its sandbox's /sandbox/orders trade states that mean paid / waiting for the payer.
    sandbox_paid_states: frozenset[str]
    sandbox_unpaid_states: frozenset[str]
    # Its sandbox's /sandbox/refunds states that mean the money went back to the payer.
    sandbox_refunded_states: frozenset[str]
    # How the payers of tests, drills and benchmarks pay on it: the method and payer of the
    # merchant's request (a QR code by default; a bank's gateway page needs the bank).
    test_method: str = "native"
    test_payer: Mapping[str, str] | None = None
    # Its /sandbox/pay takes a browser form's signed fields under this name (a form payment).
    sandbox_form_field: str | None = None

    @property
    def package(self) -> str:
        return f"paygrid.channels.{self.name}"

    @property
    def sandbox_module(self) -> str:
        return f"{self.package}.sandbox"

    @property
    def default_base_url(self) -> str:
        return f"http://127.0.0.1:{self.default_port}"

    def build_adapter(self, credentials: Mapping[str, str], base_url: str) -> ChannelAdapter:
        module: Any = importlib.import_module(f"{self.package}.adapter")
        adapter: ChannelAdapter = module.build_adapter(credentials, base_url)
        assert adapter.name == self.name and adapter.capabilities == self.capabilities
        return adapter

    def bill_reader(self) -> Any:
        """Its bill reader for recon (``<package>.bill_import.import_bill``: DuckDB connection,
        file, business date, table -> totals), or None where it has none yet."""
        try:
            module: Any = importlib.import_module(f"{self.package}.bill_import")
        except ModuleNotFoundError:
            return None
        return module.import_bill

    def sandbox_credentials(self, sandbox_dir: Path) -> dict[str, str]:
        """What the sandbox hands a merchant, read (or first made) offline from its state."""
        module: Any = importlib.import_module(self.sandbox_module)
        creds: dict[str, str] = module.load_or_create_credentials(sandbox_dir)
        return creds

    def sandbox_pay_body(self, qr_content: str, outcome: str) -> dict[str, str]:
        """The sandbox payer scanning a QR code and paying (SUCCESS) or failing (FAIL)."""
        return {self.sandbox_qr_field: qr_content, "outcome": outcome}

    def test_order(self) -> dict[str, object]:
        """The channel, method and payer of a payment a sandbox payer can pay."""
        body: dict[str, object] = {"channel": self.name, "method": self.test_method}
        if self.test_payer:
            body["payer"] = dict(self.test_payer)
        return body

    def placed(self, payment: Mapping[str, object]) -> bool:
        """The payment (as the API returns it) has its channel order: the payer can pay."""
        return (
            "code_url" in payment
            if self.test_method == "native"
            else bool(payment.get("payer_action"))
        )

    def sandbox_pay(self, payment: Mapping[str, object], outcome: str) -> dict[str, object]:
        """The /sandbox/pay body of a payer paying ``payment`` (as the API returns it, its
        first order at this channel): by its QR code, by the form the browser would post, or
        by our order number at the channel (the payment id)."""
        if "code_url" in payment:
            return {**self.sandbox_pay_body(str(payment["code_url"]), outcome)}
        action = payment.get("payer_action")
        if self.sandbox_form_field and isinstance(action, Mapping) and action.get("fields"):
            return {self.sandbox_form_field: dict(action["fields"]), "outcome": outcome}
        return {self.sandbox_qr_field: str(payment["payment_id"]), "outcome": outcome}

    def run_sandbox(self, sandbox_dir: Path, host: str, port: int) -> None:
        module: Any = importlib.import_module(self.sandbox_module)
        module.run(sandbox_dir, host, port)


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec(
        name="wechatpay",
        title="微信支付 WeChat Pay",
        default_port=8101,
        fee_rate_ppm=wechatpay.FEE_RATE_PPM,
        settlement_prefix=wechatpay.SETTLEMENT_PREFIX,
        bill_ready_after_s=wechatpay.BILL_READY_AFTER_S,
        capabilities=wechatpay.CAPABILITIES,
        sandbox_qr_field="code_url",
        sandbox_paid_states=frozenset({"SUCCESS", "REFUND"}),
        sandbox_unpaid_states=frozenset({"NOTPAY"}),
        # PROCESSING, ABNORMAL (held at WeChat Pay) and CLOSED gave nothing back (yet)
        sandbox_refunded_states=frozenset({"SUCCESS"}),
    ),
    ChannelSpec(
        name="alipay",
        title="支付宝 Alipay",
        default_port=8102,
        fee_rate_ppm=alipay.FEE_RATE_PPM,
        settlement_prefix=alipay.SETTLEMENT_PREFIX,
        bill_ready_after_s=alipay.BILL_READY_AFTER_S,
        capabilities=alipay.CAPABILITIES,
        sandbox_qr_field="qr_code",
        # REFUNDED: TRADE_CLOSED after payment (refunded in full); UNSCANNED: no trade yet
        sandbox_paid_states=frozenset({"TRADE_SUCCESS", "TRADE_FINISHED", "REFUNDED"}),
        sandbox_unpaid_states=frozenset({"UNSCANNED", "WAIT_BUYER_PAY"}),
        sandbox_refunded_states=frozenset({"REFUND_SUCCESS"}),  # as its refund query says
    ),
    ChannelSpec(
        name="unionpay",
        title="银联 UnionPay",
        default_port=8103,
        fee_rate_ppm=unionpay.FEE_RATE_PPM,
        settlement_prefix=unionpay.SETTLEMENT_PREFIX,
        bill_ready_after_s=unionpay.BILL_READY_AFTER_S,
        capabilities=unionpay.CAPABILITIES,
        sandbox_qr_field="qrCode",  # a QR consume (native); page/h5 are front-end forms
        sandbox_form_field="form",  # /sandbox/pay posts a front form as the browser would
        # UNPAID: issued or posted, not paid (EXPIRED past payTimeout); FAILED: declined
        sandbox_paid_states=frozenset({"PAID"}),
        sandbox_unpaid_states=frozenset({"UNPAID"}),
        sandbox_refunded_states=frozenset({"SUCCESS"}),  # refunds and revokes, done when answered
    ),
    ChannelSpec(
        name="netsunion",
        title="网联 NetsUnion",
        default_port=8104,
        fee_rate_ppm=netsunion.FEE_RATE_PPM,
        settlement_prefix=netsunion.SETTLEMENT_PREFIX,
        bill_ready_after_s=netsunion.BILL_READY_AFTER_S,
        capabilities=netsunion.CAPABILITIES,
        sandbox_qr_field="out_trade_no",  # /sandbox/pay names the order by our ref (TrxId)
        # PROCESSING: a debit the bank still decides, or a gateway order not paid yet
        sandbox_paid_states=frozenset({"SUCCESS"}),
        sandbox_unpaid_states=frozenset({"PROCESSING"}),
        sandbox_refunded_states=frozenset({"SUCCESS"}),
        test_method="page",  # the payer's bank's gateway page (agreements need an SMS code)
        test_payer={"bank": "ICBC"},
    ),
)
BY_NAME: Mapping[str, ChannelSpec] = {c.name: c for c in CHANNELS}


@dataclass(frozen=True, slots=True)
class CutoverPair:
    """The cut-over ``paygrid drill cutover`` rehearses by default: a bank's payments of
    ``method`` moved step by step from ``incumbent`` to ``newcomer`` (断直连 to 网联)."""

    incumbent: str
    newcomer: str
    method: str
    bank: str


DRILL_CUTOVER = CutoverPair(incumbent="unionpay", newcomer="netsunion", method="page", bank="ICBC")
NAMES: tuple[str, ...] = tuple(BY_NAME)


class UnknownChannel(KeyError):
    pass


def spec(name: str) -> ChannelSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownChannel(f"no channel {name!r}; channels: {', '.join(NAMES)}") from None
