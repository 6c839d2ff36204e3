"""The notification sender (后台通知): delivers queued notifications to ``backUrl`` with
retries, several at once, one at a time while the reorder fault needs their order kept.

Deliveries live in the store, so a restarted sandbox resumes them. The form and its signature
stay the same on every attempt. HTTP 200 ends it (the body is not read); anything else, or no
answer, is retried at increasing intervals — 1, 2, 4, 8 and 16 minutes (formats/unionpay.md
§5: the schedule is unverified) — times ``retry_scale``, then marked FAILED.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from paygrid.channels.unionpay.sandbox.store import Notification, Store

RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (60, 120, 240, 480, 960)
MAX_ACTIVE = 10_000  # queued deliveries; beyond this new notifies are dropped
REORDER_BATCH = 3  # reorder fault: release held notifies newest first, this many at a time
REORDER_WINDOW_SECONDS = 1.0  # ... or when the oldest has waited this long
POLL_SECONDS = 0.05
SWEEP_SECONDS = 0.5
BATCH = 20
SENDERS = 8  # deliveries in flight at once

log = logging.getLogger(__name__)


class NotifySender:
    def __init__(
        self,
        store: Store,
        retry_scale: Callable[[], float],
        sweep: Callable[[float], None] = lambda now: None,
        in_order: Callable[[], bool] = lambda: False,
        http: httpx.Client | None = None,
    ) -> None:
        self._store = store
        self._retry_scale = retry_scale
        self._sweep = sweep
        self._in_order = in_order
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(5.0, connect=2.0), trust_env=False, follow_redirects=False
        )
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="unionpay-notify")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unionpay-notifies", daemon=True)
        self._swept = 0.0

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
                now = time.time()
                if now - self._swept >= SWEEP_SECONDS:
                    self._swept = now
                    self._sweep(now)
                busy = self.tick(now)
            except Exception:  # keep the sender alive; the row is retried next tick
                log.exception("notify sender tick failed")
                busy = False
            if not busy:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()

    def tick(self, now: float) -> bool:
        """Release held notifies and deliver the due ones; True when something was sent."""
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
            "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
            "User-Agent": "UnionPay/1.0 paygrid-sandbox",
        }
        status: int | None = None
        error: str | None = None
        try:
            with self._http.stream("POST", n.url, content=n.body, headers=headers) as response:
                status = response.status_code  # the body is not read: 200 is the answer
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        state, next_at = self._next(n, status == 200)
        self._store.record_attempt(n.id, state, next_at, status, error)

    def _next(self, n: Notification, acknowledged: bool) -> tuple[str, float]:
        now = time.time()
        if acknowledged:
            return "DELIVERED", now
        attempt = n.attempts + 1
        if attempt > len(RETRY_SCHEDULE_SECONDS):
            return "FAILED", now
        return "PENDING", now + RETRY_SCHEDULE_SECONDS[attempt - 1] * self._retry_scale()
