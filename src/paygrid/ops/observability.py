"""Per-process operations surface: JSON logs, /healthz, /readyz, Prometheus /metrics.

Metrics are served only on an operations port (``ops_app``), never on a public one."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from paygrid.kernel import context
from paygrid.ops.http_limits import BodyLimit

request_id_var = context.request_id
_PAYMENT_ID = re.compile(r"\bpay_[0-9A-Z]{26}\b")

HTTP_REQUESTS = Counter(
    "paygrid_http_requests_total", "HTTP requests served", ["app", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "paygrid_http_request_seconds",
    "HTTP request latency",
    ["app", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_UNPUBLISHED = Gauge("paygrid_outbox_unpublished", "Events waiting in the outbox")
OUTBOX_OLDEST_AGE = Gauge(
    "paygrid_outbox_oldest_age_seconds", "Age of the oldest unpublished event (outbox lag)"
)
OUTBOX_DEAD = Gauge("paygrid_outbox_dead", "Events the relay dead-lettered")
CONSUMER_LAG = Gauge(
    "paygrid_consumer_lag", "Messages a consumer has not acknowledged", ["consumer"]
)
REDELIVERIES = Gauge("paygrid_bus_redeliveries", "Redeliveries seen by a consumer", ["consumer"])
DEAD_LETTERS = Gauge(
    "paygrid_bus_dead_letters", "Messages parked on the dead-letter subject", ["consumer"]
)
BUS_UP = Gauge("paygrid_bus_available", "1 when this process can reach the bus")
RECON_DIFFERENCES = Gauge(
    "paygrid_recon_differences",
    "Differences found by each channel's last recon run of its latest reconciled date",
    ["channel", "kind"],
)
RECON_OPEN_CASES = Gauge("paygrid_recon_open_cases", "差错 cases still open", ["channel", "kind"])
RECON_RUNS = Counter("paygrid_recon_runs_total", "Recon runs this process made", ["channel"])
RECON_FETCHED = Counter("paygrid_recon_bills_fetched_total", "Bills the recon job took in")
ROUTING_DECISIONS = Counter(
    "paygrid_routing_decisions_total",
    "Routing decisions by chosen channel (none: no channel could take it) and payer bank "
    "(*: none given): a channel's traffic share",
    ["channel", "bank"],
)
ROUTING_FAILOVERS = Counter(
    "paygrid_routing_failovers_total",
    "Payments moved to the next channel after their order was never accepted",
    ["from_channel", "to_channel"],
)
ROUTING_VERSION = Gauge("paygrid_routing_config_version", "Routing configuration in force here")
CHANNEL_CALLS = Counter(
    "paygrid_channel_calls_total",
    "Channel order calls by outcome (ok, error): a channel's success rate per bank",
    ["channel", "bank", "outcome"],
)
CHANNEL_CALL_LATENCY = Histogram(
    "paygrid_channel_call_seconds",
    "Latency of channel order calls, per channel and payer bank",
    ["channel", "bank"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHANNEL_BREAKER = Gauge(
    "paygrid_channel_breaker_state",
    "Circuit breaker per channel and bank: 0 closed, 1 half open, 2 open",
    ["channel", "bank"],
)
RECON_FAILED = Counter(
    "paygrid_recon_run_failures_total", "Recon runs that raised (logged, run again)", ["channel"]
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the role, the request id and any payment id."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        body: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": self._role,
            "logger": record.name,
            "msg": message,
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            body["request_id"] = request_id
        payment_id = getattr(record, "payment_id", None)
        found = _PAYMENT_ID.search(message)
        if payment_id or found:
            body["payment_id"] = payment_id or (found.group(0) if found else None)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def json_logging(role: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "alembic", "uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


Check = Callable[[], bool]


def add_health_routes(app: FastAPI, checks: Mapping[str, Check]) -> None:
    """/healthz: the process answers. /readyz: every dependency check passes (else 503).
    Public ports (API, cashier, gateway) serve these two only."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        ready = all(results.values())
        return Response(
            json.dumps({"status": "ready" if ready else "not_ready", "checks": results}),
            status_code=200 if ready else 503,
            media_type="application/json",
        )


def add_ops_routes(app: FastAPI, checks: Mapping[str, Check]) -> None:
    """The health routes and /metrics (Prometheus text format), for an operations port."""
    add_health_routes(app, checks)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def observe_request(app_name: str, method: str, route: str, status: int, started: float) -> None:
    HTTP_REQUESTS.labels(app_name, method, route, str(status)).inc()
    HTTP_LATENCY.labels(app_name, route).observe(time.perf_counter() - started)


def ops_app(checks: Mapping[str, Check]) -> FastAPI:
    """A process's operations port: /healthz, /readyz, /metrics (loopback by default)."""
    app = FastAPI(title="paygrid ops", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit)
    add_ops_routes(app, checks)
    return app
