"""The production profile with two copies of every stateless role (`copies` setting): the HTTP
copies share their public port and both serve; the consumer copies share the durable JetStream
consumer; the notifier copies never deliver one notification twice; a copy killed with SIGKILL
leaves its twin serving meanwhile and comes back."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from paygrid.config import resolve
from paygrid.platform.workers import SCALABLE_ROLES, ops_port
from paygrid.storage.database import Database
from paygrid.storage.schema import notification_attempts, notifications
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, RunningPlatform, start_prod_platform, wait_until

pytestmark = [pytest.mark.timeout(400), pytest.mark.postgres]
COPIES = ",".join(f"{role}=2" for role in SCALABLE_ROLES)
PAYMENTS = 12


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[RunningPlatform]:
    from tests.support import pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries not installed")
    running = start_prod_platform(tmp_path / "prod", env={"PAYGRID_COPIES": COPIES})
    yield running
    running.stop()


def _processes(running: RunningPlatform) -> dict[str, dict[str, object]]:
    body = json.loads((running.data_dir / "status.json").read_text())
    return {str(p["name"]): p for p in body["processes"]}


def _requests_served(running: RunningPlatform, copy: int) -> float:
    """paygrid_http_requests_total of the api's ``copy``-th copy, from its own ops port."""
    profile = json.loads((running.data_dir / "profile.json").read_text())
    assert profile["profile"] == "prod"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGRID_")}
    env.update(_role_env(running))
    settings = resolve({}, env)
    text = httpx.get(f"http://127.0.0.1:{ops_port('api', settings, copy)}/metrics").text
    counts = re.findall(r'paygrid_http_requests_total\{app="api"[^}]*\} ([0-9.e+]+)', text)
    return sum(float(c) for c in counts)


def _role_env(running: RunningPlatform) -> dict[str, str]:
    """The settings the supervisor gave its roles (from a role's /proc environment)."""
    pid = int(str(_processes(running)["api"]["pid"]))
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode().split("=", 1) for item in raw if b"=" in item)
    return {k: v for k, v in pairs if k.startswith("PAYGRID_")}


def test_two_copies_of_every_stateless_role_share_the_work(
    prod: RunningPlatform, merchant: MerchantReceiver
) -> None:
    procs = _processes(prod)
    for role in SCALABLE_ROLES:
        assert procs[role]["alive"] and procs[f"{role}#2"]["alive"], role
    assert "core#2" not in procs and "scheduler#2" not in procs

    client = prod.client()
    paid = []
    for _ in range(PAYMENTS):
        payment = client.create_payment(order(merchant)).json()
        pay(prod, payment["code_url"])
        paid.append(payment["payment_id"])
    for payment_id in paid:
        wait_status(client, payment_id, "SUCCESS", timeout=60)
    wait_until(lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) >= PAYMENTS, 90)
    for _ in range(40):  # each on a new connection: the kernel spreads connections
        assert httpx.get(prod.api_url + "/healthz").status_code == 200
    assert _requests_served(prod, 1) > 0 and _requests_served(prod, 2) > 0  # both api copies

    db = Database(json.loads((prod.data_dir / "profile.json").read_text())["database_url"])
    with db.read() as conn:
        per_notification = conn.execute(
            select(notification_attempts.c.notify_id, func.count()).group_by(
                notification_attempts.c.notify_id
            )
        ).all()
        delivered = conn.execute(
            select(func.count()).where(notifications.c.status == "DELIVERED")
        ).scalar_one()
    db.dispose()
    assert delivered == PAYMENTS
    assert all(n == 1 for _, n in per_notification), per_notification  # never twice at once
    posts = Counter(h["Paygrid-Notify-Id"] for h, _ in merchant.received)
    assert set(posts.values()) == {1}, posts

    # One api copy killed: the other keeps answering on the shared port meanwhile.
    killed = int(str(procs["api"]["pid"]))
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{killed}").exists(), timeout=10)
    for _ in range(20):  # new connections: the survivor's socket takes them all meanwhile
        assert httpx.get(prod.api_url + "/healthz").status_code == 200
    wait_until(lambda: _processes(prod)["api"]["restarts"] == 1, timeout=30)
