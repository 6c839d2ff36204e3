"""Merchant open API v1 (商户开放接口): signed requests, idempotency, the DESIGN.md contract."""
