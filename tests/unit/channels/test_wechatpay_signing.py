"""WeChat Pay v3 signatures and AEAD, including agreement with the wechatpayv3 SDK."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import utils as sdk

from paygrid.channels.wechatpay import signing

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APIV3_KEY = "0123456789abcdefghijABCDEFGHIJ01"
PATH = "/v3/pay/transactions/out-trade-no/ORDER_1?mchid=1900000109"
BODY = '{"mchid":"1900000109","description":"测试"}'.encode()


def authorization(**overrides: str) -> str:
    return signing.build_authorization(
        "POST",
        overrides.get("path", PATH),
        BODY,
        mchid="1900000109",
        serial_no="ABCDEF0123",
        private_key=KEY,
        timestamp=overrides.get("timestamp"),
    )


def test_authorization_roundtrip() -> None:
    auth = signing.verify_authorization(authorization(), "POST", PATH, BODY, KEY.public_key())
    assert (auth.mchid, auth.serial_no) == ("1900000109", "ABCDEF0123")
    assert len(auth.nonce_str) == 32


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", PATH, BODY + b" "),
        ("GET", PATH, BODY),
        ("POST", PATH.replace("ORDER_1", "ORDER_2"), BODY),
        ("POST", PATH + "&x=1", BODY),
    ],
)
def test_authorization_over_another_request_fails(method: str, path: str, body: bytes) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify_authorization(authorization(), method, path, body, KEY.public_key())


def test_authorization_with_another_key_or_stale_timestamp_fails() -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify_authorization(authorization(), "POST", PATH, BODY, OTHER_KEY.public_key())
    stale = authorization(timestamp=str(int(time.time()) - 301))
    with pytest.raises(signing.SignatureError):
        signing.verify_authorization(stale, "POST", PATH, BODY, KEY.public_key())


def test_authorization_matches_the_sdk_both_ways() -> None:
    sdk_header = sdk.build_authorization(
        PATH, "POST", "1900000109", "ABCDEF0123", KEY, BODY.decode()
    )
    signing.verify_authorization(sdk_header, "POST", PATH, BODY, KEY.public_key())
    ours = signing.parse_authorization(authorization())
    message = signing.request_message("POST", PATH, ours.timestamp, ours.nonce_str, BODY)
    assert sdk.rsa_sign(KEY, message.decode()) == ours.signature


def test_malformed_authorization_is_rejected() -> None:
    for header in ("", "Bearer x", 'WECHATPAY2-SHA256-RSA2048 mchid="1"'):
        with pytest.raises(signing.SignatureError):
            signing.parse_authorization(header)


def lookup(serial: str) -> Callable[[str], rsa.RSAPublicKey | None]:
    return lambda s: KEY.public_key() if s == serial else None


def test_response_signature_roundtrip_and_sdk_agrees() -> None:
    headers = signing.sign_response(BODY, KEY, "PUB_KEY_ID_0123")
    assert signing.verify_response(headers, BODY, lookup("PUB_KEY_ID_0123")) == "PUB_KEY_ID_0123"
    lower = {k.lower(): v for k, v in headers.items()}
    assert signing.verify_response(lower, BODY, lookup("PUB_KEY_ID_0123"))
    assert sdk.rsa_verify(
        headers["Wechatpay-Timestamp"],
        headers["Wechatpay-Nonce"],
        BODY.decode(),
        headers["Wechatpay-Signature"],
        KEY.public_key(),
    )


def test_tampered_response_fails() -> None:
    headers = signing.sign_response(BODY, KEY, "S1")
    with pytest.raises(signing.SignatureError):
        signing.verify_response(headers, BODY.replace(b"1900000109", b"1900000108"), lookup("S1"))
    with pytest.raises(signing.SignatureError):
        signing.verify_response({**headers, "Wechatpay-Nonce": "x"}, BODY, lookup("S1"))
    with pytest.raises(signing.SignatureError):  # unknown serial
        signing.verify_response(headers, BODY, lookup("S2"))
    with pytest.raises(signing.SignatureError):  # signed by another key
        signing.verify_response(signing.sign_response(BODY, OTHER_KEY, "S1"), BODY, lookup("S1"))


def test_signtest_probe_and_old_timestamp_fail() -> None:
    headers = signing.sign_response(BODY, KEY, "S1")
    probe = {**headers, "Wechatpay-Signature": signing.SIGNTEST_PREFIX + "abc"}
    with pytest.raises(signing.SignatureError, match="SIGNTEST"):
        signing.verify_response(probe, BODY, lookup("S1"))
    old = signing.sign_response(BODY, KEY, "S1", timestamp=str(int(time.time()) - 400))
    with pytest.raises(signing.SignatureError, match="window"):
        signing.verify_response(old, BODY, lookup("S1"))


def test_aead_roundtrip_and_sdk_decrypts() -> None:
    resource = signing.aead_encrypt(
        APIV3_KEY, '{"trade_state":"SUCCESS","x":"支付"}', "transaction"
    )
    assert resource["algorithm"] == "AEAD_AES_256_GCM" and len(resource["nonce"]) == 12
    plain = signing.aead_decrypt(
        APIV3_KEY, resource["nonce"], resource["ciphertext"], "transaction"
    )
    assert plain == '{"trade_state":"SUCCESS","x":"支付"}'
    assert (
        sdk.aes_decrypt(resource["nonce"], resource["ciphertext"], "transaction", APIV3_KEY)
        == plain
    )


def test_aead_wrong_key_or_associated_data_fails() -> None:
    resource = signing.aead_encrypt(APIV3_KEY, "secret", "transaction")
    with pytest.raises(signing.DecryptError):
        signing.aead_decrypt(
            APIV3_KEY[::-1], resource["nonce"], resource["ciphertext"], "transaction"
        )
    with pytest.raises(signing.DecryptError):
        signing.aead_decrypt(APIV3_KEY, resource["nonce"], resource["ciphertext"], "refund")
    with pytest.raises(signing.DecryptError):
        signing.aead_decrypt(APIV3_KEY, resource["nonce"], "not base64!", "transaction")
