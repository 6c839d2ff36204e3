"""WeChat Pay trade bill (交易账单): writer and parser, exact amounts."""

from __future__ import annotations

from datetime import datetime

import pytest

from paygrid.channels.wechatpay.bill import (
    ALL_COLUMNS,
    BEIJING,
    REFUND_COLUMNS,
    SUCCESS_COLUMNS,
    BillFormatError,
    TradeBillRow,
    parse_trade_bill,
    rate_text,
    read_trade_bill,
    write_trade_bill,
)
from paygrid.kernel.money import Money


def row(ref: str, total: int, fee: int, **extra: object) -> TradeBillRow:
    values: dict[str, object] = {
        "trade_time": datetime(2026, 3, 1, 23, 59, 59, tzinfo=BEIJING),
        "appid": "wx2421b1c4370ec43b",
        "mchid": "1900000109",
        "transaction_id": "4200000001202603011234567890",
        "out_trade_no": ref,
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "total": total,
        "fee": fee,
        "rate": "0.20%",
        "description": "商品, 带逗号",
        **extra,
    }
    return TradeBillRow(**values)  # type: ignore[arg-type]


def test_write_then_parse_keeps_exact_amounts() -> None:
    rows = [
        row("PG000001", 1, 0),
        row("PG000002", 123_456_789_012, 246_913_578),
        row(
            "PG000001",
            1,
            0,
            trade_state="REFUND",
            refund=1,
            refund_requested=1,
            refund_id="50000000382019052709732678859",
            out_refund_no="RF000001",
            refund_type="ORIGINAL",
            refund_status="SUCCESS",
        ),
    ]
    content = write_trade_bill(rows)
    text = content.decode("utf-8")
    lines = text.split("\r\n")
    assert lines[0] == ",".join(ALL_COLUMNS)
    assert lines[1].startswith("`2026-03-01 23:59:59,`wx2421b1c4370ec43b,`1900000109,`0,`,")
    assert "`1234567890.12" in lines[2] and "`2469135.78000" in lines[2]
    assert '"`商品, 带逗号"' in lines[1]  # csv quoting keeps a comma inside a value
    assert lines[4].startswith("总交易单数,")
    assert lines[5] == "`3,`1234567890.13,`0.01,`0.00,`2469135.78000,`1234567890.13,`0.01"

    parsed = parse_trade_bill(content)
    assert [(p.kind, p.amount, p.fee) for p in parsed] == [
        ("PAYMENT", Money(1, "CNY"), Money(0, "CNY")),
        ("PAYMENT", Money(123_456_789_012, "CNY"), Money(246_913_578, "CNY")),
        ("REFUND", Money(1, "CNY"), Money(0, "CNY")),
    ]
    assert parsed[2].refund_ref == "RF000001"
    assert parsed[0].trade_time == datetime(2026, 3, 1, 23, 59, 59, tzinfo=BEIJING)
    assert parsed[0].extra["商品名称"] == "商品, 带逗号"
    assert parsed[1].channel_trade_no == "4200000001202603011234567890"


def test_success_layout_has_twenty_columns() -> None:
    content = write_trade_bill([row("PG000003", 250, 1)], bill_type="SUCCESS")
    bill = read_trade_bill(content)
    assert bill.columns == SUCCESS_COLUMNS and len(SUCCESS_COLUMNS) == 20
    [line] = parse_trade_bill(content)
    assert (line.amount, line.fee) == (Money(250, "CNY"), Money(1, "CNY"))


# A file written by hand from the format notes: BOM, 27 columns, backticks, a refund row with a
# negative fee, fees with five decimals, summary header and row.
HANDCRAFTED = (
    "\ufeff交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
    "费率备注\r\n"
    "`2019-06-10 10:49:51,`wx2421b1c4370ec43b,`1900000109,`0,`,`4200000330201906107839876543,"
    "`20190610104934,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`100.00,`0.00,"
    "`0,`0,`0.00,`0.00,`,`,`Image形象店-深圳腾大-QQ公仔,`,`0.60000,`0.60%,`100.00,`0.00,`\r\n"
    "`2019-06-10 18:02:11,`wx2421b1c4370ec43b,`1900000109,`0,`,`4200000330201906107839876543,"
    "`20190610104934,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`100.00,`0.00,"
    "`50000000382019061009732678859,`RF20190610001,`30.00,`0.00,`ORIGINAL,`SUCCESS,"
    "`Image形象店-深圳腾大-QQ公仔,`,`-0.18000,`0.60%,`100.00,`30.00,`\r\n"
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
    "`2,`100.00,`30.00,`0.00,`0.42000,`100.00,`30.00\r\n"
)


def test_parse_a_handcrafted_bill() -> None:
    payment, refund = parse_trade_bill(HANDCRAFTED.encode("utf-8"))
    assert payment.kind == "PAYMENT"
    assert payment.payment_ref == "20190610104934"
    assert payment.channel_trade_no == "4200000330201906107839876543"
    assert payment.amount == Money(10_000, "CNY")
    assert payment.fee == Money(60, "CNY")
    assert payment.trade_time == datetime(2019, 6, 10, 10, 49, 51, tzinfo=BEIJING)
    assert refund.kind == "REFUND"
    assert refund.amount == Money(3_000, "CNY")
    assert refund.fee == Money(-18, "CNY")
    assert refund.refund_ref == "RF20190610001"
    assert read_trade_bill(HANDCRAFTED.encode()).summary["手续费总金额"] == "0.42000"


def test_summary_count_must_match_rows() -> None:
    broken = HANDCRAFTED.replace("`2,`100.00", "`3,`100.00")
    with pytest.raises(BillFormatError, match="summary"):
        parse_trade_bill(broken.encode())


def test_truncated_bill_is_rejected() -> None:
    truncated = HANDCRAFTED.split("总交易单数")[0]
    with pytest.raises(BillFormatError):
        parse_trade_bill(truncated.encode())


def test_amount_with_sub_fen_digits_is_rejected_not_rounded() -> None:
    bad = HANDCRAFTED.replace("`100.00,`0.00,`\r\n`2019", "`100.001,`0.00,`\r\n`2019")
    assert bad != HANDCRAFTED
    with pytest.raises(BillFormatError, match="decimals"):
        parse_trade_bill(bad.encode())


def test_wrong_column_count_is_rejected() -> None:
    bad = HANDCRAFTED.replace(",`0.60%,`100.00,`0.00,`\r\n", ",`0.60%,`100.00,`\r\n", 1)
    with pytest.raises(BillFormatError, match="columns"):
        parse_trade_bill(bad.encode())


def test_rate_text() -> None:
    assert (rate_text(2000), rate_text(6000), rate_text(38_000)) == ("0.20%", "0.60%", "3.80%")


def test_refund_layout_has_the_refund_times_and_parses_refund_lines() -> None:
    requested = datetime(2026, 3, 2, 9, 30, 0, tzinfo=BEIJING)
    refund = row(
        "PG000003",
        0,
        -3,
        trade_state="REFUND",
        trade_time=requested,
        refund=1_234,
        refund_requested=1_234,
        refund_id="50303108562026030201487282563",
        out_refund_no="RF-3|a@b",
        refund_type="ORIGINAL",
        refund_status="PROCESSING",
        refund_at=requested,
    )
    content = write_trade_bill([refund], "REFUND")
    parsed = read_trade_bill(content)
    assert parsed.columns == REFUND_COLUMNS and len(REFUND_COLUMNS) == 29
    assert parsed.columns[14:16] == ("退款申请时间", "退款成功时间")
    assert parsed.rows[0]["退款申请时间"] == "2026-03-02 09:30:00"
    assert parsed.rows[0]["退款成功时间"] == ""
    assert parsed.rows[0]["订单金额"] == "0.00"
    assert parsed.summary["退款总金额"] == "12.34"
    assert parsed.summary["手续费总金额"] == "-0.03000"
    [line] = parse_trade_bill(content)
    assert (line.kind, line.refund_ref, line.payment_ref) == ("REFUND", "RF-3|a@b", "PG000003")
    assert (line.amount, line.fee) == (Money(1_234, "CNY"), Money(-3, "CNY"))
    assert line.trade_time == requested


def test_a_refund_line_prefers_its_application_time() -> None:
    paid_at = datetime(2026, 3, 1, 8, 0, 0, tzinfo=BEIJING)
    asked_at = datetime(2026, 3, 2, 18, 13, 10, tzinfo=BEIJING)
    refund = row(
        "PG000004",
        0,
        0,
        trade_state="REFUND",
        trade_time=paid_at,
        refund=1,
        refund_requested=1,
        refund_id="50300000012026030200000000001",
        out_refund_no="RF4",
        refund_at=asked_at,
    )
    [line] = parse_trade_bill(write_trade_bill([refund], "REFUND"))
    assert line.trade_time == asked_at
    [line] = parse_trade_bill(write_trade_bill([refund], "ALL"))  # no such column in ALL
    assert line.trade_time == paid_at
