"""Merchants (商户): accounts, API keys, fee plan, the methods each may use."""
