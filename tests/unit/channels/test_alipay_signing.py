"""Alipay RSA2 signatures: requests, raw response nodes, notifies; agreement with
python-alipay-sdk (the widely used SDK) in both directions."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl

import pytest
from alipay import AliPay
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid.channels.alipay import signing

APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ALIPAY_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PARAMS = {
    "app_id": "2021000000000001",
    "method": "alipay.trade.query",
    "charset": "utf-8",
    "sign_type": "RSA2",
    "timestamp": "2024-05-01 12:00:00",
    "version": "1.0",
    "notify_url": "",
    "biz_content": '{"out_trade_no":"PG1","subject":"测试 a&b=c"}',
}


def sdk() -> AliPay:
    """The SDK as a merchant configures it: app private key, Alipay public key."""
    return AliPay(
        appid=PARAMS["app_id"],
        app_private_key_string=signing.private_pem(APP_KEY),
        alipay_public_key_string=signing.public_pem(ALIPAY_KEY.public_key()),
    )


def test_request_content_is_sorted_non_empty_without_sign_and_not_encoded() -> None:
    content = signing.request_sign_content({**PARAMS, "sign": "x"})
    assert content.split("&")[0] == "app_id=2021000000000001"
    assert "sign_type=RSA2" in content
    assert "sign=" not in content.replace("sign_type=", "")
    assert "notify_url" not in content
    assert 'biz_content={"out_trade_no":"PG1","subject":"测试 a&b=c"}' in content
    assert content.index("app_id=") < content.index("biz_content=") < content.index("charset=")
    assert content.endswith("&version=1.0")


def test_request_roundtrip_and_tampering() -> None:
    signed = signing.sign_request(PARAMS, APP_KEY)
    assert "notify_url" not in signed
    signing.verify_request(signed, APP_KEY.public_key())
    for changed in ({"biz_content": PARAMS["biz_content"] + " "}, {"sign_type": "RSA"}):
        with pytest.raises(signing.SignatureError):
            signing.verify_request({**signed, **changed}, APP_KEY.public_key())
    with pytest.raises(signing.SignatureError):
        signing.verify_request(signed, OTHER_KEY.public_key())
    for bad in ("", "not base64!", "A" * 2000):
        with pytest.raises(signing.SignatureError):
            signing.verify_request({**signed, "sign": bad}, APP_KEY.public_key())


def test_the_sdks_request_verifies_here() -> None:
    client = sdk()
    data = client.build_body("alipay.trade.query", {"out_trade_no": "PG1", "subject": "中文 &="})
    params = dict(parse_qsl(client.sign_data(data), keep_blank_values=True))
    signing.verify_request(params, APP_KEY.public_key())
    with pytest.raises(signing.SignatureError):
        signing.verify_request({**params, "timestamp": "2000-01-01 00:00:00"}, APP_KEY.public_key())


def test_our_request_verifies_with_the_sdks_own_check() -> None:
    signed = signing.sign_request(PARAMS, APP_KEY)
    checker = AliPay(
        appid="x",
        app_private_key_string=signing.private_pem(OTHER_KEY),
        alipay_public_key_string=signing.public_pem(APP_KEY.public_key()),
    )
    assert checker._verify(signing.request_sign_content(signed), signed["sign"])


@pytest.mark.parametrize(
    "node",
    [
        {"code": "10000", "msg": "Success", "out_trade_no": "PG1"},
        {"code": "10000", "subject": 'braces } { and "quotes" \\', "list": [{"a": "}"}]},
        {"code": "40004", "sub_msg": "交易不存在"},
    ],
)
def test_response_roundtrip_over_raw_node_text(node: dict[str, object]) -> None:
    text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    body = signing.signed_response("alipay_trade_query_response", text, ALIPAY_KEY)
    assert signing.extract_node(body, "alipay_trade_query_response") == text
    verified = signing.verify_response(body, "alipay.trade.query", ALIPAY_KEY.public_key())
    assert verified == node


def test_the_sdk_verifies_our_response() -> None:
    text = json.dumps({"code": "10000", "msg": "Success", "trade_status": "TRADE_SUCCESS"})
    body = signing.signed_response("alipay_trade_query_response", text, ALIPAY_KEY)
    node = sdk()._verify_and_return_sync_response(body, "alipay_trade_query_response")
    assert node["trade_status"] == "TRADE_SUCCESS"


def test_response_verification_uses_the_exact_text_not_a_reserialisation() -> None:
    text = '{ "code" : "10000",  "msg":"Success" }'  # odd spacing: re-serialising would differ
    body = '{"alipay_trade_query_response" : ' + text + ', "sign":"%s"}'
    body = body % signing.rsa2_sign(ALIPAY_KEY, text)
    assert signing.verify_response(body, "alipay.trade.query", ALIPAY_KEY.public_key())["code"]
    tampered = body.replace('"Success"', '"Success "')
    with pytest.raises(signing.SignatureError):
        signing.verify_response(tampered, "alipay.trade.query", ALIPAY_KEY.public_key())


def test_unsigned_or_foreign_responses_are_refused() -> None:
    unsigned = '{"alipay_trade_query_response":{"code":"10000"}}'
    with pytest.raises(signing.SignatureError, match="not signed"):
        signing.verify_response(unsigned, "alipay.trade.query", ALIPAY_KEY.public_key())
    text = '{"code":"10000"}'
    other = signing.signed_response("alipay_trade_query_response", text, OTHER_KEY)
    with pytest.raises(signing.SignatureError):
        signing.verify_response(other, "alipay.trade.query", ALIPAY_KEY.public_key())
    with pytest.raises(signing.SignatureError, match="no alipay_trade_close_response"):
        signing.read_response('{"x":{}}', "alipay.trade.close")


def test_error_response_node_is_read_when_the_method_node_is_absent() -> None:
    text = '{"code":"40002","sub_code":"isv.invalid-app-id"}'
    body = signing.signed_response(signing.ERROR_NODE, text, ALIPAY_KEY)
    name, node_text, sign = signing.read_response(body, "alipay.trade.query")
    assert (name, node_text) == ("error_response", text) and sign


def test_extract_node_edge_cases() -> None:
    assert signing.extract_node('{"a_response":"text"}', "a_response") is None
    assert signing.extract_node('{"a_response":{"b":{"c":1}', "a_response") is None  # unclosed
    assert signing.extract_node('{"xa_response":{}, "a_response":{"k":1}}', "a_response") == (
        '{"k":1}'
    )


def test_notify_roundtrip_and_agreement_with_sdk_verify() -> None:
    fields = {
        "notify_id": "abc",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "12.34",
        "subject": "测试 & = 商品",
        "fund_bill_list": '[{"amount":"12.34","fundChannel":"ALIPAYACCOUNT"}]',
    }
    signed = signing.sign_notify(fields, ALIPAY_KEY)
    assert signed["sign_type"] == "RSA2"
    assert "sign_type" not in signing.notify_sign_content(signed)
    signing.verify_notify(signed, ALIPAY_KEY.public_key())
    data = dict(signed)
    sign = data.pop("sign")
    assert sdk().verify(data, sign)  # the SDK pops sign_type itself
    with pytest.raises(signing.SignatureError):
        signing.verify_notify({**signed, "total_amount": "1234.00"}, ALIPAY_KEY.public_key())
    with pytest.raises(signing.SignatureError, match="RSA2"):
        signing.verify_notify({**signed, "sign_type": "RSA"}, ALIPAY_KEY.public_key())


def test_notify_content_keeps_empty_values() -> None:
    assert signing.notify_sign_content({"a": "", "b": "1", "sign": "s"}) == "a=&b=1"


def test_keys_load_from_pem_pkcs1_and_bare_base64() -> None:
    pkcs1 = APP_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    bare_private = "".join(signing.private_pem(APP_KEY).splitlines()[1:-1])
    bare_public = "".join(signing.public_pem(APP_KEY.public_key()).splitlines()[1:-1])
    for text in (pkcs1, bare_private):
        key = signing.load_private_key(text)
        assert key.private_numbers() == APP_KEY.private_numbers()
    public = signing.load_public_key(bare_public)
    assert public.public_numbers() == APP_KEY.public_key().public_numbers()
    base64.b64decode(bare_public)  # really the bare body
