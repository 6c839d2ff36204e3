"""Cashier (收银台): the standalone page where the payer picks a method and pays."""
