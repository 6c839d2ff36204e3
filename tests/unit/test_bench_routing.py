"""bench/routing.py runs and reports what the issue asks: decisions/s against a bare dict in the
same run, p99 latency, and the measured split against the configured weight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_routing_bench_reports_its_figures() -> None:
    run = subprocess.run(
        [sys.executable, "bench/routing.py", "--decisions", "5000", "--rules", "200",
         "--payments", "20000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    figures = json.loads(run.stdout)
    assert figures["rules"] == 200 and figures["decisions"] == 5000
    assert figures["decisions_per_s"] > 0 and figures["bare_dict_lookups_per_s"] > 0
    assert figures["router_over_dict"] > 1  # the bare lookup is the faster baseline
    assert figures["decision_latency_us"]["n"] == 5000
    assert figures["split"]["payments"] == 20000 and figures["split"]["within_half_pp"]
