"""The notify sender (异步通知): delivers queued notifies with retries, several at once, one at a
time while the reorder fault needs their order kept; and, between rounds, the sandbox's clock
work (unpaid trades expire, paid ones finish after the refund window).

Deliveries live in the store, so a restarted sandbox resumes them. The form, its ``notify_id``
and its signature stay the same on every attempt. Only an answer whose body is exactly the seven
characters ``success`` ends it; anything else is retried on Alipay's schedule (4m, 10m, 10m, 1h,
2h, 6h, 15h: eight notifies in about 25 hours) times ``retry_scale``, then marked FAILED.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from paygrid.channels.alipay.sandbox.store import Notification, Store

RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (240, 600, 600, 3600, 7200, 21600, 54000)
ACK = b"success"
MAX_ACTIVE = 10_000  # queued deliveries; beyond this new notifies are dropped
MAX_ANSWER_BYTES = 256  # of the merchant's answer, kept for /sandbox/notifications
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
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="alipay-notify")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alipay-notifies", daemon=True)
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
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": "Mozilla/4.0",
        }
        status: int | None = None
        answer: bytes | None = None
        error: str | None = None
        try:
            with self._http.stream("POST", n.url, content=n.body, headers=headers) as response:
                status = response.status_code
                answer = _read_some(response)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        acknowledged = status is not None and 200 <= status < 300 and answer == ACK
        state, next_at = self._next(n, acknowledged)
        text = answer.decode("utf-8", "replace") if answer is not None else None
        self._store.record_attempt(n.id, state, next_at, (status, text, error))

    def _next(self, n: Notification, acknowledged: bool) -> tuple[str, float]:
        now = time.time()
        if acknowledged:
            return "DELIVERED", now
        attempt = n.attempts + 1
        if attempt > len(RETRY_SCHEDULE_SECONDS):
            return "FAILED", now
        return "PENDING", now + RETRY_SCHEDULE_SECONDS[attempt - 1] * self._retry_scale()


def _read_some(response: httpx.Response) -> bytes:
    """At most MAX_ANSWER_BYTES of the answer: enough to tell ``success`` from the rest."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            break
    return data[: MAX_ANSWER_BYTES + 1]
