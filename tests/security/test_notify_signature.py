"""Defect 9 (last point): the merchant-side helper that verifies a notification's signature
also checks that Paygrid-Timestamp is fresh (±300 s, as the API asks of merchants), so a
captured notification cannot be replayed later; and no header value makes it raise."""

from __future__ import annotations

import time

import pytest

from paygrid.api.client import verify_notification
from paygrid.notify.domain import sign

SECRET = "merchant-secret-0123456789"
BODY = b'{"id":"ntf_1","type":"payment.succeeded","data":{}}'
NOW = 1_790_000_000


def headers(timestamp: str, nonce: str = "n0nce", signature: str | None = None) -> dict[str, str]:
    return {
        "Paygrid-Notify-Id": "ntf_1",
        "Paygrid-Timestamp": timestamp,
        "Paygrid-Nonce": nonce,
        "Paygrid-Signature": signature or sign(SECRET, timestamp, nonce, BODY),
    }


@pytest.mark.parametrize("skew", [0, -1, 1, -299, 299, -300, 300])
def test_fresh_notification_verifies(skew: int) -> None:
    assert verify_notification(SECRET, headers(str(NOW + skew)), BODY, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -3600, 86_400, -NOW])
def test_stale_or_future_notification_is_refused(skew: int) -> None:
    # Correctly signed, but stamped too long ago (a replay) or in the future.
    assert not verify_notification(SECRET, headers(str(NOW + skew)), BODY, now=NOW)


def test_defaults_to_the_current_time() -> None:
    assert verify_notification(SECRET, headers(str(int(time.time()))), BODY)
    assert not verify_notification(SECRET, headers(str(int(time.time()) - 3600)), BODY)


@pytest.mark.parametrize(
    "timestamp",
    ["9" * 400, "", "-5", "+1790000000", "1790000000.5", " 1790000000", "１７９０", "abc"],
)
def test_malformed_timestamps_are_refused_without_raising(timestamp: str) -> None:
    assert not verify_notification(SECRET, headers(timestamp), BODY, now=NOW)


def test_tampering_and_odd_signatures_are_refused_without_raising() -> None:
    ts = str(NOW)
    assert not verify_notification(SECRET, headers(ts), BODY + b" ", now=NOW)
    assert not verify_notification("other-secret", headers(ts), BODY, now=NOW)
    assert not verify_notification(SECRET, headers(ts, signature="签名"), BODY, now=NOW)
    assert not verify_notification(SECRET, headers(ts, signature="x"), BODY, now=NOW)
    assert not verify_notification(SECRET, {}, BODY, now=NOW)
    lower = {k.lower(): v for k, v in headers(ts).items()}
    assert verify_notification(SECRET, lower, BODY, now=NOW)
