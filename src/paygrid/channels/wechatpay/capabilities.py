"""What WeChat Pay (微信支付) can do, as the channel registry declares it."""

from __future__ import annotations

from datetime import timedelta

from paygrid.channels.ports import ChannelCapabilities, PayerField

CAPABILITIES = ChannelCapabilities(
    methods=frozenset({"native", "h5", "jsapi", "app"}),
    currencies=frozenset({"CNY"}),  # Native, H5, JSAPI and App payments are in yuan
    partial_refunds=True,
    refund_window=timedelta(days=365),  # WeChat Pay takes refunds for a year after payment
    bill_types=frozenset({"ALL", "SUCCESS", "REFUND"}),
    payer_fields={
        "h5": frozenset({PayerField.CLIENT_IP}),  # scene_info.payer_client_ip
        "jsapi": frozenset({PayerField.OPENID}),  # payer.openid
    },
    cashier_methods=("native",),
)
FEE_RATE_PPM = 2000  # what WeChat Pay charges us by default (0.20 %)
# WeChat Pay's trade bill of D is out after 10:00 on D+1 (the business zone)
BILL_READY_AFTER_S = 10 * 3600
SETTLEMENT_PREFIX = "WX"  # its settlement transfers' reference: WX + date + merchant (MODELLED)
