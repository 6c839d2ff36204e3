"""`paygrid recon fetch` / `import` / `bills` against a running platform and its WeChat Pay
sandbox: the bill of a closed day comes in through the channel's API, checked and normalised;
the same bill again changes nothing; another file replaces it with an audit record; a bad file
is refused whole (exit 2, naming file, line and field) and nothing of it is imported."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from paygrid.kernel.money import rate_fee
from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid
from tests.support import MerchantReceiver, RunningPlatform

AMOUNT = 10_000


def _paid_day(running: RunningPlatform, merchant: MerchantReceiver) -> str:
    return str(business_day(paid(running, merchant, 2)[-1]["paid_at"]))


def _bills(running: RunningPlatform) -> list[dict[str, object]]:
    listed = running.paygrid("recon", "bills", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)
    return rows


def test_bills_in_through_the_api_and_by_hand(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, tmp_path: Path
) -> None:
    running = platform_factory()
    day = _paid_day(running, merchant)
    not_out = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day)
    assert not_out.returncode == 75, not_out.stderr  # the day has not ended: fetch again later
    running.sandbox("POST", "/sandbox/close-day", {"date": day})
    fetched = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day, "--json")
    assert fetched.returncode == 0, fetched.stderr
    bill = json.loads(fetched.stdout)
    assert bill["payments"] == {"count": 2, "amount": 2 * AMOUNT}
    assert (bill["fee"], bill["already_imported"]) == (2 * rate_fee(AMOUNT, 2000), False)
    again = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day, "--json")
    assert json.loads(again.stdout)["already_imported"] is True
    assert len(_bills(running)) == 1

    stored = next((running.data_dir / "recon" / "bills" / "wechatpay" / day).glob("*.parquet"))
    assert stored.stat().st_size > 0
    running.sandbox("POST", "/sandbox/faults", {"extra_lines": 1, "seed": 7})  # a 长款 line
    extra = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day, "--json")
    replacing = json.loads(extra.stdout)
    assert replacing["replaced"] == bill["bill_id"] and replacing["lines"] == 3
    rows = {r["bill_id"]: r for r in _bills(running)}
    assert rows[bill["bill_id"]]["status"] == "REPLACED"
    assert rows[bill["bill_id"]]["replaced_by"] == replacing["bill_id"]
    assert rows[replacing["bill_id"]]["status"] == "CURRENT"

    bad = tmp_path / "wx-bad.csv"
    bad.write_text("交易时间,公众账号ID\n`2026-11-30 00:00:00,`wx\n")
    refused = running.paygrid("recon", "import", str(bad), "--channel", "wechatpay", "--date", day)
    assert refused.returncode == 2
    assert "wx-bad.csv: line 1" in refused.stderr and "nothing imported" in refused.stderr
    assert len(_bills(running)) == 2


def test_bad_arguments_are_refused_before_anything_runs(platform_factory: PlatformFactory) -> None:
    running = platform_factory()
    tomorrow = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).date().isoformat()
    for args, says in [
        (("--channel", "nochannel", "--date", tomorrow), "unknown channel"),
        (("--channel", "wechatpay", "--date", "2026-13-01"), "--date"),
    ]:
        done = running.paygrid("recon", "fetch", *args)
        assert done.returncode == 2 and says in done.stderr, done.stderr
    missing = running.paygrid(
        "recon", "import", "/nonexistent.csv", "--channel", "wechatpay", "--date", tomorrow
    )
    assert missing.returncode == 2 and "nonexistent.csv" in missing.stderr


def test_an_alipay_bill_comes_in_through_its_api(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    from tests.integration.test_alipay_flow import alipay_order
    from tests.integration.test_alipay_flow import pay as alipay_pay

    running = platform_factory()
    [one] = paid(running, merchant, body=alipay_order, payer=alipay_pay)
    day = str(business_day(one["paid_at"]))
    running.channel_sandbox("alipay", "POST", "/sandbox/close-day", {"date": day})
    fetched = running.paygrid("recon", "fetch", "--channel", "alipay", "--date", day, "--json")
    assert fetched.returncode == 0, fetched.stderr
    bill = json.loads(fetched.stdout)
    assert bill["payments"] == {"count": 1, "amount": AMOUNT}
    assert bill["fee"] == rate_fee(AMOUNT, 6000)  # the sandbox's Alipay rate, 0.60%
