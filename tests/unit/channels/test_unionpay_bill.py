"""ZM/ZME fixed-width records: written and read back by GBK byte widths (Chinese fields
included), the zip and fileContent, the adapter's parser and recon's DuckDB reader."""

from __future__ import annotations

import base64
import zlib
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from paygrid.channels.unionpay import zm
from paygrid.channels.unionpay.bill_import import import_bill
from paygrid.kernel.ids import new_id
from paygrid.kernel.money import Money
from paygrid.recon.bill_format import NORMAL_COLUMNS, BillRefused

MER = "777290058110048"
DAY = date(2026, 12, 1)
AT = datetime(2026, 12, 1, 10, 20, 30, tzinfo=zm.BEIJING)
PAY, RFD = new_id("pay"), new_id("rfd")
PAY_ORDER, RFD_ORDER = PAY.replace("_", ""), RFD.replace("_", "")


def record(**values: str) -> bytes:
    base = {
        "交易代码": "S22",
        "系统跟踪号": "123456",
        "交易传输时间": "1201102030",
        "交易金额": "1000",
        "查询流水号": "261201102030123456789",
        "商户订单号": PAY_ORDER,
        "商户手续费": zm.signed_cell(5),
        "结算金额": zm.signed_cell(1000),
        "交易类型": "01",
        "交易子类": "01",
        "业务类型": "000201",
        "商户代码": MER,
        "清算净额": zm.signed_cell(995),
    }
    return zm.write_record({**base, **values})


REFUND = {
    "交易代码": "S30",
    "查询流水号": "261201112030000000001",
    "商户订单号": RFD_ORDER,
    "交易金额": "300",
    "商户手续费": zm.signed_cell(-2),
    "结算金额": zm.signed_cell(-300),
    "交易类型": "04",
    "交易子类": "00",
    "原交易查询流水号": "261201102030123456789",
    "交易传输时间": "1201112030",
}


def test_record_widths_are_gbk_bytes() -> None:
    line = record(二级商户简称="上海咖啡馆有限公司", 商户自定义域="备注：两杯拿铁")
    body = line.removesuffix(zm.NEWLINE)
    assert len(body) == zm.ZM_LENGTH == sum(w for _, w in zm.ZM_FIELDS) + 41
    assert len(body.decode("gbk")) < len(body)  # Chinese: fewer characters than bytes
    back = zm.read_record(body)
    assert back["二级商户简称"] == "上海咖啡馆有限公司"
    assert back["商户自定义域"] == "备注：两杯拿铁"
    assert back["交易金额"] == "000000001000" and back["商户订单号"] == PAY_ORDER
    # a character-counting reader would slice the field after it wrongly
    assert back["二级商户分账入账金额"] == ""


def test_long_chinese_text_is_cut_on_a_character() -> None:
    line = record(二级商户简称="汉" * 20).removesuffix(zm.NEWLINE)  # 40 bytes for 32
    assert zm.read_record(line)["二级商户简称"] == "汉" * 16


def test_bad_records_are_refused() -> None:
    body = record().removesuffix(zm.NEWLINE)
    with pytest.raises(zm.BillFormatError, match="bytes"):
        zm.read_record(body[:-1])
    with pytest.raises(zm.BillFormatError, match="separator"):
        zm.read_record(body[:3] + b"X" + body[4:])
    with pytest.raises(ValueError, match="digits"):
        record(交易金额="12.00")
    with pytest.raises(ValueError, match="sign"):
        record(商户手续费="000000000005")


def test_zme_layout() -> None:
    widths = (3, 11, 11, 6, 10, 19, 12, 4, 2, 2, 6, 10, 4, 12, 13, 13, 15, 15, 1, 12, 2, 135)
    assert sum(widths) + len(widths) - 1 == zm.ZME_LENGTH


def bill(*records: bytes, zme: bytes = b"") -> bytes:
    return zm.write_zip(MER, DAY, b"".join(records), zme, AT)


def test_file_content_round_trip_and_bounds() -> None:
    content = bill(record())
    text = zm.encode_file_content(content)
    assert zm.decode_file_content(text) == content
    assert zlib.decompress(base64.b64decode(text)) == content  # the SDKs' deCodeFileContent
    with pytest.raises(ValueError, match="past"):
        zm.decode_file_content(text, limit=10)
    with pytest.raises(ValueError):
        zm.decode_file_content("not base64!")
    names = zm.member_names(MER, DAY)
    assert names == (f"INN26120188ZM_{MER}", f"INN26120188ZME_{MER}")


def test_the_adapters_parser() -> None:
    payment, refund = zm.parse_zip(bill(record(), record(**REFUND)), DAY)
    assert (payment.kind, payment.payment_ref, payment.amount, payment.fee) == (
        "PAYMENT", PAY, Money(1000, "CNY"), Money(5, "CNY"))  # fmt: skip
    assert payment.trade_time == AT
    assert (refund.kind, refund.refund_ref, refund.payment_ref, refund.amount, refund.fee) == (
        "REFUND", RFD, PAY, Money(300, "CNY"), Money(-2, "CNY"))  # fmt: skip
    assert refund.channel_trade_no == payment.channel_trade_no
    with pytest.raises(zm.BillFormatError, match="ZME"):
        zm.parse_zip(bill(record(), zme=b"x" * zm.ZME_LENGTH + zm.NEWLINE))


def recon_import(tmp_path: Path, content: bytes) -> tuple[list[tuple[object, ...]], object]:
    path = tmp_path / zm.zip_name(MER, DAY)
    path.write_bytes(content)
    con = duckdb.connect()
    totals = import_bill(con, path, DAY, "bill")
    names = ", ".join(name for name, _ in NORMAL_COLUMNS)
    return con.execute(f"SELECT {names} FROM bill ORDER BY kind").fetchall(), totals


def test_recon_reader(tmp_path: Path) -> None:
    rows, totals = recon_import(tmp_path, bill(record(二级商户简称="上海咖啡馆"), record(**REFUND)))
    assert rows == [
        ("PAYMENT", datetime(2026, 12, 1, 2, 20, 30), "261201102030123456789", PAY, None, 1000,
         5, "CNY", "SUCCESS", MER),
        ("REFUND", datetime(2026, 12, 1, 3, 20, 30), "261201102030123456789", PAY, RFD, 300,
         -2, "CNY", "SUCCESS", MER),
    ]  # fmt: skip
    assert (totals.lines, totals.payments, totals.payment_amount) == (2, 1, 1000)  # type: ignore[attr-defined]
    assert (totals.refunds, totals.refund_amount, totals.fee) == (1, 300, 3)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"交易传输时间": "1202102030"}, "交易传输时间"),  # another day
        ({"交易类型": "02"}, "交易类型"),
        ({"商户订单号": ""}, "商户订单号"),
    ],
)
def test_recon_reader_names_the_bad_field(
    tmp_path: Path, values: dict[str, str], field: str
) -> None:
    with pytest.raises(BillRefused) as refused:
        recon_import(tmp_path, bill(record(), record(**values)))
    assert (refused.value.line, refused.value.field) == (2, field)


def test_recon_reader_refuses_a_cut_record_and_adjustments(tmp_path: Path) -> None:
    cut = record()[:-10] + zm.NEWLINE
    with pytest.raises(BillRefused, match="bytes"):
        recon_import(tmp_path, bill(record(), cut))
    with pytest.raises(BillRefused, match="adjustments"):
        recon_import(tmp_path, bill(record(), zme=b"x" * zm.ZME_LENGTH + zm.NEWLINE))
    with pytest.raises(BillRefused, match="zip"):
        recon_import(tmp_path, b"not a zip")
