"""The notification sender (交易结果通知): delivers queued epcc.711 notifications with retries,
several at once, one at a time while the reorder fault needs their order kept; and, between
rounds, the sandbox's clock work (the banks decide due debits and refunds).

Deliveries live in the store, so a restarted sandbox resumes them. The message, its NtfyId and
its signature stay the same on every attempt. Only an answer the member signed (epcc.712 with
SysRtnCd 00000000, checked by ``acknowledged``) ends it; anything else is retried on the
schedule below (MODELLED) times ``retry_scale``, then marked FAILED.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.sandbox.store import Notification, Store

RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (15, 15, 30, 180, 600, 1200, 1800, 1800, 3600)
MAX_ACTIVE = 10_000  # queued deliveries; beyond this new notifications are dropped
MAX_ANSWER_BYTES = 8 * 1024  # of the member's answer: a signed epcc.712 is about 1 KiB
REORDER_BATCH = 3  # reorder fault: release held notifications newest first, this many at a time
REORDER_WINDOW_SECONDS = 1.0  # ... or when the oldest has waited this long
POLL_SECONDS = 0.05
SWEEP_SECONDS = 0.1
BATCH = 20
SENDERS = 8

log = logging.getLogger(__name__)


class NotifySender:
    def __init__(
        self,
        store: Store,
        retry_scale: Callable[[], float],
        acknowledged: Callable[[int, bytes], bool],
        sweep: Callable[[float], None],
        in_order: Callable[[], bool],
    ) -> None:
        self._store = store
        self._retry_scale = retry_scale
        self._acknowledged = acknowledged
        self._sweep = sweep
        self._in_order = in_order
        self._http = httpx.Client(
            timeout=httpx.Timeout(5.0, connect=2.0), trust_env=False, follow_redirects=False
        )
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="netsunion-notify")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netsunion-notify", daemon=True)
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
                log.exception("notification sender tick failed")
                busy = False
            if not busy:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()

    def tick(self, now: float) -> bool:
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
            for position, n in enumerate(reversed(held)):
                self._store.schedule_notification(
                    n.id, "PENDING", max(n.next_at, now) + position / 1e3
                )

    def _deliver(self, n: Notification) -> None:
        headers = wire.http_headers(wire.NOTIFY, wire.PLATFORM_SENDER)
        status: int | None = None
        answer: bytes | None = None
        error: str | None = None
        try:
            with self._http.stream("POST", n.url, content=n.body, headers=headers) as response:
                status = response.status_code
                answer = _read_some(response)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        done = status is not None and answer is not None and self._acknowledged(status, answer)
        state, next_at = self._next(n, done)
        text = answer[:300].decode("utf-8", "replace") if answer is not None else None
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
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            break
    return data[: MAX_ANSWER_BYTES + 1]
