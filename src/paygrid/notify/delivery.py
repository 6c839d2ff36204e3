"""Delivering notifications over HTTP: one attempt under a total deadline, to an address that
was vetted and is then pinned (DNS rebinding); and the pool that runs attempts with bounded
concurrency, overall and per merchant, without any attempt waiting for another."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, TypeVar

import httpx

from paygrid.notify.domain import (
    DELIVERY_DEADLINE_S,
    REASON_CONNECTION_FAILED,
    REASON_TIMEOUT,
    status_reason,
)
from paygrid.notify.url_policy import (
    IpAddress,
    Network,
    NotifyTarget,
    UrlRefused,
    check_address,
    check_url,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ADDRESSES = 8  # resolved addresses tried, in the resolver's order
SHUTDOWN_GRACE_S = DELIVERY_DEADLINE_S + 5.0

Resolver = Callable[[str, int], Awaitable[list[IpAddress]]]


async def system_resolver(host: str, port: int) -> list[IpAddress]:
    """The host's addresses as the system resolver gives them, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: the HTTP status if one came back, the coarse reason of a
    failure (None when acknowledged), and the detail for paygrid's log only."""

    status: int | None
    reason: str | None
    detail: str | None
    took_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and self.reason is None


class Poster:
    """POSTs a notification: check the URL, resolve, check every address, connect to a checked
    one (Host header and TLS SNI stay the host name), all within ``deadline_s``."""

    def __init__(
        self,
        allowed: Sequence[Network],
        deadline_s: float = DELIVERY_DEADLINE_S,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.allowed = tuple(allowed)
        self._deadline = deadline_s
        self._resolve = resolver
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(deadline_s),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: it would undo the pinning
            # No connection reuse: a pooled connection is keyed by address, not by name and SNI.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        started = time.perf_counter()

        def done(status: int | None, reason: str | None, detail: str | None) -> Outcome:
            return Outcome(status, reason, detail, int((time.perf_counter() - started) * 1000))

        try:
            async with asyncio.timeout(self._deadline):
                status = await self._post(url, headers, body)
        except UrlRefused as exc:
            return done(None, exc.reason, exc.message)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return done(None, REASON_TIMEOUT, f"no answer within {self._deadline}s: {exc!r}")
        except (httpx.HTTPError, OSError) as exc:
            return done(None, REASON_CONNECTION_FAILED, f"{type(exc).__name__}: {exc}"[:500])
        return done(status, status_reason(status), None)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> int:
        target = check_url(url, self.allowed)
        if target.address is not None:
            addresses = [target.address]
        else:
            addresses = (await self._resolve(target.host, target.port))[:MAX_ADDRESSES]
        if not addresses:
            raise OSError(f"{target.host} has no address")
        for address in addresses:  # every one, before connecting to any (DNS rebinding)
            check_address(address, self.allowed)
        failure: httpx.ConnectError | None = None
        for address in addresses:
            try:
                return await self._send(target, address, headers, body)
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _send(
        self, target: NotifyTarget, address: IpAddress, headers: dict[str, str], body: bytes
    ) -> int:
        extensions: dict[str, Any] = {}
        if target.scheme == "https" and not target.host_is_address:
            extensions["sni_hostname"] = target.host
        request = self._client.build_request(
            "POST",
            target.url_for(address),
            content=body,
            headers={**headers, "Host": target.host_header, "Connection": "close"},
            extensions=extensions,
        )
        response = await self._client.send(request, stream=True)
        await response.aclose()  # the body is never read: only the status counts
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


class DeliveryPool:
    """Runs delivery jobs on an event loop of its own thread, each as its own task: at most
    ``capacity`` at once and at most ``per_merchant`` of one merchant. Slots are reserved by
    the caller before it claims work, so that nothing waits in a queue holding a claim."""

    def __init__(self, capacity: int, per_merchant: int) -> None:
        self.capacity = capacity
        self.per_merchant = per_merchant
        self._lock = threading.Lock()
        self._by_merchant: Counter[str] = Counter()
        self._by_id: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Set when a slot frees that a claim may have been waiting for (the pool or the
        # merchant was full): wakes the claiming loop.
        self.freed = threading.Event()

    # --- slots ----------------------------------------------------------------------------
    def free(self) -> int:
        with self._lock:
            return self.capacity - self._by_merchant.total()

    def in_flight(self) -> tuple[list[str], list[str]]:
        """(notification ids in flight, merchants with every slot taken)."""
        with self._lock:
            full = [m for m, n in self._by_merchant.items() if n >= self.per_merchant]
            return list(self._by_id), full

    def busy(self) -> tuple[list[str], dict[str, int]]:
        """(notification ids in flight, slots each merchant holds)."""
        with self._lock:
            return list(self._by_id), dict(self._by_merchant)

    def reserve(self, notify_id: str, mchid: str, force: bool = False) -> bool:
        """Take a slot; ``force`` (a resend someone is waiting for) goes past the caps."""
        with self._lock:
            full = (
                self._by_merchant.total() >= self.capacity
                or self._by_merchant[mchid] >= self.per_merchant
                or notify_id in self._by_id
            )
            if full and not force:
                return False
            self._by_merchant[mchid] += 1
            self._by_id[notify_id] += 1
            return True

    def release(self, notify_id: str, mchid: str) -> None:
        with self._lock:
            was_full = (
                self._by_merchant.total() >= self.capacity
                or self._by_merchant[mchid] >= self.per_merchant
            )
            self._by_merchant[mchid] -= 1
            self._by_id[notify_id] -= 1
            self._by_merchant += Counter()  # drop zeros
            self._by_id += Counter()
        if was_full:
            self.freed.set()

    # --- running --------------------------------------------------------------------------
    def submit(
        self, notify_id: str, mchid: str, job: Callable[[], Coroutine[Any, Any, None]]
    ) -> concurrent.futures.Future[None]:
        """Run ``job`` for a slot reserved with :meth:`reserve`; the slot is freed after."""

        async def run() -> None:
            try:
                await job()
            except Exception:
                log.exception("delivery of notification %s failed", notify_id)
                raise
            finally:
                self.release(notify_id, mchid)

        return asyncio.run_coroutine_threadsafe(run(), self._running_loop())

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="notify-deliveries", daemon=True
                )
                self._thread.start()
            return self._loop

    def close(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        """Let the attempts in flight finish (each is bounded by its deadline), then stop."""
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            if cleanup is not None:
                await cleanup()

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(SHUTDOWN_GRACE_S + 5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
