"""The load generator: C worker processes (multiprocessing, spawn), each a closed loop with one
request in flight on its own synchronous httpx client. An async httpx client tops out near
350 req/s on these machines and would measure itself (see /work/shared/PERFORMANCE-NOTES.md).

Three kinds of work: ``payments`` (a signed create, then the payer pays at the channel's
sandbox), ``refunds`` (signed ``POST /v1/refunds`` through the merchant API) and ``baseline``
(one POST to the bare-insert server)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from queue import Empty
from typing import Any, NamedTuple

import httpx

from paygrid.api.client import MerchantClient
from paygrid.channels import registry

REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
MAX_ERRORS_KEPT = 5
PAYMENT_TOTAL = 10_000  # fen: two apples at 55.00 less a 10.00 coupon


class Sample(NamedTuple):
    ref: str  # payment_id, refund_id, or the baseline's row id
    channel: str  # "" for the baseline
    start: float  # time.monotonic() when the create (or insert) request was sent
    create_s: float
    pay_s: float  # the payer's pay at the sandbox; 0 for refunds and the baseline
    start_wall: float  # time.time() at ``start``, to line up with the platform's timestamps


@dataclass(frozen=True, slots=True)
class RefundTask:
    """The refunds one paid payment gets, one after the other: ``amounts`` in fen."""

    payment_id: str
    channel: str
    amounts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Job:
    mode: str  # "payments", "refunds" or "baseline"
    index: int
    count: int  # payments or baseline requests (refunds: len(refunds))
    api_url: str
    sandbox_urls: dict[str, str] = field(default_factory=dict)
    channels: tuple[str, ...] = ()  # payments take them in turn
    notify_url: str = ""
    creds: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    deadline_s: float = 60.0  # stop issuing requests this long after the start signal
    refunds: tuple[RefundTask, ...] = ()


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


def payment_body(out_trade_no: str, notify_url: str, channel: str) -> dict[str, Any]:
    return {
        "out_trade_no": out_trade_no,
        "amount": {"total": PAYMENT_TOTAL, "currency": "CNY"},
        "description": "两斤苹果 apples",
        "notify_url": notify_url,
        **registry.spec(channel).test_order(),  # a method the sandbox payer can pay
        "items": [{"sku": "APL", "name": "苹果", "quantity": 2, "unit_amount": 5500}],
        "discounts": [{"name": "满减 coupon", "amount": 1000}],
    }


def refund_body(
    payment_id: str, out_refund_no: str, amount: int, notify_url: str
) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "out_refund_no": out_refund_no,
        "amount": amount,
        "reason": "退货 returned",
        "notify_url": notify_url,
    }


def worker(job: Job, barrier: Barrier, results: Queue[WorkerResult]) -> None:
    out = WorkerResult(job.index)
    try:
        with (
            httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as api,
            httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as sandbox,
        ):
            api.get(job.api_url + "/healthz").raise_for_status()  # open the keep-alive connection
            for channel in job.channels if job.mode == "payments" else ():
                sandbox.get(job.sandbox_urls[channel] + "/sandbox/health").raise_for_status()
            barrier.wait(START_TIMEOUT_S)
            out.started = time.monotonic()
            cpu0 = time.process_time()
            stop_at = out.started + job.deadline_s
            if job.mode == "payments":
                _drive_payments(job, api, sandbox, out, stop_at)
            elif job.mode == "refunds":
                _drive_refunds(job, api, out, stop_at)
            else:
                _drive_baseline(job, api, out, stop_at)
            out.cpu_s = time.process_time() - cpu0
    except Exception as exc:
        out.error(f"worker {job.index}: {type(exc).__name__}: {exc}")
    finally:
        out.finished = time.monotonic()
        results.put(out)


def _merchant(job: Job, api: httpx.Client) -> MerchantClient:
    c = job.creds
    return MerchantClient(job.api_url, c["mchid"], c["key_id"], c["secret"], http=api)


def _drive_payments(
    job: Job, api: httpx.Client, sandbox: httpx.Client, out: WorkerResult, stop_at: float
) -> None:
    client = _merchant(job, api)
    for i in range(job.count):
        if time.monotonic() > stop_at:
            out.error(f"deadline reached after {i} of {job.count} payments")
            return
        channel = job.channels[(job.index + i) % len(job.channels)]
        _one_payment(job, client, sandbox, channel, f"b{job.run_id}-{job.index}-{i}", out)


def _one_payment(
    job: Job,
    client: MerchantClient,
    sandbox: httpx.Client,
    channel: str,
    out_trade_no: str,
    out: WorkerResult,
) -> None:
    t0, wall = time.monotonic(), time.time()
    try:
        created = client.create_payment(payment_body(out_trade_no, job.notify_url, channel))
        t1 = time.monotonic()
        if created.status_code != 201:
            out.error(f"{channel} create {created.status_code}: {created.text}")
            return
        payment = created.json()
        pay = registry.spec(channel).sandbox_pay(payment, "SUCCESS")
        paid = sandbox.post(job.sandbox_urls[channel] + "/sandbox/pay", json=pay)
        t2 = time.monotonic()
    except httpx.HTTPError as exc:
        out.error(f"{channel} {type(exc).__name__}: {exc}")
        return
    if paid.status_code != 200:
        out.error(f"{channel} pay {paid.status_code}: {paid.text}")
        return
    out.samples.append(Sample(payment["payment_id"], channel, t0, t1 - t0, t2 - t1, wall))


def _drive_refunds(job: Job, api: httpx.Client, out: WorkerResult, stop_at: float) -> None:
    client = _merchant(job, api)
    for i, task in enumerate(job.refunds):
        for k, amount in enumerate(task.amounts):
            if time.monotonic() > stop_at:
                out.error(f"deadline reached after {i} of {len(job.refunds)} refunded payments")
                return
            body = refund_body(
                task.payment_id, f"r{job.run_id}-{job.index}-{i}-{k}", amount, job.notify_url
            )
            t0, wall = time.monotonic(), time.time()
            try:
                created = client.request("POST", "/v1/refunds", body)
            except httpx.HTTPError as exc:
                out.error(f"{task.channel} {type(exc).__name__}: {exc}")
                continue
            t1 = time.monotonic()
            if created.status_code != 201:
                out.error(f"{task.channel} refund {created.status_code}: {created.text}")
                continue
            refund_id = str(created.json()["refund_id"])
            out.samples.append(Sample(refund_id, task.channel, t0, t1 - t0, 0.0, wall))


def _drive_baseline(job: Job, api: httpx.Client, out: WorkerResult, stop_at: float) -> None:
    url = job.api_url + "/rows"
    for i in range(job.count):
        if time.monotonic() > stop_at:
            out.error(f"deadline reached after {i} of {job.count} requests")
            return
        body = json.dumps(
            {
                "out_trade_no": f"b{job.run_id}-{job.index}-{i}",
                "amount": PAYMENT_TOTAL,
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
        out.samples.append(Sample(str(response.json()["id"]), "", t0, t1 - t0, 0.0, wall))


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

    @property
    def cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.results)


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` counts differing by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(jobs: list[Job]) -> LoadRun:
    """Start one process per job, release them together, gather what they measured."""
    ctx = mp.get_context("spawn")  # the parent has threads (receiver): do not fork it
    barrier = ctx.Barrier(len(jobs) + 1)
    results: Queue[WorkerResult] = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(j, barrier, results), daemon=True) for j in jobs]
    for p in procs:
        p.start()
    try:
        barrier.wait(START_TIMEOUT_S)
    except Exception:
        barrier.abort()
    t0 = time.monotonic()
    gathered: list[WorkerResult] = []
    deadline_s = max((j.deadline_s for j in jobs), default=0.0)
    give_up = t0 + deadline_s + 2 * REQUEST_TIMEOUT_S + START_TIMEOUT_S
    while len(gathered) < len(jobs) and time.monotonic() < give_up:
        try:
            gathered.append(results.get(timeout=0.5))
        except Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
    missing = len(jobs) - len(gathered)
    if missing:
        lost = WorkerResult(-1)
        lost.error(f"{missing} worker process(es) reported nothing")
        gathered.append(lost)
    return LoadRun(t0, gathered)
