"""Sandbox credentials: generated once, persisted, and coherent with each other."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from paygrid.channels.wechatpay import signing
from paygrid.channels.wechatpay.credentials import (
    CREDENTIALS_FILE,
    MERCHANT_KEYS,
    load_or_create_credentials,
    load_or_create_sandbox_credentials,
)


def test_created_once_and_reloaded(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path / "wx")
    assert set(first) == set(MERCHANT_KEYS)
    assert load_or_create_credentials(tmp_path / "wx") == first
    mode = (tmp_path / "wx" / CREDENTIALS_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert "platform_private_key" in json.loads((tmp_path / "wx" / CREDENTIALS_FILE).read_text())


def test_credentials_fit_together(tmp_path: Path) -> None:
    creds = load_or_create_sandbox_credentials(tmp_path)
    merchant = creds.merchant_view()
    assert merchant["mchid"].isdigit() and len(merchant["mchid"]) == 10
    assert merchant["appid"].startswith("wx")
    assert len(merchant["apiv3_key"]) == 32
    assert merchant["public_key_id"].startswith("PUB_KEY_ID_")
    assert merchant["cert_serial_no"] == merchant["cert_serial_no"].upper()
    assert len(merchant["cert_serial_no"]) == 40

    cert = x509.load_pem_x509_certificate(creds.merchant_cert.encode())
    assert cert.serial_number == int(merchant["cert_serial_no"], 16)
    platform = x509.load_pem_x509_certificate(creds.platform_cert.encode())
    assert platform.serial_number == int(merchant["platform_cert_serial_no"], 16)

    # the merchant's private key signs what the sandbox verifies with the merchant certificate
    message = b"GET\n/v3/certificates\n1\nn\n\n"
    signature = signing.rsa_sign(signing.load_private_key(merchant["private_key"]), message)
    assert signing.rsa_verify(cert.public_key(), message, signature)  # type: ignore[arg-type]

    # the public key a merchant downloads is the half of the sandbox's public-key-mode key
    pair = signing.load_private_key(creds.public_key_private).public_key()
    pem = pair.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem.decode() == merchant["public_key"]
