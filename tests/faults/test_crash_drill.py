"""The crash drill in CI: payments on every channel and refunds of them (full, and partial ones
racing each other past the amount) keep flowing while random processes, NATS and PostgreSQL
are SIGKILLed; at the end nothing is lost, created or counted twice. Once with one copy of each
role, once with two copies of the stateless ones (killed at random too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paygrid.ops.drill import min_paid
from tests.support import pg_bin, reachable_by_postgres

pytestmark = [pytest.mark.timeout(600), pytest.mark.postgres, pytest.mark.serial]
PAYMENTS = 120


@pytest.mark.parametrize(
    "copies", ["", "api=2,gateway=2,ledger=2,notifier=2"], ids=["one-copy", "two-copies"]
)
def test_crash_drill_converges(tmp_path: Path, copies: str) -> None:
    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI")
        pytest.skip("PostgreSQL binaries not installed")
    reachable_by_postgres(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "paygrid.cli",
            "drill",
            "crash",
            "--payments",
            str(PAYMENTS),
            "--seconds",
            "30",
            "--seed",
            "42",
            "--data-dir",
            str(tmp_path / "drill"),
            "--copies",
            copies,
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "drill passed" in output
    kills = [line for line in output.splitlines() if "SIGKILL" in line]
    assert any("SIGKILL nats" in k for k in kills) and any("SIGKILL postgres" in k for k in kills)
    assert len(kills) >= 10, kills
    if copies:
        assert any("#2 (pid" in k for k in kills), kills  # copies are killed too
    # Payers really paid, as many as expected: a drill in which nobody paid proves nothing.
    [summary] = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert summary["created"] == PAYMENTS, summary
    assert summary["paid_at_channel"] >= min_paid(PAYMENTS) > 0, summary
    assert summary["pay_confirmed"] <= summary["paid_at_channel"] <= summary["payers"], summary
    assert summary["success"] == summary["paid_at_channel"], summary
    # Refunds happened, raced, and were checked against the channels: every refund paygrid
    # accepted (and only those) is held, and each one the channels made is SUCCESS in paygrid.
    assert summary["refunds_payments"] >= 5, summary
    assert summary["refunds_asked"] > summary["refunds_payments"], summary  # some in parts
    assert summary["refunds_accepted"] + summary["refunds_refused"] == summary["refunds_asked"]
    assert summary["refunds_refused"] > 0 and summary["refunds_accepted"] > 0, summary
    assert summary["refunds_verified"] == summary["refunds_accepted"], summary
    assert summary["refunds_success"] == summary["refunds_succeeded_at_channel"] > 0, summary
