"""Agreements (协议 / 签约): a payer's bank account signed with an account-based channel, so that
later payments debit it without the payer leaving the merchant (协议支付). See
docs/agreements.md."""
