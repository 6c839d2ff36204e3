"""Shared fixtures: a PostgreSQL server for the session, and `paygrid up` per test on both
SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from tests.support import (
    MerchantReceiver,
    PostgresServer,
    RunningPlatform,
    pg_bin,
    postgres_server,
    start_platform,
)

# `make mutate` runs with --hypothesis-profile=mutate: the first failing example kills a mutant,
# so no shrinking, and no example database carried from one mutant to the next.
settings.register_profile(
    "mutate", phases=[Phase.explicit, Phase.generate], database=None, derandomize=True
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI: scripts/install-system-deps.sh")
        pytest.skip("PostgreSQL binaries not installed")
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite under the data dir; a fresh database on the session's server."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database("t_" + uuid.uuid4().hex[:12])


PlatformFactory = Callable[..., RunningPlatform]


@pytest.fixture
def platform_factory(tmp_path: Path) -> Iterator[PlatformFactory]:
    started: list[RunningPlatform] = []

    def start(
        database_url: str | None = None, env: dict[str, str] | None = None, name: str = "var"
    ) -> RunningPlatform:
        running = start_platform(tmp_path / name, database_url, env)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def merchant() -> Iterator[MerchantReceiver]:
    receiver = MerchantReceiver()
    yield receiver
    receiver.close()
