"""Callbacks (回调通知): notification bodies, queueing with the callback faults, and the sender,
which delivers queued notifications with retries, several at once (as WeChat does), one at a
time while the reorder fault needs their order kept.

Deliveries live in the store, so a restarted sandbox resumes them. Each attempt is signed afresh
(new timestamp and nonce); the body, and so the notification id, stays the same. A 2xx answer ends
it; otherwise it is retried on WeChat's schedule times ``retry_scale``, then marked FAILED.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx

from paygrid.channels.wechatpay import signing
from paygrid.channels.wechatpay.sandbox.faults import Faults
from paygrid.channels.wechatpay.sandbox.protocol import beijing_time
from paygrid.channels.wechatpay.sandbox.store import Notification, Store

RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
)  # fmt: skip
MAX_ACTIVE = 10_000  # queued deliveries; beyond this new callbacks are dropped
REORDER_BATCH = 3  # reorder fault: release held callbacks newest first, this many at a time
REORDER_WINDOW_SECONDS = 1.0  # ... or when the oldest has waited this long
POLL_SECONDS = 0.05
BATCH = 20
SENDERS = 8  # deliveries in flight at once

Signer = Callable[[bytes, bool], dict[str, str]]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where a notification goes and what it is about (``out_refund_no`` for a refund's)."""

    mchid: str
    out_trade_no: str
    out_refund_no: str | None
    url: str


def notification_body(
    apiv3_key: str,
    notify_id: str,
    event: tuple[str, str],
    resource: Mapping[str, Any],
    sealed_for: str,
    now: float,
) -> bytes:
    """A notification: ``event`` (event_type, summary), ``resource`` sealed with
    AEAD_AES_256_GCM under the APIv3 key, ``sealed_for`` its associated_data and original_type."""
    plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
    sealed = signing.aead_encrypt(apiv3_key, plaintext, sealed_for)
    envelope = {
        "id": notify_id,
        "create_time": beijing_time(now),
        "resource_type": "encrypt-resource",
        "event_type": event[0],
        "summary": event[1],
        "resource": {**sealed, "original_type": sealed_for},
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def queue_notification(
    store: Store, faults: Faults, target: NotifyTarget, notify_id: str, body: bytes
) -> None:
    """Queue one notification, with the callback faults: dropped, duplicated, delayed, held for
    reordering, preceded by a SIGNTEST probe."""
    now = time.time()
    config = faults.config
    dropped = store.active_notification_count() >= MAX_ACTIVE or faults.roll(config.drop_rate)
    copies = 2 if faults.roll(config.duplicate_rate) else 1
    probe = faults.roll(config.signtest_rate)
    template = Notification(
        id=0,
        notify_id=notify_id,
        mchid=target.mchid,
        out_trade_no=target.out_trade_no,
        url=target.url,
        body=body,
        probe=False,
        state="DROPPED" if dropped else ("HELD" if config.reorder else "PENDING"),
        attempts=0,
        next_at=now + config.delay_ms / 1000,
        created_at=now,
        last_status=None,
        last_error=None,
        out_refund_no=target.out_refund_no,
    )
    if probe and not dropped:
        store.add_notification(replace(template, probe=True, state="PENDING", next_at=now))
    for _ in range(1 if dropped else copies):
        store.add_notification(template)


class CallbackSender:
    def __init__(
        self,
        store: Store,
        sign: Signer,
        retry_scale: Callable[[], float],
        http: httpx.Client | None = None,
        in_order: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._sign = sign
        self._retry_scale = retry_scale
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(5.0, connect=2.0), trust_env=False, follow_redirects=False
        )
        self._in_order = in_order
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="wechatpay-callback")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wechatpay-callbacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)
        self._http.close()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.tick(time.time())
            except Exception:  # keep the sender alive; the row is retried next tick
                log.exception("callback sender tick failed")
                busy = False
            if not busy:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()

    def tick(self, now: float) -> bool:
        """Release held callbacks and deliver the due ones; True when something was sent."""
        self._release_held(now)
        due = self._store.due_notifications(now, BATCH)
        if self._in_order():
            for notification in due:
                if self._stop.is_set():
                    break
                self._deliver(notification)
        else:
            list(self._pool.map(self._deliver, due))
        return bool(due)

    def _release_held(self, now: float) -> None:
        held = self._store.held_notifications()
        if not held:
            return
        if len(held) < REORDER_BATCH and now - held[0].created_at < REORDER_WINDOW_SECONDS:
            return
        with self._store.transaction():
            for position, n in enumerate(reversed(held)):  # keeps a delay_ms fault too
                self._store.schedule_notification(
                    n.id, "PENDING", max(n.next_at, now) + position / 1e3
                )

    def _deliver(self, n: Notification) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Mozilla/4.0",
            **self._sign(n.body, n.probe),
        }
        status: int | None = None
        error: str | None = None
        try:
            status = self._http.post(n.url, content=n.body, headers=headers).status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        state, next_at = self._next(n, status)
        self._store.record_attempt(n.id, state, next_at, status, error)

    def _next(self, n: Notification, status: int | None) -> tuple[str, float]:
        now = time.time()
        if status is not None and 200 <= status < 300:
            return ("PROBED" if n.probe else "DELIVERED"), now
        if n.probe:  # a probe is sent once; the merchant is expected to refuse it
            return "PROBED", now
        attempt = n.attempts + 1
        if attempt > len(RETRY_SCHEDULE_SECONDS):
            return "FAILED", now
        return "PENDING", now + RETRY_SCHEDULE_SECONDS[attempt - 1] * self._retry_scale()
