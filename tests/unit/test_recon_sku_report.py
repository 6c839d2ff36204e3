"""Property-based: the per-SKU figures of a day, added up over many merchants' payments and
refunds as the channels confirmed them, give each merchant's SKUs summing exactly to its
confirmed totals (paid, refunds, fees, net), quantities as sold and refunded; a refund that
cannot be weighed by the items it names is still split in full; the CSV a merchant gets holds
its own SKUs only."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.recon.allocation import AllocationError
from paygrid.recon.sku import (
    Line,
    SkuShare,
    order_lines,
    payment_shares,
    refund_shares,
    refund_shares_or_spread,
)
from paygrid.recon.sku_results import (
    CSV_COLUMNS,
    BillFigures,
    SkuFigures,
    Tally,
    Totals,
    sku_csv,
)

SKUS = ["A", "B", "C", "GIFT"]
lines_st = st.lists(
    st.builds(
        Line,
        sku=st.sampled_from(SKUS),
        quantity=st.integers(min_value=1, max_value=20),
        unit_amount=st.integers(min_value=0, max_value=100_000),  # a gift is worth 0
    ),
    min_size=0,  # no items: one line of the whole order
    max_size=6,
)


@st.composite
def days(draw: st.DrawFn) -> list[tuple[str, list[SkuShare], bool, int, int]]:
    """Bill lines of several merchants, split as sku_report splits them: (mchid, shares,
    is_payment, the channel's amount, its fee)."""
    split: list[tuple[str, list[SkuShare], bool, int, int]] = []
    for _ in range(draw(st.integers(1, 8))):
        mchid = draw(st.sampled_from(["m1", "m2", "m3"]))
        items = draw(lines_st)
        value = sum(line.list_value for line in items)
        if items and value == 0:
            continue  # paygrid refuses an order of no value
        off = draw(st.integers(0, max(value - 1, 0))) if items else 0
        total = value - off if items else draw(st.integers(1, 10**7))
        lines = order_lines(items, total)
        confirmed = draw(st.sampled_from([total, total + 1, max(total - 1, 1)]))
        fee = draw(st.integers(0, confirmed // 100 + 1))
        split.append((mchid, payment_shares(lines, off, confirmed, fee), True, confirmed, fee))
        weights = payment_shares(lines, off, total, 0)
        for _ in range(draw(st.integers(0, 2))):
            named = draw(st.none() | _named(lines))
            amount = draw(st.integers(1, total))
            back = -draw(st.integers(0, fee))
            shares = refund_shares_or_spread(weights, named, amount, back)
            split.append((mchid, shares, False, amount, back))
    return split


def _named(lines: list[Line]) -> st.SearchStrategy[dict[str, int]]:
    bought: dict[str, int] = {}
    for line in lines:
        bought[line.sku] = bought.get(line.sku, 0) + line.quantity
    return st.fixed_dictionaries({}, optional={s: st.integers(1, q) for s, q in bought.items()})


@given(days())
def test_each_merchants_skus_add_up_exactly_to_what_the_channels_confirmed(
    day: list[tuple[str, list[SkuShare], bool, int, int]],
) -> None:
    tally = Tally()
    for mchid, shares, is_payment, amount, fee in day:
        tally.add(mchid, shares, is_payment, amount, fee)
    merchants = tally.merchants()  # raises NotTied when a merchant's SKUs do not add up
    for m in merchants:
        mine = [d for d in day if d[0] == m.mchid]
        paid = [d for d in mine if d[2]]
        back = [d for d in mine if not d[2]]
        c = m.confirmed
        assert (c.payments, c.payment_amount) == (len(paid), sum(d[3] for d in paid))
        assert (c.refunds, c.refund_amount) == (len(back), sum(d[3] for d in back))
        assert c.fee == sum(d[4] for d in mine)
        assert sum(r.paid for r in m.skus) == c.payment_amount
        assert sum(r.refund for r in m.skus) == c.refund_amount
        assert sum(r.fee for r in m.skus) == c.fee
        assert sum(r.net for r in m.skus) == c.net == c.payment_amount - c.refund_amount - c.fee
        sold = sum(s.quantity for d in paid for s in d[1])
        assert sum(r.quantity for r in m.skus) == sold
        assert sum(r.refund_quantity for r in m.skus) == sum(s.quantity for d in back for s in d[1])
        assert [r.sku for r in m.skus] == sorted({r.sku for r in m.skus})


@given(lines_st.filter(lambda ls: sum(line.list_value for line in ls) > 0), st.data())
def test_a_refund_of_items_worth_nothing_is_spread_in_full_keeping_its_quantities(
    items: list[Line], data: st.DataObject
) -> None:
    value = sum(line.list_value for line in items)
    gift = Line("GIFT-0", data.draw(st.integers(1, 5)), 0)
    lines = [*items, gift]
    paid = payment_shares(lines, 0, value, 0)
    amount = data.draw(st.integers(1, value))
    back = -data.draw(st.integers(0, amount // 100 + 1))
    named = {"GIFT-0": gift.quantity}
    with pytest.raises(AllocationError):
        refund_shares(paid, named, amount, back)  # nothing to weigh it by
    shares = refund_shares_or_spread(paid, named, amount, back)
    assert sum(s.refund for s in shares) == amount
    assert sum(s.fee for s in shares) == back
    assert [s.quantity for s in shares] == [0] * len(items) + [gift.quantity]


def test_a_merchants_csv_holds_its_own_skus_only() -> None:
    tally = Tally()
    mine = payment_shares([Line("A", 2, 500), Line("B", 1, 300)], 100, 1_200, 8)
    theirs = payment_shares([Line("Z", 1, 999)], 0, 999, 6)
    tally.add("m1", mine, True, 1_200, 8)
    tally.add("m2", theirs, True, 999, 6)
    totals = Totals(2, 2_199, 0, 0, 14)
    bill = BillFigures("ch", "bil_1", totals, totals, Totals())
    figures = SkuFigures(date(2026, 3, 1), (bill,), tally.merchants())
    rows = list(csv.DictReader(io.StringIO(sku_csv(figures, "m1"))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["sku"], r["quantity"], r["discount"], r["paid"], r["fee"]) for r in rows] == [
        ("A", "2", "77", "923", "6"),
        ("B", "1", "23", "277", "2"),
    ]
    assert sum(int(r["net"]) for r in rows) == 1_200 - 8
    assert list(csv.reader(io.StringIO(sku_csv(figures, "m3")))) == [list(CSV_COLUMNS)]
    doc = figures.as_json()
    assert doc["unattributed"] == Totals().as_json()
    assert [m["mchid"] for m in doc["merchants"]] == ["m1", "m2"]
