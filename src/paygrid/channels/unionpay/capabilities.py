"""What UnionPay's online gateway (银联全渠道, ACP 5.1.0) can do, for the channel registry.

Methods, in the port's words: ``page`` is 网关支付 from a desktop browser (channelType 07) and
``h5`` the same from a mobile browser (channelType 08): a signed form the payer's browser posts
to ``frontTransReq.do`` (PayerAction FORM); ``native`` is 二维码支付 (主扫): a back-end consume
(txnSubType 07) whose answer carries the ``qrCode`` the payer scans with a UnionPay app.
None needs anything of the payer at creation; the payer's bank (``payer.bank``), when known,
is sent as the issuer code (``issInsCode``, modelled: see banks.py).
"""

from __future__ import annotations

from datetime import timedelta

from paygrid.channels.ports import ChannelCapabilities

# 退货期限: UnionPay takes a refund (退货, txnType 04) within a year of the consume
# (unverified; contracts differ). The sandbox's refund_window_seconds default.
REFUND_WINDOW = timedelta(days=365)

CAPABILITIES = ChannelCapabilities(
    methods=frozenset({"page", "h5", "native"}),
    currencies=frozenset({"CNY"}),  # currencyCode 156, txnAmt in fen
    partial_refunds=True,  # several 退货 per consume, each its own orderId
    refund_window=REFUND_WINDOW,
    bill_types=frozenset({"00"}),  # fileType 00: the ZM/ZME merchant files
    cashier_methods=("page", "native"),
)
FEE_RATE_PPM = 5000  # 商户手续费: a common online gateway rate, 0.50 % (MODELLED)
# The ZM file of D is out after clearing, by about 09:00 on D+1 (unverified)
BILL_READY_AFTER_S = 9 * 3600
SETTLEMENT_PREFIX = "UP"  # its settlement transfers' reference: UP + date + merchant (MODELLED)
