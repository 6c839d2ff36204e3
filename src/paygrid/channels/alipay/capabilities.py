"""What Alipay (支付宝) can do, as the channel registry declares it.

Methods, in the port's words: ``native`` is 当面付 扫码支付 (``alipay.trade.precreate``: a QR
code), ``page`` 电脑网站支付 (``alipay.trade.page.pay``: the desktop browser goes to Alipay's
cashier) and ``h5`` 手机网站支付 (``alipay.trade.wap.pay``: the same from a mobile browser).
None needs anything of the payer at creation.
"""

from __future__ import annotations

from datetime import timedelta

from paygrid.channels.ports import ChannelCapabilities

# 可退款期限: Alipay takes refunds for three months after payment by default (longer only by
# contract); then the trade is TRADE_FINISHED. The sandbox's refund_window_seconds default.
REFUND_WINDOW = timedelta(days=90)

CAPABILITIES = ChannelCapabilities(
    methods=frozenset({"native", "page", "h5"}),
    currencies=frozenset({"CNY"}),  # domestic trades: total_amount is in yuan
    partial_refunds=True,  # several refunds per trade, each named by out_request_no
    refund_window=REFUND_WINDOW,
    bill_types=frozenset({"trade", "signcustomer"}),  # 业务明细 / 账务明细
    cashier_methods=("native", "page"),
)
FEE_RATE_PPM = 6000  # 服务费: the common contracted rate (当面付, 电脑网站支付), 0.60 %
# Alipay's bill of D is out after 09:00 on D+1 (the business zone)
BILL_READY_AFTER_S = 9 * 3600
SETTLEMENT_PREFIX = "AP"  # its settlement transfers' reference: AP + date + merchant (MODELLED)
