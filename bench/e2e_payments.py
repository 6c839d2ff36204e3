"""End-to-end payments through a real `paygrid up`, beside a bare FastAPI + one-INSERT baseline.

    .venv/bin/python bench/e2e_payments.py [--payments N] [--concurrency C]
                                           [--profile embedded|prod] [--database sqlite|postgres]

Profiles: ``embedded`` (default) is `paygrid up`, one process, on SQLite or on a PostgreSQL from
tests.support; ``prod`` is `paygrid up --profile prod` (tests.support.start_prod_platform): one
process per role, PostgreSQL and NATS JetStream started and supervised by paygrid, so the
database is PostgreSQL (paygrid's own, default config) and the baseline gets a database on that
same server. The prod profile's processes come from DATA_DIR/status.json: the supervisor and the
roles are summed as "paygrid" and listed one by one; PostgreSQL, NATS and the sandbox apart.

What one payment is here: a signed POST /v1/payments (channel=wechatpay, method=native, so paygrid
places a real, RSA-signed order at the WeChat Pay sandbox before answering), then the payer pays at
the sandbox (POST /sandbox/pay), the sandbox sends its signed, encrypted callback to paygrid, the
outbox relay publishes payment.succeeded, the ledger books it, and the notifier POSTs a signed
notification to the merchant's notify_url, which this script serves and counts.

Load: C worker processes (multiprocessing, spawn), each a closed loop with one request in flight
on its own synchronous httpx client (an async httpx client tops out near 350 req/s on these
machines and would measure itself; see /work/shared/PERFORMANCE-NOTES.md). The load generator
shares the machine's cores with the servers: on 2 cores it takes a real part of the CPU, for the
baseline and for paygrid alike.

Baseline, same run: a bare FastAPI app with one POST endpoint inserting one row (SQLAlchemy Core,
engine from paygrid.storage.database.make_engine, SQLite WAL file in the temp dir or a database on
the same PostgreSQL server), served by paygrid.platform.embedded._server (the uvicorn settings
paygrid uses: one worker, uvloop, http=auto) and driven by the same client processes.

Where the time goes, from the same run: CPU seconds per payment (and per baseline request) of
each process (paygrid, the sandbox, PostgreSQL, the load generator; read from /proc), the backlog
in each stage when the last create+pay returned, and per-stage lags after the pay (sandbox
callback, outbox relay, notifier) from the platform's own timestamps. ``--py-spy EXE`` also
samples paygrid and the sandbox (GIL-holding samples only, raw collapsed stacks) into
bench/results/.

Figures go to stdout and bench/results/e2e_payments-<database|prod>.json. Afterwards the script runs
`paygrid check --grace-seconds 0` on the platform's data and says whether the money invariants hold.
The exit code is 1 if they do not, or if some payment was not notified within --timeout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform as host
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import uvloop
from fastapi import FastAPI, Request, Response  # at module level: FastAPI resolves annotations

from paygrid.api.client import MerchantClient, verify_notification

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support, imported where used

if TYPE_CHECKING:
    from tests.support import PostgresServer, RunningPlatform

RESULTS_DIR = ROOT / "bench" / "results"
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
MAX_ERRORS_KEPT = 5


class Sample(NamedTuple):
    ref: str  # payment_id, or the baseline's row id
    start: float  # time.monotonic() when the create (or insert) request was sent
    create_s: float
    pay_s: float  # 0 for the baseline
    start_wall: float  # time.time() at ``start``, to line up with the platform's timestamps


# --- load generator (runs in each worker process) ----------------------------------------------
@dataclass(frozen=True, slots=True)
class Job:
    mode: str  # "paygrid" or "baseline"
    index: int
    count: int
    api_url: str
    sandbox_url: str = ""
    notify_url: str = ""
    creds: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    deadline_s: float = 60.0  # stop issuing requests this long after the start signal


@dataclass(slots=True)
class WorkerResult:
    index: int
    started: float = 0.0
    finished: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    cpu_s: float = 0.0  # this load process's CPU time while it ran the loop
    error_count: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text[:300])


def payment_body(out_trade_no: str, notify_url: str) -> dict[str, Any]:
    return {
        "out_trade_no": out_trade_no,
        "amount": {"total": 10000, "currency": "CNY"},
        "description": "两斤苹果 apples",
        "notify_url": notify_url,
        "channel": "wechatpay",
        "method": "native",
        "items": [{"sku": "APL", "name": "苹果", "quantity": 2, "unit_amount": 5500}],
        "discounts": [{"name": "满减 coupon", "amount": 1000}],
    }


def worker(job: Job, barrier: Barrier, results: Queue[WorkerResult]) -> None:
    out = WorkerResult(job.index)
    try:
        with (
            httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as api,
            httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as sandbox,
        ):
            api.get(job.api_url + "/healthz").raise_for_status()  # open the keep-alive connection
            if job.mode == "paygrid":
                sandbox.get(job.sandbox_url + "/sandbox/health").raise_for_status()
            barrier.wait(START_TIMEOUT_S)
            out.started = time.monotonic()
            cpu0 = time.process_time()
            stop_at = out.started + job.deadline_s
            if job.mode == "paygrid":
                _drive_paygrid(job, api, sandbox, out, stop_at)
            else:
                _drive_baseline(job, api, out, stop_at)
            out.cpu_s = time.process_time() - cpu0
    except Exception as exc:
        out.error(f"worker {job.index}: {type(exc).__name__}: {exc}")
    finally:
        out.finished = time.monotonic()
        results.put(out)


def _drive_paygrid(
    job: Job, api: httpx.Client, sandbox: httpx.Client, out: WorkerResult, stop_at: float
) -> None:
    c = job.creds
    client = MerchantClient(job.api_url, c["mchid"], c["key_id"], c["secret"], http=api)
    for i in range(job.count):
        if time.monotonic() > stop_at:
            out.error(f"deadline reached after {i} of {job.count} payments")
            return
        body = payment_body(f"b{job.run_id}-{job.index}-{i}", job.notify_url)
        t0, wall = time.monotonic(), time.time()
        try:
            created = client.create_payment(body)
            t1 = time.monotonic()
            if created.status_code != 201:
                out.error(f"create {created.status_code}: {created.text}")
                continue
            payment = created.json()
            paid = sandbox.post(
                job.sandbox_url + "/sandbox/pay",
                json={"code_url": payment["code_url"], "outcome": "SUCCESS"},
            )
            t2 = time.monotonic()
        except httpx.HTTPError as exc:
            out.error(f"{type(exc).__name__}: {exc}")
            continue
        if paid.status_code != 200:
            out.error(f"pay {paid.status_code}: {paid.text}")
            continue
        out.samples.append(Sample(payment["payment_id"], t0, t1 - t0, t2 - t1, wall))


def _drive_baseline(job: Job, api: httpx.Client, out: WorkerResult, stop_at: float) -> None:
    url = job.api_url + "/rows"
    for i in range(job.count):
        if time.monotonic() > stop_at:
            out.error(f"deadline reached after {i} of {job.count} requests")
            return
        body = json.dumps(
            {
                "out_trade_no": f"b{job.run_id}-{job.index}-{i}",
                "amount": 10000,
                "description": "两斤苹果 apples",
            },
            ensure_ascii=False,
        ).encode()
        t0, wall = time.monotonic(), time.time()
        try:
            response = api.post(url, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            out.error(f"{type(exc).__name__}: {exc}")
            continue
        t1 = time.monotonic()
        if response.status_code != 201:
            out.error(f"insert {response.status_code}: {response.text}")
            continue
        out.samples.append(Sample(str(response.json()["id"]), t0, t1 - t0, 0.0, wall))


@dataclass(slots=True)
class LoadRun:
    t0: float
    results: list[WorkerResult]

    @property
    def samples(self) -> list[Sample]:
        return [s for r in self.results for s in r.samples]

    @property
    def error_count(self) -> int:
        return sum(r.error_count for r in self.results)

    @property
    def errors(self) -> list[str]:
        return [e for r in self.results for e in r.errors][:MAX_ERRORS_KEPT]

    @property
    def t_end(self) -> float:
        return max((r.finished for r in self.results), default=self.t0)


def run_load(mode: str, total: int, concurrency: int, deadline_s: float, **job: Any) -> LoadRun:
    """Start ``concurrency`` processes, release them together, gather what they measured."""
    ctx = mp.get_context("spawn")  # the parent has threads (receiver): do not fork it
    barrier = ctx.Barrier(concurrency + 1)
    results: Queue[WorkerResult] = ctx.Queue()
    counts = [
        total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)
    ]
    procs = [
        ctx.Process(
            target=worker,
            args=(Job(mode, i, counts[i], deadline_s=deadline_s, **job), barrier, results),
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(START_TIMEOUT_S)
    except Exception:
        barrier.abort()
    t0 = time.monotonic()
    gathered: list[WorkerResult] = []
    give_up = t0 + deadline_s + 2 * REQUEST_TIMEOUT_S + START_TIMEOUT_S
    while len(gathered) < concurrency and time.monotonic() < give_up:
        try:
            gathered.append(results.get(timeout=0.5))
        except Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
    missing = concurrency - len(gathered)
    if missing:
        lost = WorkerResult(-1)
        lost.error(f"{missing} worker process(es) reported nothing")
        gathered.append(lost)
    return LoadRun(t0, gathered)


# --- figures -----------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- baseline server (runs in its own process) ------------------------------------------------
def serve_baseline(database_url: str, port: int) -> None:
    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert
    from starlette.concurrency import run_in_threadpool

    from paygrid.kernel.clock import utcnow
    from paygrid.platform.embedded import (
        _server,
    )  # exactly the uvicorn.Config paygrid's API runs with
    from paygrid.storage.database import make_engine

    engine = make_engine(database_url)
    metadata = MetaData()
    rows = Table(
        "bench_rows",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("out_trade_no", String(64), nullable=False, unique=True),
        Column("amount", Integer, nullable=False),
        Column("body", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    metadata.create_all(engine)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/rows", status_code=201)
    async def add(request: Request) -> Response:
        body = await request.body()
        data = json.loads(body)

        def write() -> int:
            with engine.begin() as conn:
                result = conn.execute(
                    insert(rows).values(
                        out_trade_no=data["out_trade_no"],
                        amount=data["amount"],
                        body=body.decode(),
                        created_at=utcnow(),
                    )
                )
                key = result.inserted_primary_key
                assert key is not None
                return int(key[0])

        row_id = await run_in_threadpool(write)
        return Response(json.dumps({"id": row_id}), status_code=201, media_type="application/json")

    uvloop.run(_server(app, "127.0.0.1", port).serve())


# --- the merchant's notify_url ----------------------------------------------------------------
class NotifyReceiver:
    """Answers 200 to every notification; records when each Paygrid-Notify-Id first arrived,
    for which payment, and whether its signature verified."""

    def __init__(self, secret: str) -> None:
        self.lock = threading.Lock()
        self.first_seen: set[str] = set()  # notify ids
        self.notified: dict[str, tuple[float, float]] = {}  # payment id -> (monotonic, wall)
        self.posts = 0
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real merchant server would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = (time.monotonic(), time.time())
                signed = verify_notification(secret, dict(self.headers.items()), body)
                notify_id = self.headers.get("Paygrid-Notify-Id", "")
                try:
                    payment_id = str(json.loads(body)["data"]["payment_id"])
                except (ValueError, KeyError, TypeError):
                    payment_id = ""
                with outer.lock:
                    outer.posts += 1
                    if not signed:
                        outer.bad_signatures += 1
                    elif notify_id not in outer.first_seen:
                        outer.first_seen.add(notify_id)
                        outer.notified.setdefault(payment_id, now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, payment_ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if payment_ids <= self.notified.keys():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- CPU accounting (Linux /proc) --------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")
CpuProbe = Callable[[], float]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (index 0 = field 3), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int, reaped: bool = False) -> float:
    """CPU seconds of one process (all its threads); with ``reaped``, plus its waited-for
    children's."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    """A process, its live descendants and the children it already reaped."""
    return process_cpu(pid, reaped=True) + sum(tree_cpu(c) for c in children(pid))


def postgres_probe(pg: PostgresServer | None) -> dict[str, CpuProbe]:
    if pg is None:
        return {}
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    return {"postgres": lambda: tree_cpu(postmaster)}


def prod_pids(running: RunningPlatform) -> dict[str, int]:
    """The production profile's processes by name, from the supervisor's status.json, plus
    the supervisor itself."""
    body = json.loads((running.data_dir / "status.json").read_text())
    pids = {"supervisor": running.proc.pid}
    pids.update({str(p["name"]): int(p["pid"]) for p in body["processes"] if p.get("pid")})
    return pids


def prod_restarts(running: RunningPlatform) -> dict[str, int]:
    """Processes the supervisor restarted (a figure is suspect if any did)."""
    body = json.loads((running.data_dir / "status.json").read_text())
    return {str(p["name"]): int(p["restarts"]) for p in body["processes"] if p.get("restarts")}


def is_paygrid(name: str) -> bool:
    """Of the prod profile's processes, paygrid's own (supervisor and roles), not the
    infrastructure it supervises (PostgreSQL, NATS, the channel sandboxes)."""
    return name not in ("postgres", "nats") and not name.startswith("sandbox")


def prod_probes(pids: dict[str, int]) -> tuple[dict[str, CpuProbe], dict[str, CpuProbe]]:
    """Totals (paygrid = supervisor + every role; sandbox, postgres, nats) and one probe per
    paygrid process. PostgreSQL and the sandbox count with their descendants."""
    mine = {name: pid for name, pid in pids.items() if is_paygrid(name)}
    sandboxes = [pid for name, pid in pids.items() if name.startswith("sandbox")]
    totals: dict[str, CpuProbe] = {
        "paygrid": lambda: sum(process_cpu(pid) for pid in mine.values()),
        "sandbox": lambda: sum(tree_cpu(pid) for pid in sandboxes),
    }
    if "postgres" in pids:
        totals["postgres"] = partial(tree_cpu, pids["postgres"])
    if "nats" in pids:
        totals["nats"] = partial(process_cpu, pids["nats"])
    each: dict[str, CpuProbe] = {name: partial(process_cpu, pid) for name, pid in mine.items()}
    return totals, each


def settle(probe: CpuProbe, idle_cores: float = 0.15, timeout: float = 20.0) -> float:
    """Wait until the processes behind ``probe`` are near idle (a freshly started prod profile
    is still importing, binding consumers, warming pools); return the last 1 s reading."""
    deadline = time.monotonic() + timeout
    busy = float("inf")
    while busy > idle_cores and time.monotonic() < deadline:
        before = probe()
        time.sleep(1.0)
        busy = probe() - before
    return busy


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None  # field 22: starttime


@contextmanager
def cpu_meter(probes: dict[str, CpuProbe]) -> Iterator[dict[str, float]]:
    """Yields a dict filled, on exit, with the CPU seconds each probe's processes used."""
    used: dict[str, float] = {}
    before = {name: probe() for name, probe in probes.items()}
    parent0 = time.process_time()
    try:
        yield used
    finally:
        for name, probe in probes.items():
            used[name] = probe() - before[name]
        used["bench parent (receiver)"] = time.process_time() - parent0


def per_unit_ms(used: dict[str, float], load: LoadRun, units: int) -> dict[str, float]:
    out = {name: round(seconds * 1000 / max(units, 1), 3) for name, seconds in used.items()}
    out["load generator"] = round(sum(r.cpu_s for r in load.results) * 1000 / max(units, 1), 3)
    return out


def cores_busy(used: dict[str, float], load: LoadRun, elapsed: float) -> dict[str, float]:
    """Average CPU cores each party kept busy over the measured interval."""
    cpu = {**used, "load generator": sum(r.cpu_s for r in load.results)}
    return {
        name: round(seconds / elapsed, 2) if elapsed > 0 else 0.0 for name, seconds in cpu.items()
    }


# --- the phases --------------------------------------------------------------------------------
def run_baseline(
    database_url: str, args: argparse.Namespace, run_id: str, infra: dict[str, CpuProbe]
) -> dict[str, Any]:
    from tests.support import free_port, wait_http

    port = free_port()
    proc = mp.get_context("spawn").Process(target=serve_baseline, args=(database_url, port))
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=START_TIMEOUT_S)
        assert proc.pid is not None
        server_pid = proc.pid
        probes = {"baseline server": lambda: tree_cpu(server_pid), **infra}
        with cpu_meter(probes) as used:
            load = run_load(
                "baseline",
                args.baseline_requests,
                args.concurrency,
                args.timeout,
                api_url=url,
                run_id=run_id,
            )
    finally:
        proc.terminate()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    latencies = [s.create_s for s in load.samples]
    elapsed = load.t_end - load.t0
    return {
        "requests": args.baseline_requests,
        "ok": len(latencies),
        "errors": load.error_count,
        "error_examples": load.errors,
        "elapsed_s": round(elapsed, 3),
        "req_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "cpu_ms_per_request": per_unit_ms(used, load, len(latencies)),
        "cpu_cores_busy": cores_busy(used, load, elapsed),
    }


def db_counts(running: RunningPlatform) -> dict[str, int]:
    from sqlalchemy import text

    queries = {
        "outbox_unpublished": "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND NOT dead",
        "notifications_undelivered": "SELECT COUNT(*) FROM notifications "
        "WHERE status <> 'DELIVERED'",
        "payments_success": "SELECT COUNT(*) FROM payments WHERE status = 'SUCCESS'",
        "payments_paying": "SELECT COUNT(*) FROM payments WHERE status = 'PAYING'",
        "capture_vouchers": "SELECT COUNT(*) FROM ledger_vouchers WHERE kind = 'capture'",
        "channel_callbacks": "SELECT COUNT(*) FROM channel_callbacks",
        "notification_attempts": "SELECT COUNT(*) FROM notification_attempts",
    }
    db = running.database()
    try:
        with db.transaction() as conn:
            return {k: int(conn.execute(text(q)).scalar_one()) for k, q in queries.items()}
    finally:
        db.dispose()


def wait_drained(running: RunningPlatform, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts = db_counts(running)
    while time.monotonic() < deadline:
        if counts["outbox_unpublished"] == 0 and counts["notifications_undelivered"] == 0:
            break
        time.sleep(0.2)
        counts = db_counts(running)
    return counts


def stage_lags(
    running: RunningPlatform, samples: list[Sample], notified: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Where a payment waits after the payer paid, from the platform's own timestamps (UTC wall
    clock, same machine): the sandbox's callback, the outbox relay, the notifier."""
    from sqlalchemy import select

    from paygrid.storage.schema import channel_callbacks, notifications, outbox

    paid = {s.ref: s.start_wall + s.create_s + s.pay_s for s in samples}
    db = running.database()
    try:
        with db.transaction() as conn:
            callback = {
                r.payment_id: r.received_at.timestamp()
                for r in conn.execute(
                    select(channel_callbacks.c.payment_id, channel_callbacks.c.received_at)
                )
            }
            published = {
                r.aggregate_id: (r.created_at.timestamp(), r.published_at.timestamp())
                for r in conn.execute(
                    select(outbox.c.aggregate_id, outbox.c.created_at, outbox.c.published_at).where(
                        outbox.c.event_type == "payment.succeeded",
                        outbox.c.published_at.is_not(None),
                    )
                )
            }
            delivered = {
                r.resource_id: (r.created_at.timestamp(), r.delivered_at.timestamp())
                for r in conn.execute(
                    select(
                        notifications.c.resource_id,
                        notifications.c.created_at,
                        notifications.c.delivered_at,
                    ).where(
                        notifications.c.event_type == "payment.succeeded",
                        notifications.c.delivered_at.is_not(None),
                    )
                )
            }
    finally:
        db.dispose()
    stages = {
        "pay -> callback applied": [callback[p] - paid[p] for p in paid if p in callback],
        "event -> published (relay)": [b - a for a, b in published.values()],
        "notification -> delivered": [b - a for a, b in delivered.values()],
        "pay -> merchant notified": [notified[p][1] - paid[p] for p in paid if p in notified],
    }
    return {
        name: {"p50_ms": ms(percentile(v, 50)), "p99_ms": ms(percentile(v, 99)), "n": len(v)}
        for name, v in stages.items()
    }


def statuses_over_http(running: RunningPlatform, payment_ids: list[str]) -> dict[str, int]:
    """GET /v1/payments/{id} for every payment; how many of each status."""
    seen: dict[str, int] = {}
    client = running.client()

    def status(pid: str) -> str:
        response = client.get_payment(pid)
        if response.status_code != 200:
            return f"HTTP_{response.status_code}"
        return str(response.json().get("status"))

    with ThreadPoolExecutor(4) as pool:
        for s in pool.map(status, payment_ids):
            seen[s] = seen.get(s, 0) + 1
    client.http.close()
    return seen


@contextmanager
def py_spy(exe: str | None, pid: int, out: Path) -> Iterator[None]:
    """Optionally sample paygrid's process and the sandbox while the load runs."""
    if not exe:
        yield
        return
    proc = subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "200",
            "--subprocesses",
            "--gil",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_paygrid(
    running: RunningPlatform,
    probes: dict[str, CpuProbe],
    by_process: dict[str, CpuProbe],
    args: argparse.Namespace,
    run_id: str,
) -> dict[str, Any]:
    """Drive the running platform; ``probes`` are the CPU totals reported, ``by_process`` the
    paygrid processes listed one by one (prod profile)."""
    receiver = NotifyReceiver(running.credentials["secret"])
    try:
        spy_out = RESULTS_DIR / f"e2e_payments-{result_name(args)}-pyspy.txt"
        with (
            py_spy(args.py_spy, running.proc.pid, spy_out),
            cpu_meter(probes) as used,
            cpu_meter(by_process) as used_each,
        ):
            load = run_load(
                "paygrid",
                args.payments,
                args.concurrency,
                args.timeout,
                api_url=running.api_url,
                sandbox_url=running.sandbox_url,
                notify_url=receiver.url,
                creds=running.credentials,
                run_id=run_id,
            )
            backlog = db_counts(running)  # where payments wait when the last create+pay returned
            expected = {s.ref for s in load.samples}
            drain_budget = max(5.0, args.timeout - (load.t_end - load.t0))
            complete = receiver.wait_for(expected, drain_budget)
        with receiver.lock:
            notified = {p: receiver.notified[p] for p in expected if p in receiver.notified}
            posts, bad, distinct = receiver.posts, receiver.bad_signatures, len(receiver.first_seen)
        t_done = max((t for t, _ in notified.values()), default=load.t_end)
        elapsed = t_done - load.t0
        load_elapsed = load.t_end - load.t0
        starts = {s.ref: s.start for s in load.samples}
        e2e = [notified[p][0] - starts[p] for p in notified]
        creates = [s.create_s for s in load.samples]
        pays = [s.pay_s for s in load.samples]
        counts = wait_drained(running, 30.0)
        stages = stage_lags(running, load.samples, notified)
        statuses = statuses_over_http(running, sorted(expected))
        check = running.paygrid("check", "--grace-seconds", "0")
        return {
            "payments": args.payments,
            "created_and_paid": len(load.samples),
            "client_errors": load.error_count,
            "error_examples": load.errors,
            "notified": len(notified),
            "all_notified_within_timeout": complete,
            "notification_posts": posts,
            "distinct_notify_ids": distinct,
            "bad_signatures": bad,
            "load_phase_s": round(load_elapsed, 3),
            "elapsed_s": round(elapsed, 3),
            "payments_per_s": round(len(notified) / elapsed, 1) if elapsed > 0 else 0.0,
            "create_and_pay_per_s_during_load": round(len(creates) / load_elapsed, 1)
            if load_elapsed > 0
            else 0.0,
            "create_p50_ms": ms(percentile(creates, 50)),
            "create_p99_ms": ms(percentile(creates, 99)),
            "pay_p50_ms": ms(percentile(pays, 50)),
            "pay_p99_ms": ms(percentile(pays, 99)),
            "e2e_p50_ms": ms(percentile(e2e, 50)),
            "e2e_p99_ms": ms(percentile(e2e, 99)),
            "stages": stages,
            "cpu_ms_per_payment": per_unit_ms(used, load, len(notified)),
            "paygrid_cpu_ms_per_payment_by_process": {
                name: round(seconds * 1000 / max(len(notified), 1), 3)
                for name, seconds in sorted(used_each.items(), key=lambda kv: -kv[1])
                if name in by_process
            },
            "cpu_cores_busy": cores_busy(used, load, elapsed),
            "backlog_at_load_end": {
                k: backlog[k]
                for k in ("payments_paying", "outbox_unpublished", "notifications_undelivered")
            },
            "statuses_over_http": statuses,
            "db_after_drain": counts,
            "check_exit_code": check.returncode,
            "check_output": (check.stdout + check.stderr).strip()[-2000:],
            "pyspy_raw": str(spy_out) if args.py_spy else None,
        }
    finally:
        receiver.close()


# --- report ------------------------------------------------------------------------------------
def _cpu_line(per_unit: dict[str, float]) -> str:
    total = sum(per_unit.values())
    parts = ", ".join(f"{name} {value:.2f}" for name, value in per_unit.items())
    return f"{total:.2f} ms  ({parts})"


def _cores_line(cores: dict[str, float], cpus: int) -> str:
    parts = ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    return f"{sum(cores.values()):.2f} of {cpus}  ({parts})"


def _profile_line(cfg: dict[str, Any]) -> str:
    if cfg.get("profile") != "prod":
        return "embedded (`paygrid up`: API, cashier, relay, ledger, notifier in one process)"
    names = ", ".join(n for n in cfg.get("processes") or {} if is_paygrid(n))
    return f"prod (`paygrid up --profile prod`; paygrid = {names})"


def report(result: dict[str, Any]) -> str:
    p, b, cfg = result["paygrid"], result["baseline"], result["config"]
    each = p.get("paygrid_cpu_ms_per_payment_by_process") or {}
    top = ", ".join(f"{name} {v:.2f}" for name, v in list(each.items())[:6])
    rows: list[tuple[str, str]] = [
        ("profile", _profile_line(cfg)),
        ("database", cfg["database"] + (f" ({cfg['postgres']})" if cfg["postgres"] else "")),
        ("load generator", cfg["load_generator"]),
        ("server stack", cfg["server_stack"]),
        ("", ""),
        (
            "PAYGRID",
            "signed create (+ RSA-signed order at the sandbox) -> sandbox pay -> "
            "callback -> ledger -> merchant notification",
        ),
        (
            "payments",
            f"{p['notified']} of {p['payments']} notified"
            f"{'' if p['all_notified_within_timeout'] else ' (TIMED OUT)'}, "
            f"{p['client_errors']} client errors",
        ),
        (
            "payments/s",
            f"{p['payments_per_s']}  (N / time to the last notification, "
            f"{p['elapsed_s']} s; creates+pays took {p['load_phase_s']} s)",
        ),
        ("create p50 / p99", f"{p['create_p50_ms']} / {p['create_p99_ms']} ms"),
        ("sandbox pay p50 / p99", f"{p['pay_p50_ms']} / {p['pay_p99_ms']} ms"),
        ("create -> notified p50 / p99", f"{p['e2e_p50_ms']} / {p['e2e_p99_ms']} ms"),
        *[(f"  {name}", f"{v['p50_ms']} / {v['p99_ms']} ms") for name, v in p["stages"].items()],
        ("CPU per payment", _cpu_line(p["cpu_ms_per_payment"])),
        *([("  paygrid by process (ms)", top)] if top else []),
        ("CPU cores busy", _cores_line(p["cpu_cores_busy"], cfg["cpus"])),
        ("backlog when load ended", json.dumps(p["backlog_at_load_end"])),
        *(
            [("RESTARTS during run", json.dumps(p["restarts_during_run"]))]
            if p.get("restarts_during_run")
            else []
        ),
        ("", ""),
        ("BASELINE", "bare FastAPI POST, one-row INSERT + COMMIT, same engine and uvicorn setup"),
        ("requests", f"{b['ok']} of {b['requests']} ok, {b['errors']} errors"),
        ("req/s", f"{b['req_per_s']}  ({b['elapsed_s']} s)"),
        ("p50 / p99", f"{b['p50_ms']} / {b['p99_ms']} ms"),
        ("CPU per request", _cpu_line(b["cpu_ms_per_request"])),
        ("CPU cores busy", _cores_line(b["cpu_cores_busy"], cfg["cpus"])),
        ("", ""),
        ("payments/s / baseline req/s", f"{result['ratio_throughput']}"),
        ("create p50 / baseline p50", f"{result['ratio_p50']}"),
        ("", ""),
        ("statuses over HTTP", json.dumps(p["statuses_over_http"])),
        (
            "notifications received",
            f"{p['distinct_notify_ids']} distinct ids, "
            f"{p['notification_posts']} POSTs, {p['bad_signatures']} bad signatures",
        ),
        ("db after drain", json.dumps(p["db_after_drain"])),
        (
            "paygrid check",
            "money invariants HOLD"
            if p["check_exit_code"] == 0
            else f"VIOLATIONS (exit {p['check_exit_code']})",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" if k else "" for k, v in rows]
    if p["check_exit_code"] != 0:
        lines.append(p["check_output"])
    for label, errs in (("paygrid", p["error_examples"]), ("baseline", b["error_examples"])):
        lines += [f"{label} error: {e}" for e in errs]
    return "\n".join(lines)


def _ratio(a: float, b: float, digits: int) -> float | None:
    return round(a / b, digits) if b and a == a and b == b else None  # x == x: not NaN


def pg_version() -> str:
    from tests.support import pg_bin

    bindir = pg_bin()
    return bindir.parent.name if bindir else "?"


def result_name(args: argparse.Namespace) -> str:
    return "prod" if args.profile == "prod" else str(args.database)


def create_database(url: str, name: str) -> str:
    """A fresh database on the PostgreSQL server ``url`` points at."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)


@contextmanager
def prod_platform(data_dir: Path) -> Iterator[RunningPlatform]:
    """`paygrid up --profile prod`; on the way out, stop the supervisor and then end, by pid,
    any of its processes it left running (only if the pid still names the same process)."""
    from tests.support import start_prod_platform

    running = start_prod_platform(data_dir)
    try:
        yield running
    finally:
        try:
            pids = prod_pids(running)
        except (OSError, ValueError):
            pids = {}
        started = {pid: start_time(pid) for pid in pids.values()}
        running.stop()
        for pid, when in started.items():
            if when is not None and start_time(pid) == when:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--payments", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--profile",
        choices=("embedded", "prod"),
        default="embedded",
        help="embedded: `paygrid up` (one process); prod: `paygrid up --profile prod` (one "
        "process per role; PostgreSQL and NATS started by paygrid)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default=None,
        help="embedded profile: sqlite (default) or postgres; the prod profile is postgres",
    )
    parser.add_argument("--baseline-requests", type=int, default=3000)
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="bound on each load phase and on the notification drain (s)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="EXE",
        default=None,
        help="py-spy binary: sample paygrid and the sandbox during the payments phase",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.concurrency < 1 or args.payments < 1 or args.baseline_requests < 1:
        parser.error("--payments, --concurrency and --baseline-requests must be positive")
    if args.profile == "prod" and args.database == "sqlite":
        parser.error("the prod profile runs on the PostgreSQL it starts: drop --database sqlite")
    args.database = "postgres" if args.profile == "prod" else args.database or "sqlite"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="paygrid-bench-"))
    run_id = uuid.uuid4().hex[:8]
    by_process: dict[str, CpuProbe] = {}
    prod_processes: dict[str, int] = {}
    try:
        with ExitStack() as stack:
            if args.profile == "prod":
                # The supervisor runs PostgreSQL as the postgres user, which must reach
                # DATA_DIR/postgres; else it falls back to /var/lib/paygrid/<hash>.
                tmp.chmod(0o755)
                print("paygrid up --profile prod ...", flush=True)
                running = stack.enter_context(prod_platform(tmp / "platform"))
                assert running.database_url is not None
                prod_processes = prod_pids(running)
                probes, by_process = prod_probes(prod_processes)
                idle = settle(probes["paygrid"])
                print(f"paygrid processes settled at {idle:.2f} cores", flush=True)
                baseline_url = create_database(running.database_url, "bench_baseline")
                infra = {"postgres": probes["postgres"], "paygrid (idle)": probes["paygrid"]}
                print(f"baseline: {args.baseline_requests} requests ...", flush=True)
                baseline = run_baseline(baseline_url, args, run_id, infra)
            else:
                from tests.support import start_platform

                paygrid_url: str | None = None
                pg: PostgresServer | None = None
                if args.database == "postgres":
                    from tests.support import postgres_server

                    pg = stack.enter_context(postgres_server())
                    baseline_url = pg.create_database("bench_baseline")
                    paygrid_url = pg.create_database("bench_paygrid")
                else:
                    baseline_url = f"sqlite:///{tmp / 'baseline.db'}"
                print(f"baseline: {args.baseline_requests} requests ...", flush=True)
                baseline = run_baseline(baseline_url, args, run_id, postgres_probe(pg))
                running = start_platform(tmp / "platform", paygrid_url)
                stack.callback(running.stop)
                platform_pid = running.proc.pid
                sandbox_pids = children(platform_pid)
                probes = {
                    "paygrid": lambda: process_cpu(platform_pid),
                    "sandbox": lambda: sum(tree_cpu(c) for c in sandbox_pids),
                    **postgres_probe(pg),
                }
            print(f"paygrid: {args.payments} payments ...", flush=True)
            paygrid = run_paygrid(running, probes, by_process, args, run_id)
            if args.profile == "prod":
                paygrid["restarts_during_run"] = prod_restarts(running)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "e2e_payments",
        "config": {
            "database": args.database,
            "payments": args.payments,
            "concurrency": args.concurrency,
            "baseline_requests": args.baseline_requests,
            "timeout_s": args.timeout,
            "load_generator": f"{args.concurrency} processes (multiprocessing, spawn) x 1 request "
            f"in flight, each its own sync httpx.Client; on the same {os.cpu_count()} CPUs as "
            "the servers",
            "server_stack": "uvicorn via paygrid.platform.embedded._server: 1 worker, uvloop "
            "(server.serve() in uvloop.run, as paygrid.platform.embedded), http=auto (httptools)",
            "profile": args.profile,
            "postgres": (
                f"started by paygrid up --profile prod: PostgreSQL {pg_version()}, default "
                "config (fsync on), max_connections=300; baseline on the same server"
                if args.profile == "prod"
                else f"tests.support.postgres_server: PostgreSQL {pg_version()}, fsync=off"
                if args.database == "postgres"
                else None
            ),
            "processes": prod_processes or None,
            "cpus": os.cpu_count(),
            "python": host.python_version(),
            "machine": host.platform(),
            "run_id": run_id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "paygrid": paygrid,
        "baseline": baseline,
        "ratio_throughput": _ratio(paygrid["payments_per_s"], baseline["req_per_s"], 3),
        "ratio_p50": _ratio(paygrid["create_p50_ms"], baseline["p50_ms"], 2),
    }
    out = RESULTS_DIR / f"e2e_payments-{result_name(args)}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print()
    print(report(result))
    print(f"\nfigures written to {out.relative_to(ROOT)}")
    ok = paygrid["check_exit_code"] == 0 and paygrid["all_notified_within_timeout"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
