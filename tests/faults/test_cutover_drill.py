"""`paygrid drill cutover` as an operator runs it: the newcomer's share rises step by step, a
degraded newcomer is taken out by its breaker and probed back in once healed, and every payment
is paid exactly once (the drill's own checks; its exit code says whether they held)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(600), pytest.mark.serial]


def test_the_cutover_drill_moves_traffic_and_back_without_losing_a_payment(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "paygrid.cli", "drill", "cutover", "--payments", "12",
         "--data-dir", str(tmp_path / "cut")],
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "drill passed" in done.stdout
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    phases = {p["phase"]: p for p in summary["phases"]}
    assert phases["degraded"]["failovers"] >= 1  # orders the newcomer never accepted moved
    assert phases["held-out"]["newcomer_out_by_breaker"] >= 1
    assert summary["breaker_state"] == {"while_degraded": 2.0, "after_heal": 0.0}
    assert phases["healed"]["routed_to_newcomer_pct"] > 0
    assert summary["problems"] == 0
