from __future__ import annotations

from paygrid.kernel.ids import cell_of, new_id, timestamp_ms_of


def test_ids_are_time_ordered_and_carry_the_cell() -> None:
    a = new_id("pay", cell=7, now_ms=1_700_000_000_000)
    b = new_id("pay", cell=7, now_ms=1_700_000_000_001)
    assert a < b
    assert cell_of(a) == 7
    assert timestamp_ms_of(a) == 1_700_000_000_000
    assert len(a) <= 32  # fits WeChat Pay's out_trade_no


def test_ids_are_unique() -> None:
    ids = {new_id("evt") for _ in range(10_000)}
    assert len(ids) == 10_000
