"""bench/e2e_payments.py keeps working as the platform changes: a tiny run of it, as a user runs
it (a subprocess starting `paygrid up`, the baseline and its load processes), with payments on
every channel of the registry and refunds of all of them, then `paygrid check`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paygrid.channels import registry

pytestmark = [pytest.mark.timeout(300), pytest.mark.serial]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "e2e_payments.py"
PAYMENTS_PER_CHANNEL = 2  # the first refunded in full, the second in two partial refunds


def test_mixed_channels_with_refunds_measured_beside_the_baseline(tmp_path: Path) -> None:
    payments = PAYMENTS_PER_CHANNEL * len(registry.NAMES)
    argv = [sys.executable, str(BENCH), "--channel", "mixed", "--refund-ratio", "1"]
    argv += ["--payments", str(payments), "--concurrency", "2", "--baseline-requests", "40"]
    argv += ["--timeout", "90", "--results-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "e2e_payments-sqlite-mixed-refunds1.json").read_text())

    paid, refunds = result["payments"], result["refunds"]
    assert (paid["notified"], paid["client_errors"]) == (payments, 0)
    work = paid["db_work_per_payment"]  # read from the platform's /metrics
    assert work["transactions"] > 0 and work["statements"] >= work["transactions"]
    assert set(paid["by_channel"]) == set(registry.NAMES)
    assert all(v["create"]["n"] == PAYMENTS_PER_CHANNEL for v in paid["by_channel"].values())
    per_channel_refunds = 1 + 2  # one full refund, two partial refunds
    assert refunds["full_refunds"] == len(registry.NAMES)
    assert refunds["partial_refunds"] == 2 * len(registry.NAMES)
    assert refunds["notified"] == refunds["created"] == per_channel_refunds * len(registry.NAMES)
    assert refunds["statuses_over_http"] == {"SUCCESS": refunds["notified"]}
    assert refunds["failed_notified"] == refunds["client_errors"] == 0
    assert set(refunds["by_channel"]) == set(registry.NAMES)
    assert refunds["stages"]["SUCCESS -> refund voucher (ledger)"]["n"] == refunds["notified"]

    end = result["end"]
    assert end["check_exit_code"] == 0, end["check_output"]
    assert end["db_after_drain"]["refund_vouchers"] == refunds["notified"]
    assert end["payment_statuses_over_http"] == {"SUCCESS": payments}
    assert result["notifications_received"]["bad_signatures"] == 0

    assert result["baseline"]["ok"] == 40
    ratios = result["ratios"]
    for key in ("payments_per_s / baseline req_per_s", "refunds_per_s / baseline req_per_s"):
        assert ratios[key] is not None and ratios[key] > 0
    assert paid["cpu_ms_per_payment"]["paygrid"] > 0 < refunds["cpu_ms_per_refund"]["paygrid"]
    assert "RATIOS" in done.stdout and "REFUNDS" in done.stdout
