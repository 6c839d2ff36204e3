"""Routing in one process: the configuration in force (reloaded from the database when a
newer version appears, at most every RELOAD_INTERVAL_S: no restart), the health board fed
by every channel call this process makes, and the figures /metrics shows."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from sqlalchemy.exc import SQLAlchemyError

from paygrid.ops.observability import (
    CHANNEL_BREAKER,
    CHANNEL_CALL_LATENCY,
    CHANNEL_CALLS,
    ROUTING_DECISIONS,
    ROUTING_FAILOVERS,
    ROUTING_VERSION,
)
from paygrid.routing import store
from paygrid.routing.decide import Eligibility, RouteDecision, Router
from paygrid.routing.health import BreakerChange, BreakerState, HealthBoard
from paygrid.routing.rules import RouteRequest
from paygrid.storage.database import Database, DatabaseUnavailable

log = logging.getLogger(__name__)
RELOAD_INTERVAL_S = 1.0  # how stale a process's routing may be after a change
_BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class RoutingService:
    def __init__(
        self,
        db: Database,
        default_rates: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._clock = clock
        self._default_rates = dict(default_rates or {})  # contracted rates (settings), ppm
        self._lock = threading.Lock()
        self.health = HealthBoard()
        self.router = Router(store.EMPTY, self.health)
        self._checked = float("-inf")
        self.refresh(force=True)

    @property
    def version(self) -> int:
        return self.router.config.version

    def refresh(self, force: bool = False) -> None:
        """Take a newer configuration version if there is one (cheap: one max() query)."""
        now = self._clock()
        if not force and now - self._checked < RELOAD_INTERVAL_S:
            return
        self._checked = now
        try:
            newest = store.current_version(self._db)
            if newest == self.version:
                return
            config = store.in_force(self._db)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("routing: cannot read its configuration (%s); keeping version %s",
                        type(exc).__name__, self.version)  # fmt: skip
            return
        config = replace(config, rates_ppm={**self._default_rates, **config.rates_ppm})
        with self._lock:
            if config.version > self.version:
                self.router.use(config)
                ROUTING_VERSION.set(config.version)
                log.info("routing: version %s in force", config.version)

    def configured(self) -> bool:
        self.refresh()
        return bool(self.router.config.rules)

    def decide(
        self,
        req: RouteRequest,
        ineligible: Eligibility | None = None,
        exclude: Mapping[str, str] | None = None,
    ) -> RouteDecision:
        self.refresh()
        with self._lock:  # the half-open probe bookkeeping is shared by request threads
            decision = self.router.decide(req, self._clock(), ineligible, exclude)
            moves = self.health.drain_moves()
        for move in moves:
            _report(move)
        ROUTING_DECISIONS.labels(decision.channel or "none", req.bank or "*").inc()
        if exclude and decision.channel is not None:
            for tried in exclude:
                ROUTING_FAILOVERS.labels(tried, decision.channel).inc()
        return decision

    def record_call(
        self, channel: str, bank: str | None, ok: bool, seconds: float, code: str | None
    ) -> None:
        """One channel order call's outcome, for health, the breaker and /metrics."""
        label = bank or "*"
        CHANNEL_CALLS.labels(channel, label, "ok" if ok else "error").inc()
        CHANNEL_CALL_LATENCY.labels(channel, label).observe(seconds)
        with self._lock:
            changes = self.health.record(
                channel, bank, ok, int(seconds * 1000), code, self._clock()
            )
        for change in changes:
            _report(change)


def _report(change: BreakerChange) -> None:
    CHANNEL_BREAKER.labels(change.channel, change.bank).set(_BREAKER_GAUGE[change.after])
    log.warning(
        "routing: breaker %s/%s %s -> %s: %s",
        change.channel,
        change.bank,
        change.before,
        change.after,
        change.reason,
    )
