"""The production profile's processes: one role each, started by the supervisor as
``paygrid run ROLE`` with its settings in PAYGRID_* variables.

| role      | does                                                        | listens on       |
|-----------|-------------------------------------------------------------|------------------|
| api       | merchant API v1                                             | api_port (8000)  |
| cashier   | cashier pages                                               | cashier_port     |
| gateway   | channel callbacks (回调)                                     | gateway_port     |
| core      | payment core workers: expiry (closing at the channel), 补单  | ops_base_port+0  |
| relay     | outbox -> NATS JetStream                                    | ops_base_port+1  |
| ledger    | consumer: capture vouchers                                  | ops_base_port+2  |
| notifier  | consumer: notifications; delivery worker                    | ops_base_port+3  |
| scheduler | housekeeping: nonce purge, outbox gauges                    | ops_base_port+4  |

Every process serves /healthz, /readyz and /metrics on its operations port: the workers' port
above, ops_base_port+5, +6, +7 for api, cashier and gateway, whose public ports serve the health
routes only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

import uvloop
from fastapi import FastAPI
from sqlalchemy import func, select

from paygrid.api.app import ApiDeps, create_app
from paygrid.api.auth import purge_nonces
from paygrid.bus.jetstream import JetStreamBus
from paygrid.bus.ports import BusUnavailable
from paygrid.cashier.app import create_cashier_app
from paygrid.config import Settings
from paygrid.gateway.app import create_gateway_app
from paygrid.kernel.clock import utcnow
from paygrid.ops import observability as obs
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.platform.embedded import Loop, _serve, _server, merchant_lookup
from paygrid.storage.schema import outbox

log = logging.getLogger("paygrid.roles")
HTTP_ROLES = ("api", "cashier", "gateway")
WORKER_ROLES = ("core", "relay", "ledger", "notifier", "scheduler")
ROLES = HTTP_ROLES + WORKER_ROLES
BUS_CONNECT_RETRY_S = 1.0


def role_port(role: str, s: Settings) -> int:
    if role in HTTP_ROLES:
        return {"api": s.api_port, "cashier": s.cashier_port, "gateway": s.gateway_port}[role]
    return s.ops_base_port + WORKER_ROLES.index(role)


def ops_port(role: str, s: Settings) -> int:
    """Where a role serves /metrics: never on the public port of an HTTP role."""
    if role in HTTP_ROLES:
        return s.ops_base_port + len(WORKER_ROLES) + HTTP_ROLES.index(role)
    return role_port(role, s)


def connect_bus(url: str, name: str) -> JetStreamBus:
    """Connect, waiting for NATS as long as it takes (the supervisor may be restarting it)."""
    bus = JetStreamBus(url, name)
    while True:
        try:
            bus.connect()
            obs.BUS_UP.set(1)
            return bus
        except BusUnavailable as exc:
            obs.BUS_UP.set(0)
            log.warning("waiting for NATS: %s", exc)
            time.sleep(BUS_CONNECT_RETRY_S)


def run_role(role: str, settings: Settings) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    obs.json_logging(role)
    assert settings.nats_url, "the production profile needs PAYGRID_NATS_URL"
    bus = (
        connect_bus(settings.nats_url, f"paygrid-{role}")
        if role in ("relay", "ledger", "notifier")
        else None
    )
    consumers = {"ledger": ("ledger",), "notifier": ("notify",)}.get(role, ())
    platform = bootstrap(settings, bus=bus, consumers=consumers, migrate=False)
    checks: dict[str, obs.Check] = {"database": platform.db.ping}
    if bus is not None:
        checks["bus"] = lambda: bus.connected
        _bus_gauges(bus)
    loops = _loops(role, platform)
    if bus is not None and consumers:
        bus.start_consumers()
    app = _app(role, platform, checks)
    for loop in loops:
        loop.start()
    log.info("role %s up on port %d", role, role_port(role, settings))
    servers = [_server(app, settings.host, role_port(role, settings))]
    if role in HTTP_ROLES:
        ops = obs.ops_app(checks)
        servers.append(_server(ops, settings.host, ops_port(role, settings)))
    try:
        uvloop.run(_serve(servers, lambda: None))
    finally:
        for loop in loops:
            loop.stopping.set()
        if bus is not None:
            bus.close()
        platform.close()


def _app(role: str, platform: Platform, checks: Mapping[str, obs.Check]) -> FastAPI:
    s = platform.settings
    if role == "api":
        return create_app(
            ApiDeps(platform.db, platform.payments, platform.notify, s.zone, vault=platform.vault)
        )
    if role == "cashier":
        return create_cashier_app(platform.payments, merchant_lookup(platform), s.zone, checks)
    if role == "gateway":
        return create_gateway_app(platform.payments, checks)
    return obs.ops_app(checks)


def _loops(role: str, platform: Platform) -> list[Loop]:
    s = platform.settings
    if role == "core":

        def core_tick() -> int:
            closed = platform.payments.expire_due()
            recovered = platform.payments.recover_pending(timedelta(seconds=s.recovery_after_s))
            return closed + recovered

        return [Loop("core", core_tick, s.scheduler_interval_s)]
    if role == "relay":
        return [Loop("outbox-relay", platform.relay.pump, 0.1, busy_at=1)]
    if role == "notifier":
        return [Loop("notifier", platform.notify.deliver_due, 0.5, busy_at=1)]
    if role == "scheduler":

        def housekeeping() -> int:
            purge_nonces(platform.db)
            _outbox_gauges(platform)
            return 0

        return [Loop("scheduler", housekeeping, s.scheduler_interval_s)]
    return []


def _outbox_gauges(platform: Platform) -> None:
    with platform.db.read() as conn:
        waiting = select(func.count(), func.min(outbox.c.created_at)).where(
            outbox.c.published_at.is_(None), outbox.c.dead.is_(False)
        )
        count, oldest = conn.execute(waiting).one()
        dead = conn.execute(select(func.count()).where(outbox.c.dead.is_(True))).scalar_one()
    obs.OUTBOX_UNPUBLISHED.set(count)
    obs.OUTBOX_OLDEST_AGE.set((utcnow() - oldest).total_seconds() if oldest else 0)
    obs.OUTBOX_DEAD.set(dead)


def _bus_gauges(bus: JetStreamBus) -> None:
    def refresh() -> None:
        while True:
            obs.BUS_UP.set(1 if bus.connected else 0)
            c = bus.counters
            for consumer, n in c.redelivered.items():
                obs.REDELIVERIES.labels(consumer).set(n)
            for consumer, n in c.dead_lettered.items():
                obs.DEAD_LETTERS.labels(consumer).set(n)
            try:
                for consumer, lag in bus.consumer_lag().items():
                    obs.CONSUMER_LAG.labels(consumer).set(lag)
            except Exception:  # lag is best effort while NATS is away
                pass
            time.sleep(5)

    threading.Thread(target=refresh, name="bus-gauges", daemon=True).start()


RoleRunner = Callable[[str, Settings], None]
