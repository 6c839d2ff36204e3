"""`paygrid up` (embedded) runs the web servers in its own process and every background worker
in a second process it supervises: a payment goes end to end across the two; the second process
is restarted when it dies (kill -9) and payments go on; a relay of a dying process and of its
successor never lead at once; stopping `paygrid up` stops both."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from paygrid.storage.database import Database
from paygrid.storage.leader import LeaderLock
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(240)


def _background_pids(running: RunningPlatform) -> list[int]:
    """The live children of `paygrid up` that run `paygrid run background`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == running.proc.pid and b"background" in cmdline and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def _paid_and_notified(running: RunningPlatform, merchant: MerchantReceiver) -> None:
    client = running.client()
    payment = client.create_payment(order(merchant)).json()
    pay(running, payment["code_url"])
    wait_status(client, payment["payment_id"], "SUCCESS")

    def notified() -> bool:
        # At least once: a process killed after a delivery, before recording it, delivers
        # that one again after its restart; what matters is that this payment's arrives.
        bodies = [json.loads(body) for _, body in list(merchant.received)]
        return any(b["data"]["payment_id"] == payment["payment_id"] for b in bodies)

    wait_until(notified, timeout=60)


def test_workers_run_in_a_second_process_restarted_when_it_dies(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    pids = _background_pids(running)
    assert len(pids) == 1, pids
    assert httpx.get(running.ops_url + "/readyz").status_code == 200
    _paid_and_notified(running, merchant)

    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: httpx.get(running.ops_url + "/readyz").status_code == 503, timeout=10)
    wait_until(lambda: [p for p in _background_pids(running) if p != pids[0]], timeout=30)
    wait_until(lambda: httpx.get(running.ops_url + "/readyz").status_code == 200, timeout=30)
    _paid_and_notified(running, merchant)  # a payment made after the restart goes through
    assert "background process (pid" in running.log()

    survivor = _background_pids(running)
    running.stop()
    assert running.proc.returncode == 0
    for pid in survivor:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_on_sqlite_one_process_at_a_time_leads_the_relay(tmp_path: Path) -> None:
    """A background process still stopping while its successor starts: only one relays."""
    import subprocess
    import sys

    db_path = tmp_path / "paygrid.db"
    db = Database(f"sqlite:///{db_path}")
    db.migrate()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\n"
            "from paygrid.storage.database import Database\n"
            "from paygrid.storage.leader import LeaderLock\n"
            f"db = Database('sqlite:///{db_path}')\n"
            "assert LeaderLock(db, 'outbox-relay').held()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert not LeaderLock(db, "outbox-relay").held()  # another process leads
        assert LeaderLock(db, "some-other-job").held()  # a lock per name
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while not LeaderLock(db, "outbox-relay").held():  # its holder died: the lock is free
        assert time.monotonic() < deadline
        time.sleep(0.1)
    db.dispose()


def test_a_background_stop_that_hangs_ends_itself_with_the_stacks_in_the_log() -> None:
    """The parent waits STOP_GRACE_S for its child; the child's own deadline is shorter, so a
    stop stuck on a thread ends with that thread's stack in the log instead of a SIGKILL."""
    import subprocess
    import sys

    from paygrid.platform.background import EXIT_STUCK, STOP_DEADLINE_S, STOP_GRACE_S

    assert STOP_DEADLINE_S < STOP_GRACE_S
    stuck = subprocess.run(
        [
            sys.executable,
            "-c",
            "import threading\n"
            "from paygrid.platform.background import _exit_if_stuck\n"
            "_exit_if_stuck(0.3)\n"
            "threading.Event().wait(30)  # a stop that never ends\n",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert stuck.returncode == EXIT_STUCK
    assert 'File "<string>", line 4' in stuck.stderr, stuck.stderr  # where the stop hung
