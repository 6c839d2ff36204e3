"""The production profile's processes: one role each, started by the supervisor as
``paygrid run ROLE`` with its settings in PAYGRID_* variables. Which roles there are, their
ports, bus consumers and workers: the table in :mod:`paygrid.platform.workers`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import uvloop
from fastapi import FastAPI

from paygrid.agreements.service import AgreementService
from paygrid.api.app import ApiDeps, create_app
from paygrid.bus.jetstream import JetStreamBus
from paygrid.bus.ports import BusUnavailable
from paygrid.cashier.app import create_cashier_app
from paygrid.config import Settings
from paygrid.gateway.app import create_gateway_app
from paygrid.ops import observability as obs
from paygrid.platform import workers
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.platform.embedded import _serve, _server, merchant_lookup, shared_socket
from paygrid.platform.workers import copy_name, ops_port, role_port

log = logging.getLogger("paygrid.roles")
BUS_CONNECT_RETRY_S = 1.0


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


def run_role(name: str, settings: Settings, copy: int = 1) -> None:
    """Run one copy of a role: HTTP roles on their public port, which every copy binds
    (SO_REUSEPORT); each copy's /metrics (and a worker role's health) on its own ops port."""
    role = workers.role(name)
    process = copy_name(name, copy)
    obs.json_logging(process)
    assert settings.nats_url, "the production profile needs PAYGRID_NATS_URL"
    bus = connect_bus(settings.nats_url, f"paygrid-{process}") if role.uses_bus else None
    platform = bootstrap(settings, bus=bus, consumers=role.consumers, migrate=False)
    checks: dict[str, obs.Check] = {"database": platform.db.ping}
    if bus is not None:
        checks["bus"] = lambda: bus.connected
        _bus_gauges(bus)
    loops = [worker.loop(platform) for worker in workers.workers_of(name)]
    if bus is not None and role.consumers:
        bus.start_consumers()
    app = _app(name, platform, checks)
    for loop in loops:
        loop.start()
    own_ops = ops_port(name, settings, copy)
    if role.http:
        port = role_port(name, settings)
        public = shared_socket(settings.host, port)
        servers = [_server(app, settings.host, port, public)]
        servers.append(_server(obs.ops_app(checks), settings.host, own_ops))
    else:
        port = own_ops
        servers = [_server(app, settings.host, own_ops)]
    log.info("role %s up on port %d", process, port)
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
            ApiDeps(
                platform.db,
                platform.payments,
                platform.notify,
                s.zone,
                vault=platform.vault,
                data_dir=s.data_dir,
            )
        )
    if role == "cashier":
        agreements = AgreementService.over(platform.db, platform.payments)
        lookup = merchant_lookup(platform)
        return create_cashier_app(platform.payments, lookup, s.zone, checks, agreements)
    if role == "gateway":
        return create_gateway_app(platform.payments, checks)
    return obs.ops_app(checks)


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
