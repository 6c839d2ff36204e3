"""What NetsUnion (网联) can do, as the channel registry declares it.

Two methods: ``agreement`` (协议支付), a debit of the payer's bank account under an agreement
(协议) signed before with an SMS code (see ports.AgreementChannel). The payer has nothing to do
at payment time (PayerActionKind.WAIT); the result comes asynchronously. A debit needs the
payer's bank and the agreement number at creation. ``page`` (网关支付, MODELLED): the payer's
browser posts a signed form to the payer bank's pay page (PayerActionKind.FORM) and pays there;
it needs the payer's bank. The cashier offers ``agreement`` only for now.
"""

from __future__ import annotations

from datetime import timedelta

from paygrid.channels.ports import ChannelCapabilities, PayerField

# MODELLED: the refund window is the member's and bank's business rule, not public; 180 days
# is the common window of bank card disputes, used as the sandbox default.
REFUND_WINDOW = timedelta(days=180)

CAPABILITIES = ChannelCapabilities(
    methods=frozenset({"agreement", "page"}),
    currencies=frozenset({"CNY"}),
    partial_refunds=True,  # several refunds per debit, each its own TrxId (MODELLED)
    refund_window=REFUND_WINDOW,
    bill_types=frozenset({"clearing"}),  # 清算文件, one per clearing batch (MODELLED)
    payer_fields={
        "agreement": frozenset({PayerField.BANK, PayerField.AGREEMENT}),
        "page": frozenset({PayerField.BANK}),
    },
    cashier_methods=("agreement", "page"),
)
FEE_RATE_PPM = 300  # MODELLED: the platform's processing fee on a debit, 0.03 %
# MODELLED: a day's clearing files are out at 06:00 Beijing the next morning
BILL_READY_AFTER_S = 6 * 3600
SETTLEMENT_PREFIX = "NU"  # its settlements into the reserve account: NU + date + member
