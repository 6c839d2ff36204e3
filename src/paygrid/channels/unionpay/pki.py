"""The sandbox's certificate chain (证书体系), made on its first start.

A root CA and an intermediate (as the merchant downloads them: acp_prod_root.cer,
acp_prod_middle.cer), UnionPay's signing certificate (its PEM travels in every answer as
``signPubKeyCert``) and the merchant's signing key and certificate (the .pfx a merchant gets,
whose serial in decimal is ``certId``). Real UnionPay has CFCA issue these; here one
intermediate issues both leaves. RSA-2048, SHA-256.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from cryptography.x509.oid import NameOID

from paygrid.channels.unionpay.signing import UNIONPAY_CN, cert_pem, private_pem

KEY_BITS = 2048
CA_YEARS = 20
LEAF_YEARS = 5
BACKDATE = timedelta(days=1)  # so a clock a little behind still accepts the chain
SERIAL_BITS = 63


@dataclass(frozen=True, slots=True)
class Issued:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> str:
        return private_pem(self.key)

    @property
    def cert_pem(self) -> str:
        return cert_pem(self.cert)


def _name(cn: str, org: str = "China UnionPay (sandbox)") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _issue(
    subject: x509.Name, issuer: Issued | None, *, ca: bool, years: int, now: datetime
) -> Issued:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    signer_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(SERIAL_BITS) | 1 << (SERIAL_BITS - 1))
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return Issued(key, builder.sign(signer_key, hashes.SHA256()))


@dataclass(frozen=True, slots=True)
class Chain:
    root: Issued
    middle: Issued
    unionpay_sign: Issued  # UnionPay's signing certificate (signPubKeyCert)
    merchant_sign: Issued  # the merchant's signing certificate (certId)


def make_chain(mer_id: str, now: datetime | None = None) -> Chain:
    at = now or datetime.now(UTC)
    root = _issue(_name("CFCA ACS TEST ROOT (paygrid sandbox)"), None, ca=True, years=CA_YEARS,
                  now=at)  # fmt: skip
    middle = _issue(_name("CFCA ACS TEST OCA (paygrid sandbox)"), root, ca=True, years=CA_YEARS,
                    now=at)  # fmt: skip
    unionpay = _issue(_name(f"041@Z12@{UNIONPAY_CN}@00000001"), middle, ca=False,
                      years=LEAF_YEARS, now=at)  # fmt: skip
    merchant = _issue(_name(f"041@Z12@{mer_id}@00000001", "paygrid sandbox merchant"), middle,
                      ca=False, years=LEAF_YEARS, now=at)  # fmt: skip
    return Chain(root, middle, unionpay, merchant)


def merchant_pfx(key: rsa.RSAPrivateKey, cert: x509.Certificate, password: str) -> bytes:
    """The merchant's signing certificate as UnionPay hands it out: PKCS#12 (.pfx)."""
    return pkcs12.serialize_key_and_certificates(
        b"acp_sign", key, cert, None, BestAvailableEncryption(password.encode("utf-8"))
    )
