"""The table of workers and roles (paygrid.platform.workers): the production layout it gives
(role names, ports, consumers, intervals) is the documented one, the embedded profile runs
every worker but the production-only gauges, and every tick runs on a wired platform."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from paygrid import config
from paygrid.config import Settings
from paygrid.notify.delivery import DeliveryPool
from paygrid.ops import observability as obs
from paygrid.platform import bootstrap as bootstrap_module
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.platform.workers import (
    ROLE_NAMES,
    ROLES,
    WORKERS,
    Loop,
    all_consumers,
    copy_name,
    embedded_workers,
    ops_port,
    role,
    role_copies,
    role_port,
    workers_of,
)
from tests.unit.fake_channel import FakeChannel

SETTINGS = Settings(api_port=18000, cashier_port=18001, gateway_port=18002, ops_base_port=19100)


def test_the_production_layout_is_the_documented_one() -> None:
    assert ROLE_NAMES == (
        "api",
        "cashier",
        "gateway",
        "core",
        "relay",
        "ledger",
        "notifier",
        "scheduler",
        "recon",
    )
    public = {name: role_port(name, SETTINGS) for name in ROLE_NAMES}
    metrics = {name: ops_port(name, SETTINGS) for name in ROLE_NAMES}
    assert public == {
        "api": 18000,
        "cashier": 18001,
        "gateway": 18002,
        "core": 19100,
        "relay": 19101,
        "ledger": 19102,
        "notifier": 19103,
        "scheduler": 19104,
        "recon": 19108,
    }
    assert metrics == {**public, "api": 19105, "cashier": 19106, "gateway": 19107}
    assert [r.name for r in ROLES if r.http] == ["api", "cashier", "gateway"]
    assert [r.name for r in ROLES if r.uses_bus] == ["relay", "ledger", "notifier"]


def test_ops_ports_fill_exactly_the_block_the_settings_reserve() -> None:
    assert sorted(r.ops_offset for r in ROLES) == list(range(config.OPS_PORTS))


def test_every_consumer_runs_in_exactly_one_role_and_all_in_the_embedded_profile() -> None:
    assert {r.name: r.consumers for r in ROLES if r.consumers} == {
        "ledger": ("ledger",),
        "notifier": ("notify",),
    }
    assert sorted(all_consumers()) == sorted(bootstrap_module.CONSUMERS)
    assert len(set(all_consumers())) == len(all_consumers())


def test_workers_intervals_and_roles() -> None:
    s = Settings(scheduler_interval_s=2.5)
    table = {w.name: (w.role, w.interval(s), w.busy_at, w.embedded) for w in WORKERS}
    assert table == {
        "core": ("core", 2.5, 0, True),
        "refund-recovery": ("core", 2.5, 0, True),
        "outbox-relay": ("relay", 0.2, 64, True),
        "notifier": ("notifier", 0.5, 50, True),
        "scheduler": ("scheduler", 2.5, 0, True),
        "outbox-gauges": ("scheduler", 2.5, 0, False),
        "recon": ("recon", 300.0, 0, True),
    }
    assert all(w.role in ROLE_NAMES for w in WORKERS)
    assert [w.name for w in workers_of("ledger")] == []
    assert [w.name for w in workers_of("scheduler")] == ["scheduler", "outbox-gauges"]
    assert "outbox-gauges" not in [w.name for w in embedded_workers()]


def test_an_unknown_role_is_refused_naming_the_roles() -> None:
    with pytest.raises(ValueError, match="unknown role 'web'; roles: api, cashier, gateway"):
        role("web")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    settings = Settings(data_dir=tmp_path / "var", run_sandboxes=False)
    running = bootstrap(settings, channels={"wechatpay": FakeChannel()})
    yield running
    running.close()


def test_every_tick_runs_on_a_wired_platform(platform: Platform) -> None:
    obs.OUTBOX_UNPUBLISHED.set(-1)
    for worker in WORKERS:
        done = worker.tick(platform)
        assert isinstance(done, int) and done >= 0, worker.name
    # the gauges tick read the outbox, which the relay tick emptied
    assert REGISTRY.get_sample_value("paygrid_outbox_unpublished") == 0


def test_a_loop_repeats_a_busy_tick_at_once_and_survives_a_failing_one() -> None:
    beats: list[float] = []
    done = threading.Event()

    def tick() -> int:
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise RuntimeError("a failing tick")
        if len(beats) >= 5:
            done.set()
        return 1 if len(beats) in (3, 4) else 0

    loop = Loop("test-loop", tick, interval=1.0, busy_at=1)
    loop.start()
    assert done.wait(10)
    loop.stopping.set()
    loop.join(5)
    assert not loop.is_alive()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert gaps[0] >= 0.9 and gaps[1] >= 0.9  # idle, then failed: waits the interval
    assert gaps[2] < 0.5 and gaps[3] < 0.5  # busy: goes again at once


def test_a_woken_loop_goes_again_before_its_interval() -> None:
    """The notifier is woken when a delivery slot frees: it does not sit out its interval
    while a merchant's next notifications wait for one of its few slots."""
    beats: list[float] = []
    second = threading.Event()
    wake = threading.Event()

    def tick() -> int:
        beats.append(time.monotonic())
        if len(beats) == 2:
            second.set()
        return 0  # never a full batch: without the wake it would wait 30 s

    loop = Loop("test-woken", tick, interval=30.0, busy_at=1, wake=wake)
    loop.start()
    time.sleep(0.1)
    wake.set()
    assert second.wait(10), "the wake did not cut the pause short"
    loop.stopping.set()
    wake.set()
    loop.join(5)
    assert not loop.is_alive()


def test_the_notifier_is_woken_by_a_freed_delivery_slot() -> None:
    notifier = next(w for w in WORKERS if w.name == "notifier")
    assert notifier.wake is not None
    pool = DeliveryPool(capacity=2, per_merchant=1)
    assert pool.reserve("ntf_1", "m1") and not pool.reserve("ntf_2", "m1")
    assert not pool.freed.is_set()
    pool.release("ntf_1", "m1")
    assert pool.freed.is_set() and pool.reserve("ntf_2", "m1")


def test_a_slot_nobody_waited_for_does_not_wake_the_notifier() -> None:
    """Only a slot a full merchant (or a full pool) waited for wakes the claiming loop: a
    wake per finished delivery would be a claim transaction per notification."""
    pool = DeliveryPool(capacity=4, per_merchant=2)
    assert pool.reserve("ntf_1", "m1")
    pool.release("ntf_1", "m1")
    assert not pool.freed.is_set()


def test_copies_of_stateless_roles_and_their_ops_ports() -> None:
    s = config.resolve({"copies": "api=2,notifier=3", "profile": "prod"}, {})
    assert role_copies(s)[:2] == [("api", 1), ("api", 2)]
    assert [c for r, c in role_copies(s) if r == "notifier"] == [1, 2, 3]
    assert [copy_name("notifier", c) for c in (1, 2, 3)] == ["notifier", "notifier#2", "notifier#3"]
    ports = {ops_port(r, s, c) for r, c in role_copies(s)}
    assert len(ports) == len(role_copies(s))  # every copy its own /metrics
    assert ops_port("api", s, 2) == s.copy_ops_base_port + role("api").ops_offset
    assert ops_port("notifier", s, 3) == s.copy_ops_base_port + config.OPS_PORTS + 3
    for bad, says in (
        ("core=2", "runs in one copy"),
        ("scheduler=2", "runs in one copy"),
        ("nobody=2", "not a role"),
        ("api=0", "1-8"),
        ("api=9", "1-8"),
        ("api", "ROLE=N"),
    ):
        with pytest.raises(config.ConfigError, match=says):
            config.resolve({"copies": bad}, {})
    assert config.resolve({"copies": "core=1"}, {}).copies_of("core") == 1
