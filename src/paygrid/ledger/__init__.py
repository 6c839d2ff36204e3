"""Ledger (账务): double-entry accounts, vouchers (凭证) and entries (分录), append-only."""
