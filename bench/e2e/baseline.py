"""The baseline of the same run: a bare FastAPI app with one POST that inserts one row
(SQLAlchemy Core) and commits, on an engine from paygrid.storage.database.make_engine (a SQLite
WAL file in the temp dir, or a database on the same PostgreSQL server), served by
paygrid.platform.embedded._server (paygrid's uvicorn settings: one worker, uvloop, http=auto)
and driven by the same load generator at the same concurrency."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from typing import Any

import uvloop
from common import Probes, spread, tree_cpu
from fastapi import FastAPI, Request, Response  # at module level: FastAPI resolves annotations

from e2e.cpu import cores_busy, cpu_meter, per_unit_ms
from e2e.load import START_TIMEOUT_S, Job, run_load, split

STOP_TIMEOUT_S = 10.0


def serve_baseline(database_url: str, port: int) -> None:
    """Runs in its own (spawned) process until terminated."""
    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert
    from starlette.concurrency import run_in_threadpool

    from paygrid.kernel.clock import utcnow
    from paygrid.platform.embedded import _server  # the uvicorn.Config paygrid's API runs with
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


def run_baseline(
    database_url: str, args: argparse.Namespace, run_id: str, infra: Probes
) -> dict[str, Any]:
    """``args.baseline_requests`` inserts by ``args.concurrency`` clients; ``infra`` are the
    other processes whose CPU is reported meanwhile (PostgreSQL, an idle prod platform)."""
    from paygrid.ops.running import wait_http
    from paygrid.ops.scratch import free_port

    port = free_port()
    proc = mp.get_context("spawn").Process(target=serve_baseline, args=(database_url, port))
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=START_TIMEOUT_S)
        assert proc.pid is not None
        server_pid = proc.pid
        probes = {"baseline server": lambda: tree_cpu(server_pid), **infra}
        counts = split(args.baseline_requests, args.concurrency)
        jobs = [
            Job("baseline", i, n, url, run_id=run_id, deadline_s=args.timeout)
            for i, n in enumerate(counts)
        ]
        with cpu_meter(probes) as used:
            load = run_load(jobs)
    finally:
        proc.terminate()
        proc.join(timeout=STOP_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
    latencies = [s.create_s for s in load.samples]
    elapsed = load.t_end - load.t0
    latency = spread(latencies)
    return {
        "requests": args.baseline_requests,
        "ok": len(latencies),
        "errors": load.error_count,
        "error_examples": load.errors,
        "elapsed_s": round(elapsed, 3),
        "req_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "cpu_ms_per_request": per_unit_ms(used, load.cpu_s, len(latencies)),
        "cpu_cores_busy": cores_busy(used, load.cpu_s, elapsed),
    }
