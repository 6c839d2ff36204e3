"""The one table of what runs in the background and in which process.

:data:`WORKERS` are the background loops. The embedded profile runs them all, with every bus
consumer, in its second process, :data:`BACKGROUND` (:mod:`paygrid.platform.background`),
beside the process that serves HTTP (:mod:`paygrid.platform.embedded`); the production profile
runs each in its role's process (:mod:`paygrid.platform.roles`). :data:`ROLES` are the
production profile's processes, started by the supervisor as ``paygrid run ROLE``, killed at
random by the crash drill:

| role      | does                                                        | listens on       |
|-----------|-------------------------------------------------------------|------------------|
| api       | merchant API v1                                             | api_port (8000)  |
| cashier   | cashier pages                                               | cashier_port     |
| gateway   | channel callbacks (回调)                                     | gateway_port     |
| core      | payment core workers: expiry (closing at the channel), 补单  | ops_base_port+0  |
|           | for payments and for refunds                                |                  |
| relay     | outbox -> NATS JetStream                                    | ops_base_port+1  |
| ledger    | consumer: capture and refund vouchers                       | ops_base_port+2  |
| notifier  | consumer: notifications; delivery worker                    | ops_base_port+3  |
| scheduler | housekeeping: nonce purge, outbox gauges                    | ops_base_port+4  |
| recon     | reconciliation jobs: fetch bills when out, run each channel | ops_base_port+8  |
|           | and date (docs/recon.md), recon gauges                      |                  |

Every process serves /healthz, /readyz and /metrics on its operations port: the workers' port
above, ops_base_port+5, +6, +7 for api, cashier and gateway, whose public ports serve the health
routes only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from paygrid.api.auth import purge_nonces
from paygrid.config import OPS_PORTS, Settings
from paygrid.kernel.clock import utcnow
from paygrid.notify.service import BATCH as NOTIFY_BATCH
from paygrid.ops import observability as obs
from paygrid.platform.bootstrap import Platform
from paygrid.recon.jobs import gauges as recon_gauges
from paygrid.recon.jobs import recon_pass
from paygrid.storage.schema import outbox

log = logging.getLogger("paygrid")

RELAY_BACKLOG = 64  # events in one pass that mean more are waiting
WAKE_GATHER_S = 0.02  # a woken loop waits this long for more wakes before its beat
RELAY_INTERVAL_S = 0.2  # between passes without a backlog
RECON_GRACE = timedelta(seconds=60)  # a success younger than this may be on its way to the ledger
Tick = Callable[[Platform], int | None]
"""One beat of a worker: does a batch of work, returns how much it did."""
Interval = Callable[[Settings], float]
"""A worker's pause between beats, in seconds, from the settings."""


class Loop(threading.Thread):
    """Calls ``tick`` until stopped. A tick returns how much work it did: when it did a full
    batch (``busy_at`` or more) the loop goes again at once, else it waits ``interval``, or
    less if ``wake`` is set meanwhile (work it waits for became possible). A failing tick is
    logged and retried on the next beat; it never kills the loop."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], int | None],
        interval: float,
        busy_at: int = 0,
        wake: threading.Event | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._tick = tick
        self._interval = interval
        self._busy_at = busy_at
        self._wake = wake
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            done = 0
            try:
                done = self._tick() or 0
            except Exception:
                log.exception("%s tick failed", self.name)
            if not (self._busy_at and done >= self._busy_at):
                self._pause()

    def _pause(self) -> None:
        if self._wake is None:
            self.stopping.wait(self._interval)
            return
        if self._wake.wait(self._interval):  # a stop is noticed within one interval
            # Woken: let the wakes that follow close behind (slots freeing one after the
            # other) gather into this one beat instead of a beat each.
            self.stopping.wait(WAKE_GATHER_S)
        self._wake.clear()


@dataclass(frozen=True)
class Worker:
    """A background loop: ``tick`` every ``interval`` (at once again after a tick that did
    ``busy_at`` or more), run by the production role ``role``; ``embedded`` False: only in the
    production profile."""

    name: str  # the thread's name, in logs
    role: str
    tick: Tick
    interval: Interval
    busy_at: int = 0
    embedded: bool = True
    wake: Callable[[Platform], threading.Event] | None = None  # cuts the pause short

    def loop(self, platform: Platform) -> Loop:
        tick = self.tick
        wake = self.wake(platform) if self.wake is not None else None
        interval = self.interval(platform.settings)
        return Loop(self.name, lambda: tick(platform), interval, self.busy_at, wake)


@dataclass(frozen=True)
class Role:
    """A process of the production profile (``paygrid run NAME``). An HTTP role serves its app
    on ``public_port`` and its /metrics on ops_base_port + ``ops_offset``; any other role
    serves its /healthz, /readyz and /metrics there. ``consumers``: the bus consumers it runs
    (names known to :func:`paygrid.platform.bootstrap.bootstrap`); ``publishes``: it publishes
    to the bus."""

    name: str
    ops_offset: int
    public_port: Callable[[Settings], int] | None = None
    consumers: tuple[str, ...] = ()
    publishes: bool = False
    scales: bool = False  # stateless: more copies share its port or its bus consumers

    @property
    def http(self) -> bool:
        return self.public_port is not None

    @property
    def uses_bus(self) -> bool:
        return self.publishes or bool(self.consumers)


# --- the ticks ------------------------------------------------------------------------------
def expire_and_recover(platform: Platform) -> int:
    """Close expired payments at the channel; 补单: query the channel for payments whose
    callback is late."""
    closed = platform.payments.expire_due()
    older_than = timedelta(seconds=platform.settings.recovery_after_s)
    return closed + platform.payments.recover_pending(older_than)


def recover_refunds(platform: Platform) -> int:
    """补单 for refunds: query the channel about refunds PROCESSING whose word is late; send
    again one the channel never received."""
    older_than = timedelta(seconds=platform.settings.recovery_after_s)
    return platform.payments.recover_refunds(older_than)


def relay_outbox(platform: Platform) -> int:
    return platform.relay.pump()


def deliver_notifications(platform: Platform) -> int:
    return platform.notify.deliver_due()


def purge_used_nonces(platform: Platform) -> int:
    purge_nonces(platform.db)
    return 0


def outbox_gauges(platform: Platform) -> int:
    """The outbox's backlog, its oldest event's age and its dead letters, for /metrics."""
    with platform.db.read() as conn:
        waiting = select(func.count(), func.min(outbox.c.created_at)).where(
            outbox.c.published_at.is_(None), outbox.c.dead.is_(False)
        )
        count, oldest = conn.execute(waiting).one()
        dead = conn.execute(select(func.count()).where(outbox.c.dead.is_(True))).scalar_one()
    obs.OUTBOX_UNPUBLISHED.set(count)
    obs.OUTBOX_OLDEST_AGE.set((utcnow() - oldest).total_seconds() if oldest else 0)
    obs.OUTBOX_DEAD.set(dead)
    return 0


def reconcile_due(platform: Platform) -> int:
    """Fetch the bills that are out, run the channels' dates that need it (recon/jobs.py)."""
    if not platform.settings.recon_schedule:
        return 0
    done = recon_pass(platform, RECON_GRACE)
    obs.RECON_FETCHED.inc(done.fetched)
    for channel in done.ran:
        obs.RECON_RUNS.labels(channel).inc()
    for channel in done.failed:
        obs.RECON_FAILED.labels(channel).inc()
    differences, open_cases = recon_gauges(platform.db)
    for gauge, values in ((obs.RECON_DIFFERENCES, differences), (obs.RECON_OPEN_CASES, open_cases)):
        gauge.clear()
        for (channel, kind), n in values.items():
            gauge.labels(channel, kind).set(n)
    return 0


def recon_interval(settings: Settings) -> float:
    return settings.recon_interval_s


def every(seconds: float) -> Interval:
    return lambda _settings: seconds


def scheduler_interval(settings: Settings) -> float:
    return settings.scheduler_interval_s


# --- the tables -----------------------------------------------------------------------------
WORKERS: tuple[Worker, ...] = (
    Worker("core", "core", expire_and_recover, scheduler_interval),
    Worker("refund-recovery", "core", recover_refunds, scheduler_interval),
    # Goes again at once only after a large batch (a backlog); else every 0.2 s, so events
    # gather into batches: one read, one publish, one mark and one transaction per consumer
    # for many payments, at the cost of up to 0.2 s before an event is published.
    Worker("outbox-relay", "relay", relay_outbox, every(RELAY_INTERVAL_S), busy_at=RELAY_BACKLOG),
    # Woken when notifications are queued (the consumer in this process) or a slot a full
    # merchant waited for frees: they go out at once and in batches; again at once only after
    # a full batch; every 0.5 s for retries that come due.
    Worker(
        "notifier",
        "notifier",
        deliver_notifications,
        every(0.5),
        busy_at=NOTIFY_BATCH,
        wake=lambda platform: platform.notify.wake,
    ),
    Worker("scheduler", "scheduler", purge_used_nonces, scheduler_interval),
    Worker("outbox-gauges", "scheduler", outbox_gauges, scheduler_interval, embedded=False),
    Worker("recon", "recon", reconcile_due, recon_interval),
)

BACKGROUND = "background"
"""The embedded profile's second process (``paygrid run background``): every worker of
:func:`embedded_workers` and every consumer of :func:`all_consumers`."""

# Copies (the ``copies`` setting, docs/scaling.md): an HTTP role's copies share its public port
# (SO_REUSEPORT: the kernel spreads connections); a consumer role's copies share its durable
# JetStream consumer (each message to one of them); notifier copies never lease one
# notification twice (FOR UPDATE SKIP LOCKED). Relay copies are hot standbys: one leader per
# database. core and scheduler run in one copy.
ROLES: tuple[Role, ...] = (
    Role("api", 5, public_port=lambda s: s.api_port, scales=True),
    Role("cashier", 6, public_port=lambda s: s.cashier_port, scales=True),
    Role("gateway", 7, public_port=lambda s: s.gateway_port, scales=True),
    Role("core", 0),
    Role("relay", 1, publishes=True, scales=True),
    Role("ledger", 2, consumers=("ledger",), scales=True),
    Role("notifier", 3, consumers=("notify",), scales=True),
    Role("scheduler", 4),
    Role("recon", 8),
)
ROLE_NAMES: tuple[str, ...] = tuple(r.name for r in ROLES)
SCALABLE_ROLES: tuple[str, ...] = tuple(r.name for r in ROLES if r.scales)
COPY_SEPARATOR = "#"  # copy k >= 2 of a role is named ROLE#k (status, logs, the drill)


def role(name: str) -> Role:
    for r in ROLES:
        if r.name == name:
            return r
    raise ValueError(f"unknown role {name!r}; roles: {', '.join(ROLE_NAMES)}")


def workers_of(role_name: str) -> tuple[Worker, ...]:
    return tuple(w for w in WORKERS if w.role == role_name)


def embedded_workers() -> tuple[Worker, ...]:
    return tuple(w for w in WORKERS if w.embedded)


def all_consumers() -> tuple[str, ...]:
    """Every bus consumer, in table order: the embedded profile runs them all."""
    return tuple(c for r in ROLES for c in r.consumers)


def role_port(name: str, s: Settings) -> int:
    """Where a role answers /readyz: its public port, or its operations port."""
    r = role(name)
    return r.public_port(s) if r.public_port is not None else ops_port(name, s)


def ops_port(name: str, s: Settings, copy: int = 1) -> int:
    """Where a role (its ``copy``-th copy) serves /metrics: never on the public port of an
    HTTP role; copies after the first on their own block (copy_ops_base_port)."""
    if copy == 1:
        return s.ops_base_port + role(name).ops_offset
    return s.copy_ops_base_port + (copy - 2) * OPS_PORTS + role(name).ops_offset


def copy_name(name: str, copy: int) -> str:
    """The process name of a role's ``copy``-th copy: the role's own name for the first."""
    return name if copy == 1 else f"{name}{COPY_SEPARATOR}{copy}"


def role_copies(s: Settings) -> list[tuple[str, int]]:
    """Every (role, copy) the production profile runs, in table order."""
    return [(r.name, k) for r in ROLES for k in range(1, s.copies_of(r.name) + 1)]
