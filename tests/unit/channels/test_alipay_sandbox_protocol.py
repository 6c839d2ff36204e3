"""The Alipay sandbox's wire rules: parameter decoding in the request's charset, the common
parameter checks, amounts and expiry."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

import pytest

from paygrid.channels.alipay.bill import BEIJING
from paygrid.channels.alipay.sandbox import protocol as p

COMMON = {
    "app_id": "2021000000000001",
    "method": "alipay.trade.query",
    "version": "1.0",
    "sign_type": "RSA2",
    "sign": "x",
    "timestamp": "2024-05-01 12:00:00",
}


def test_params_decode_in_the_requests_charset_query_first() -> None:
    subject = quote("测试 商品".encode("gbk"))
    params = p.decode_params(b"charset=GBK&a=1", f"a=2&subject={subject}&b=x+y".encode())
    assert params == {"charset": "GBK", "a": "1", "subject": "测试 商品", "b": "x y"}
    utf8 = p.decode_params(b"", f"subject={quote('测试')}".encode())
    assert utf8["subject"] == "测试"


@pytest.mark.parametrize(
    "query, body, sub_code",
    [
        (b"charset=latin-1", b"", "isv.invalid-charset"),
        (b"", b"subject=%E6%B5", "isv.invalid-encoding"),
        (b"&".join(b"k%d=v" % i for i in range(100)), b"", "isv.invalid-parameter"),
    ],
)
def test_undecodable_params(query: bytes, body: bytes, sub_code: str) -> None:
    with pytest.raises(p.GatewayError) as caught:
        p.decode_params(query, body)
    assert (caught.value.code, caught.value.sub_code) == ("40002", sub_code)


@pytest.mark.parametrize(
    "change, code, sub_code",
    [
        ({"app_id": ""}, "40001", "isv.missing-app-id"),
        ({"method": ""}, "40001", "isv.missing-method"),
        ({"method": "alipay.trade.nope"}, "40002", "isv.invalid-method"),
        ({"version": ""}, "40001", "isv.missing-version"),
        ({"version": "2.0"}, "40002", "isv.invalid-version"),
        ({"sign_type": ""}, "40001", "isv.missing-signature-type"),
        ({"sign_type": "RSA"}, "40002", "isv.invalid-signature-type"),
        ({"sign": ""}, "40001", "isv.missing-signature"),
        ({"timestamp": ""}, "40001", "isv.missing-timestamp"),
        ({"timestamp": "2024/05/01 12:00"}, "40002", "isv.invalid-timestamp"),
        ({"format": "XML"}, "40002", "isv.invalid-format"),
    ],
)
def test_common_parameter_errors(change: dict[str, str], code: str, sub_code: str) -> None:
    with pytest.raises(p.GatewayError) as caught:
        p.check_common({**COMMON, **change})
    node = caught.value.node()
    assert (node["code"], node["sub_code"]) == (code, sub_code)
    assert node["msg"] == p.MESSAGES[code]


def test_common_parameters_accepted() -> None:
    assert p.check_common({**COMMON, "format": "json"}) == "alipay.trade.query"


@pytest.mark.parametrize(
    "value, fen",
    [("0.01", 1), ("12.3", 1230), ("88", 8800), ("100000000.00", 10_000_000_000)],
)
def test_amounts_are_exact(value: str, fen: int) -> None:
    assert p.amount_field({"total_amount": value}, "total_amount") == fen
    biz = p.biz_content({"biz_content": f'{{"total_amount": {value}}}'})  # a JSON number
    assert p.amount_field(biz, "total_amount") == fen


@pytest.mark.parametrize("value", ["0", "0.00", "0.001", "-1", "1e2", "100000000.01", "", "ab"])
def test_bad_amounts(value: str) -> None:
    with pytest.raises(p.GatewayError) as caught:
        p.amount_field({"total_amount": value}, "total_amount")
    assert caught.value.sub_code == "ACQ.INVALID_PARAMETER"


def test_expiry() -> None:
    now = datetime(2024, 5, 1, 22, 30, tzinfo=BEIJING).timestamp()
    assert p.expiry({}, now) == now + timedelta(days=15).total_seconds()
    assert p.expiry({"timeout_express": "90m"}, now) == now + 90 * 60
    end_of_day = datetime(2024, 5, 2, tzinfo=BEIJING).timestamp()
    assert p.expiry({"timeout_express": "1c"}, now) == end_of_day
    assert p.expiry({"time_expire": "2024-05-01 23:00:00"}, now) == now + 1800
    for bad in ({"timeout_express": "16d"}, {"timeout_express": "0m"}, {"timeout_express": "1w"}):
        with pytest.raises(p.GatewayError):
            p.expiry(bad, now)
    with pytest.raises(p.GatewayError):
        p.expiry({"time_expire": "2024-05-01 22:00:00"}, now)
