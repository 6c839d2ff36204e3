"""The recon job in the background process (the ``recon`` role's worker): a paid day closed at
the channel is fetched once its bill is out (not-out-yet is retried, not an error), reconciled
with its 长款 made a case, visible in /metrics; a person's run of the same date afterwards
reports the same, with the same case."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import text

from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid
from tests.support import MerchantReceiver, wait_until

JOB = {
    "PAYGRID_RECON_SCHEDULE": "true",
    "PAYGRID_RECON_INTERVAL_S": "1",
    "PAYGRID_RECON_LOOKBACK_DAYS": "1",
    "PAYGRID_RECON_BILL_READY_AFTER_S": "-86400",  # a date's bill is due during the date
}


def test_the_recon_job_fetches_runs_and_shows_its_figures(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory(env=JOB)
    two = paid(running, merchant, 2)
    day = business_day(two[-1]["paid_at"])
    running.sandbox("POST", "/sandbox/faults", {"extra_lines": 1, "seed": 5})  # a 长款 line
    running.sandbox("POST", "/sandbox/close-day", {"date": day.isoformat()})
    db = running.database()
    query = text(
        "SELECT result FROM recon_runs WHERE channel = 'wechatpay' AND business_date = :d "
        "AND run_by = 'recon-job' ORDER BY finished_at DESC"
    )

    def job_result() -> str | None:
        with db.read() as conn:
            return conn.execute(query, {"d": day.isoformat()}).scalar()

    wait_until(lambda: job_result() is not None, timeout=60)
    by_job = json.loads(job_result() or "{}")
    db.dispose()
    assert by_job["matched"] == {"count": 2, "amount": 2 * 10_000}
    [longer] = by_job["differences"]
    assert longer["kind"] == "CHANNEL_ONLY" and longer["case_id"]

    metrics = httpx.get(f"{running.more_ops_urls[0]}/metrics").text
    assert 'paygrid_recon_open_cases{channel="wechatpay",kind="CHANNEL_ONLY"} 1.0' in metrics
    assert 'paygrid_recon_differences{channel="wechatpay",kind="CHANNEL_ONLY"} 1.0' in metrics
    assert 'paygrid_recon_runs_total{channel="wechatpay"}' in metrics

    by_hand = running.paygrid(
        "recon", "run", "--date", str(day), "--channel", "wechatpay", "--json"
    )
    [result] = json.loads(by_hand.stdout)["results"]
    assert result["differences"] == by_job["differences"]  # the same case, found again
    assert result["matched"] == by_job["matched"]
