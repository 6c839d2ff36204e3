"""End-to-end payments and refunds through a real `paygrid up`, beside a bare FastAPI +
one-INSERT baseline measured in the same run.

    .venv/bin/python bench/e2e_payments.py [--payments N] [--concurrency C]
        [--channel CHANNEL|mixed] [--refund-ratio R]
        [--profile embedded|prod] [--database sqlite|postgres]

Profiles: ``embedded`` (default) is `paygrid up` (web and background processes), on SQLite or
on a PostgreSQL from paygrid.ops.scratch; ``prod`` is `paygrid up --profile prod`
(paygrid.ops.running.start_prod_platform): one process per role, PostgreSQL and NATS
JetStream started and supervised by paygrid, so the database is PostgreSQL (paygrid's own,
default config) and the baseline gets a database on that same server.

``--channel`` is one channel of the registry (paygrid.channels.registry; the first is the
default) or ``mixed``: the registry's channels in turn. Each payment is a QR payment (method
``native``) that the payer pays at that channel's sandbox (``spec.sandbox_pay_body``).
``--refund-ratio R`` then refunds the first R of the paid payments through the merchant API:
on each channel in turn one payment in full, the next in two partial refunds (e2e/phases.py).

What is measured, the parts and their modules: e2e/load.py (the load generator: worker processes,
each one request in flight on a synchronous httpx client), e2e/receiver.py (the merchant's
notify_url, served here), e2e/baseline.py, e2e/cpu.py (CPU time per process from /proc),
e2e/platform_rows.py (stage lags from the platform's own timestamps), e2e/phases.py,
e2e/report.py. ``--py-spy EXE`` also samples paygrid and the sandboxes (GIL-holding samples only,
raw collapsed stacks) into bench/results/.

Figures go to stdout and bench/results/e2e_payments-<database|prod>-<channel>[-refunds<R>].json.
Afterwards the script runs `paygrid check --grace-seconds 0` on the platform's data. The exit code
is 1 if it finds a violation, or if some payment or refund was not notified within --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import shutil
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import (
    RESULTS_DIR,
    Probes,
    machine_note,
    pg_version,
    postmaster_probe,
    py_spy,
    shown,
)
from e2e.baseline import run_baseline
from e2e.cpu import (
    embedded_probes,
    prod_pids,
    prod_platform,
    prod_probes,
    prod_restarts,
    settle,
)
from e2e.phases import Platform, finish, run_payments, run_refunds
from e2e.receiver import NotifyReceiver
from e2e.report import ratios, report

from paygrid.channels import registry

if TYPE_CHECKING:
    from paygrid.ops.scratch import PostgresServer

MIXED = "mixed"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--payments", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--channel",
        choices=(*registry.NAMES, MIXED),
        default=registry.NAMES[0],
        help=f"a channel of the registry, or {MIXED}: the registry's channels in turn",
    )
    parser.add_argument(
        "--refund-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="then refund this share (0..1) of the paid payments: one in full, the next in two "
        "partial refunds, and so on, per channel",
    )
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
    parser.add_argument(
        "--copies",
        default="",
        metavar="ROLE=N,...",
        help="prod profile: more copies of stateless roles (paygrid's copies setting), e.g. "
        "api=2,gateway=2,ledger=2,notifier=2",
    )
    parser.add_argument("--baseline-requests", type=int, default=3000)
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="bound on each load phase and on each wait for notifications (s)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="EXE",
        default=None,
        help="py-spy binary: sample paygrid and the sandboxes during payments and refunds",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON (and py-spy) go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.concurrency < 1 or args.payments < 1 or args.baseline_requests < 1:
        parser.error("--payments, --concurrency and --baseline-requests must be positive")
    if not 0.0 <= args.refund_ratio <= 1.0:
        parser.error("--refund-ratio must be between 0 and 1")
    if args.copies and args.profile != "prod":
        parser.error("--copies is for the prod profile (the embedded one is two processes)")
    if args.profile == "prod" and args.database == "sqlite":
        parser.error("the prod profile runs on the PostgreSQL it starts: drop --database sqlite")
    args.database = "postgres" if args.profile == "prod" else args.database or "sqlite"
    return args


def result_name(args: argparse.Namespace) -> str:
    where = "prod" if args.profile == "prod" else str(args.database)
    where += "-copies-" + args.copies.replace(",", "-").replace("=", "") if args.copies else ""
    refunds = f"-refunds{args.refund_ratio:g}" if args.refund_ratio > 0 else ""
    return f"{where}-{args.channel}{refunds}"


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


def start_prod(
    stack: ExitStack, tmp: Path, args: argparse.Namespace, run_id: str
) -> tuple[Platform, dict[str, Any], dict[str, int]]:
    """`paygrid up --profile prod`; the baseline on its PostgreSQL while it is up and idle."""
    # The supervisor runs PostgreSQL as the postgres user, which must reach DATA_DIR/postgres;
    # else it falls back to /var/lib/paygrid/<hash>.
    tmp.chmod(0o755)
    print("paygrid up --profile prod ...", flush=True)
    running = stack.enter_context(prod_platform(tmp / "platform", args.copies))
    assert running.database_url is not None
    pids = prod_pids(running)
    probes, by_process = prod_probes(pids)
    idle = settle(probes["paygrid"])
    print(f"paygrid processes settled at {idle:.2f} cores", flush=True)
    baseline_url = create_database(running.database_url, "bench_baseline")
    infra = {"postgres": probes["postgres"], "paygrid (idle)": probes["paygrid"]}
    print(f"baseline: {args.baseline_requests} requests ...", flush=True)
    baseline = run_baseline(baseline_url, args, run_id, infra)
    return Platform(running, probes, by_process), baseline, pids


def start_embedded(
    stack: ExitStack, tmp: Path, args: argparse.Namespace, run_id: str
) -> tuple[Platform, dict[str, Any]]:
    """The baseline first, then `paygrid up` on the same kind of database."""
    from paygrid.ops.running import start_platform

    paygrid_url: str | None = None
    pg: PostgresServer | None = None
    infra: Probes = {}
    if args.database == "postgres":
        from paygrid.ops.scratch import postgres_server

        pg = stack.enter_context(postgres_server())
        baseline_url = pg.create_database("bench_baseline")
        paygrid_url = pg.create_database("bench_paygrid")
        infra["postgres"] = postmaster_probe(pg.data_dir)
    else:
        baseline_url = f"sqlite:///{tmp / 'baseline.db'}"
    print(f"baseline: {args.baseline_requests} requests ...", flush=True)
    baseline = run_baseline(baseline_url, args, run_id, infra)
    running = start_platform(tmp / "platform", paygrid_url)
    stack.callback(running.stop)
    totals, each = embedded_probes(running)
    return Platform(running, {**totals, **infra}, each), baseline


def measure(args: argparse.Namespace, tmp: Path, run_id: str) -> dict[str, Any]:
    channels = registry.NAMES if args.channel == MIXED else (args.channel,)
    with ExitStack() as stack:
        pids: dict[str, int] = {}
        if args.profile == "prod":
            platform, baseline, pids = start_prod(stack, tmp, args, run_id)
        else:
            platform, baseline = start_embedded(stack, tmp, args, run_id)
        running = platform.running
        receiver = NotifyReceiver(running.credentials["secret"])
        stack.callback(receiver.close)
        spied = {"paygrid": running.proc.pid}
        prefix = f"e2e_payments-{result_name(args)}"
        spy = stack.enter_context(
            py_spy(args.py_spy, spied, prefix, 200, subprocesses=True, out_dir=args.results_dir)
        )
        print(f"paygrid: {args.payments} payments on {', '.join(channels)} ...", flush=True)
        payments, paid = run_payments(platform, receiver, args, channels, run_id)
        refunds = None
        if args.refund_ratio > 0:
            print(f"paygrid: refunds of {args.refund_ratio:g} of {len(paid)} paid ...", flush=True)
            refunds = run_refunds(platform, receiver, args, paid, run_id)
        if args.profile == "prod":
            payments["restarts_during_run"] = prod_restarts(running)
        end = finish(running, sorted(s.ref for s in paid))
        return {
            "payments": payments,
            "refunds": refunds,
            "baseline": baseline,
            "end": end,
            "notifications_received": receiver.counts(),
            "processes": pids or None,
            "pyspy_raw": spy or None,
        }


def config(args: argparse.Namespace, processes: dict[str, int] | None) -> dict[str, Any]:
    prod = args.profile == "prod"
    return {
        "database": args.database,
        "channel": args.channel,
        "channels": list(registry.NAMES if args.channel == MIXED else (args.channel,)),
        "payments": args.payments,
        "refund_ratio": args.refund_ratio,
        "concurrency": args.concurrency,
        "baseline_requests": args.baseline_requests,
        "timeout_s": args.timeout,
        "load_generator": f"{args.concurrency} processes (multiprocessing, spawn) x 1 request "
        f"in flight, each its own sync httpx.Client; on the same {os.cpu_count()} CPUs as "
        "the servers",
        "server_stack": "uvicorn via paygrid.platform.embedded._server: 1 worker, uvloop "
        "(server.serve() in uvloop.run, as paygrid.platform.embedded), http=auto (httptools)",
        "profile": args.profile,
        "copies": args.copies or None,
        "postgres": (
            f"started by paygrid up --profile prod: PostgreSQL {pg_version()}, default "
            "config (fsync on); baseline on the same server"
            if prod
            else f"paygrid.ops.scratch.postgres_server: PostgreSQL {pg_version()}, fsync=off"
            if args.database == "postgres"
            else None
        ),
        "processes": processes,
        "cpus": os.cpu_count(),
        "python": host.python_version(),
        "machine": host.platform(),
    }


def main() -> int:
    args = parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="paygrid-bench-"))
    run_id = uuid.uuid4().hex[:8]
    before = machine_note()
    try:
        measured = measure(args, tmp, run_id)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "e2e_payments",
        "config": {
            **config(args, measured.pop("processes")),
            "run_id": run_id,
            "machine_before": before,
            "machine_after": machine_note(),
        },
        **measured,
    }
    result["ratios"] = ratios(result)
    out = args.results_dir / f"e2e_payments-{result_name(args)}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print()
    print(report(result))
    print(f"\nfigures written to {shown(out)}")
    refunds = result["refunds"] or {"all_notified_within_timeout": True}
    ok = (
        result["end"]["check_exit_code"] == 0
        and result["payments"]["all_notified_within_timeout"]
        and refunds["all_notified_within_timeout"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
