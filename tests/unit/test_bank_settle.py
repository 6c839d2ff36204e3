"""What a channel sandbox pays into the reserve account for a day, with each settlement fault."""

from __future__ import annotations

from datetime import date

from paygrid.channels.bank.settle import Settlement, SettlementTerms, plan, reference

DAY = date(2026, 12, 31)


def test_t_plus_one_and_each_fault() -> None:
    ref = "WX20261231345678"
    assert reference("WX", DAY, "12345678") == ref
    assert plan("WX", "12345678", DAY, 10_000, SettlementTerms()) == Settlement(
        ref, 10_000, date(2027, 1, 1)
    )
    late = plan("WX", "12345678", DAY, 10_000, SettlementTerms(fault="late", late_days=3))
    assert late == Settlement(ref, 10_000, date(2027, 1, 4))
    short = plan("WX", "12345678", DAY, 10_000, SettlementTerms(fault="short", short_fen=250))
    assert short == Settlement(ref, 9_750, date(2027, 1, 1))
    assert plan("WX", "12345678", DAY, 10_000, SettlementTerms(fault="missing")) is None
    assert plan("WX", "12345678", DAY, 0, SettlementTerms()) is None  # nothing to pay
    assert plan("WX", "12345678", DAY, -5, SettlementTerms()) is None  # refunds exceeded
    assert plan("WX", "1", DAY, 1, SettlementTerms(days=0)) == Settlement("WX202612311", 1, DAY)
