"""bench/recon.py keeps working as recon changes: a small day of each channel, generated in the
channel's real bill layout, taken in by paygrid's reader and classified; the run must find
exactly the differences it injected. The generated bill must also read with the channel's own
parser (the adapter's, not DuckDB), so the bench keeps measuring the real layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from paygrid.channels.alipay.bill import parse_bill_zip
from paygrid.channels.ports import BillLine
from paygrid.channels.wechatpay.bill import parse_trade_bill

pytestmark = [pytest.mark.timeout(180), pytest.mark.serial]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "recon.py"
LINES, EACH = 20_000, 20  # one line in 20 is a refund; 20 differences of each kind
PARSERS: dict[str, Callable[[bytes], Sequence[BillLine]]] = {
    "wechatpay": parse_trade_bill,
    "alipay": parse_bill_zip,
}
PAYMENT_KINDS = {"AMOUNT_MISMATCH", "FEE_MISMATCH", "STATUS_REPAIRED", "CHANNEL_ONLY"}
PAYMENT_KINDS |= {"PAYGRID_ONLY", "CROSS_DAY"}
REFUND_KINDS = {"AMOUNT_MISMATCH", "STATUS_REPAIRED", "CHANNEL_ONLY", "PAYGRID_ONLY"}


@pytest.mark.parametrize("channel", sorted(PARSERS))
def test_a_small_day_finds_exactly_the_injected_differences(channel: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    argv = [sys.executable, str(BENCH), "--channel", channel, "--lines", str(LINES)]
    argv += ["--differences", str(EACH), "--out", str(tmp_path), "--work", str(work)]
    argv.append("--skip-pandas")  # an optional baseline, not installed by `make test`
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=170, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / f"recon-{channel}-{LINES}.json").read_text())

    differences = result["differences"]
    assert differences["exact"]
    expected = differences["expected"]
    assert differences["found"] == expected
    assert set(expected["payments"]) == PAYMENT_KINDS | {"MATCHED"}
    assert set(expected["refunds"]) == REFUND_KINDS | {"MATCHED"}
    assert all(expected["payments"][k] == EACH for k in PAYMENT_KINDS)
    assert all(expected["refunds"][k] == EACH for k in REFUND_KINDS)
    assert (
        sum(expected["payments"].values()) + sum(expected["refunds"].values()) == LINES + 2 * EACH
    )
    assert result["baselines_agree"]
    assert result["rows_read"] == {"read_csv": LINES, "reader": LINES, "import": LINES}
    for name in ("read_csv", "reader", "import", "bare_join", "classify"):
        phase = result["phases"][name]
        assert phase["lines_per_s"] > 0 and phase["peak_rss_mib"] > 0, name
    ratios = result["ratios"]
    assert ratios["import lines/s / read_csv lines/s"] > 0
    assert ratios["classify-join s / bare join s"] > 0
    assert "differences injected and found" in done.stdout

    manifest = json.loads((work / "manifest.json").read_text())
    lines = PARSERS[channel](Path(manifest["files"]["bill"]).read_bytes())
    refunds = LINES // 20
    assert Counter(line.kind for line in lines) == {"PAYMENT": LINES - refunds, "REFUND": refunds}
    assert [line.trade_time for line in lines] == sorted(line.trade_time for line in lines)
