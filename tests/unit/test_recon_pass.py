"""The recon job's pass: one channel's failing run is logged and counted, and every other
party's due run still happens (fakes for the database side: the runs are integration-tested)."""

from __future__ import annotations

from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from paygrid.channels import registry
from paygrid.channels.bank import BANK
from paygrid.config import Settings
from paygrid.recon import jobs


def test_a_failing_run_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = registry.NAMES[0]
    tried: list[tuple[str, date]] = []

    def run_one(_platform: Any, channel: str, day: date, _grace: timedelta) -> bool:
        tried.append((channel, day))
        if channel == broken:
            raise RuntimeError("a bug in one channel's run")
        return True

    monkeypatch.setattr(jobs, "_fetch_due", lambda *_: 0)
    monkeypatch.setattr(jobs, "_needs_run", lambda *_: True)
    monkeypatch.setattr(jobs, "_run_one", run_one)
    platform: Any = SimpleNamespace(settings=Settings(recon_lookback_days=1), db=None)
    done = jobs.recon_pass(platform, timedelta(seconds=60))
    parties = (*registry.NAMES, BANK)
    assert len(tried) == 2 * len(parties)  # every party, both dates
    assert done.failed == (broken, broken)
    assert sorted(done.ran) == sorted([p for p in parties if p != broken] * 2)
