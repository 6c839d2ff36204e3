"""The Alipay trade bill zip: the sandbox's writer and the adapter's parser agree, amounts are
exact fen, and a bill whose lines disagree with its totals is refused."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.channels.alipay.bill import (
    BEIJING,
    DETAIL_COLUMNS,
    BillFormatError,
    bill_file_stem,
    parse_bill_zip,
    read_bill_zip,
)
from paygrid.channels.alipay.sandbox.bill_writer import BillRow, write_bill_zip
from paygrid.kernel.money import Money

PID = "2088123456789012"
DAY = date(2024, 5, 1)
AT = datetime(2024, 5, 1, 10, 30, 5, tzinfo=BEIJING)
EXPORTED = datetime(2024, 5, 2, 9, 0, 0, tzinfo=BEIJING)


def payment(total: int, fee: int, no: str = "PG1") -> BillRow:
    return BillRow(
        trade_no="2024050122001400000000000001",
        out_trade_no=no,
        kind="交易",
        subject="测试商品, with a comma",
        created_at=AT,
        finished_at=AT,
        buyer_account="138****0000",
        total=total,
        received=total,
        service_fee=-fee,
    )


def refund(total: int, amount: int, fee_back: int, request_no: str = "R1") -> BillRow:
    return BillRow(
        trade_no="2024050122001400000000000001",
        out_trade_no="PG1",
        kind="退款",
        subject="测试商品",
        created_at=AT,
        finished_at=AT.replace(hour=11),
        buyer_account="138****0000",
        total=total,
        received=-amount,
        service_fee=fee_back,
        out_request_no=request_no,
    )


def test_roundtrip_payments_and_refunds_in_exact_fen() -> None:
    rows = [payment(1234, 7), refund(1234, 100, 1), refund(1234, 1134, 6, "R2")]
    lines = parse_bill_zip(write_bill_zip(PID, DAY, rows, EXPORTED))
    assert [(x.kind, x.amount, x.fee, x.refund_ref) for x in lines] == [
        ("PAYMENT", Money(1234, "CNY"), Money(7, "CNY"), None),
        ("REFUND", Money(100, "CNY"), Money(-1, "CNY"), "R1"),
        ("REFUND", Money(1134, "CNY"), Money(-6, "CNY"), "R2"),
    ]
    first = lines[0]
    assert first.channel_trade_no == "2024050122001400000000000001"  # the TAB is stripped
    assert first.payment_ref == "PG1"
    assert first.trade_time == AT
    assert first.extra["商品名称"] == "测试商品, with a comma"


def test_layout_is_alipays() -> None:
    content = write_bill_zip(PID, DAY, [payment(1, 0)], EXPORTED)
    archive = zipfile.ZipFile(io.BytesIO(content), metadata_encoding="gbk")
    stem = bill_file_stem(PID, DAY)
    assert stem == f"{PID}0156_20240501"
    names = sorted(i.filename for i in archive.infolist())
    assert names == [f"{stem}_业务明细(汇总).csv", f"{stem}_业务明细.csv"]
    assert all(not i.flag_bits & 0x800 for i in archive.infolist())  # GBK names, no UTF-8 flag
    detail = archive.read(f"{stem}_业务明细.csv").decode("gbk").split("\r\n")
    assert detail[0] == "#支付宝业务明细查询"
    assert detail[1] == f"#账号：[{PID}0156]"
    assert detail[2].startswith("#起始日期：[2024年05月01日 00:00:00]")
    assert detail[4].split(",") == list(DETAIL_COLUMNS)
    assert detail[5].startswith("2024050122001400000000000001\t,PG1\t,交易\t,")
    parsed = read_bill_zip(content)
    assert parsed.account == f"{PID}0156"
    assert (parsed.start, parsed.end) == (
        datetime(2024, 5, 1, tzinfo=BEIJING),
        datetime(2024, 5, 2, tzinfo=BEIJING),
    )
    assert parsed.total["交易订单总笔数"] == "1"


def test_an_empty_day_parses_to_no_lines() -> None:
    assert parse_bill_zip(write_bill_zip(PID, DAY, [], EXPORTED)) == []


fen = st.integers(min_value=1, max_value=10_000_000_000)


@given(st.lists(st.tuples(fen, st.integers(min_value=0, max_value=10**7)), max_size=8))
def test_any_amounts_survive_the_roundtrip(pairs: list[tuple[int, int]]) -> None:
    rows = [payment(total, fee, f"PG{i}") for i, (total, fee) in enumerate(pairs)]
    lines = parse_bill_zip(write_bill_zip(PID, DAY, rows, EXPORTED))
    assert [(x.amount.minor, x.fee.minor) for x in lines] == pairs


def _rewrite(content: bytes, old: str, new: str, suffix: str = "_业务明细.csv") -> bytes:
    """The zip with one text replaced in the file whose name ends with ``suffix``."""
    source = zipfile.ZipFile(io.BytesIO(content), metadata_encoding="gbk")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(suffix):
                text = data.decode("gbk")
                assert old in text, old
                data = text.replace(old, new, 1).encode("gbk")
            target.writestr(info.filename, data)  # UTF-8 flagged names: also accepted
    return out.getvalue()


GOOD = write_bill_zip(PID, DAY, [payment(1234, 7), refund(1234, 100, 1)], EXPORTED)


def test_a_rewritten_but_consistent_zip_still_parses() -> None:
    assert len(parse_bill_zip(_rewrite(GOOD, "测试", "测试"))) == 2


@pytest.mark.parametrize(
    "old, new, suffix, message",
    [
        (",12.34,12.34,", ",12.34,12.35,", "_业务明细.csv", "合计"),  # a line one fen off
        ("#交易合计：1笔", "#交易合计：2笔", "_业务明细.csv", "交易合计"),
        ("合计,,1,1,", "合计,,1,2,", "(汇总).csv", "退款订单总笔数"),
        (",-0.06,", ",-0.08,", "(汇总).csv", "服务费"),
        ("交易\t,", "转账\t,", "_业务明细.csv", "unknown 业务类型"),
        ("PG1\t,交易", "PG1\t,extra,交易", "_业务明细.csv", "values for"),
        ("#账号：[", "#账号:[", "_业务明细.csv", "#账号"),
    ],
)
def test_inconsistent_or_malformed_bills_are_refused(
    old: str, new: str, suffix: str, message: str
) -> None:
    with pytest.raises(BillFormatError, match=message):
        parse_bill_zip(_rewrite(GOOD, old, new, suffix))


def test_not_a_zip_or_missing_the_summary_is_refused() -> None:
    with pytest.raises(BillFormatError, match="not a zip"):
        parse_bill_zip("#支付宝业务明细查询".encode("gbk"))
    source = zipfile.ZipFile(io.BytesIO(GOOD), metadata_encoding="gbk")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith("(汇总).csv"):
                target.writestr(info.filename, source.read(info))
    with pytest.raises(BillFormatError, match="one 业务明细"):
        parse_bill_zip(out.getvalue())


def test_an_oversized_file_is_refused_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    from paygrid.channels.alipay import bill

    monkeypatch.setattr(bill, "MAX_UNZIPPED_BYTES", 100)
    with pytest.raises(BillFormatError, match="larger than 100 bytes"):
        parse_bill_zip(GOOD)
