"""Alipay sandbox credentials: generated once, persisted owner-only, and fitting together."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.credentials import (
    CREDENTIALS_FILE,
    MERCHANT_KEYS,
    gateway_url,
    load_or_create_credentials,
    load_or_create_sandbox_credentials,
)


def test_created_once_and_reloaded(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path / "ali")
    assert set(first) == {*MERCHANT_KEYS, "gateway_url"}
    assert first["gateway_url"] == "http://127.0.0.1:8102/gateway.do" == gateway_url()
    assert load_or_create_credentials(tmp_path / "ali") == first
    path = tmp_path / "ali" / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "alipay_private_key" in json.loads(path.read_text())
    assert "alipay_private_key" not in first


def test_credentials_fit_together(tmp_path: Path) -> None:
    creds = load_or_create_sandbox_credentials(tmp_path)
    view = creds.merchant_view()
    assert view["app_id"].isdigit() and len(view["app_id"]) == 16
    assert view["seller_id"] == view["pid"]
    assert view["pid"].startswith("2088") and len(view["pid"]) == 16 and view["pid"].isdigit()
    assert view["sign_type"] == "RSA2"
    app_key = signing.load_private_key(view["app_private_key"])
    assert (
        app_key.public_key().public_numbers()
        == signing.load_public_key(view["app_public_key"]).public_numbers()
    )
    alipay_key = signing.load_private_key(creds.alipay_private_key)
    assert (
        alipay_key.public_key().public_numbers()
        == signing.load_public_key(view["alipay_public_key"]).public_numbers()
    )
    assert app_key.private_numbers() != alipay_key.private_numbers()
