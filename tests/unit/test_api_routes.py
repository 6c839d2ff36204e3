"""The merchant API's routers (api/routes/, one per resource): every POST takes an
Idempotency-Key (through api.idempotency.respond_once) but the resend, which only delivers
again (docs/merchant-api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paygrid.api.app import ApiDeps, create_app
from paygrid.config import Settings
from paygrid.platform.bootstrap import bootstrap
from tests.unit.fake_channel import FakeChannel

NOT_KEYED = {"resendNotification"}  # delivers the same notification again; changes nothing


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = Settings(data_dir=tmp_path / "var", run_sandboxes=False)
    platform = bootstrap(settings, channels={"wechatpay": FakeChannel()})
    deps = ApiDeps(platform.db, platform.payments, platform.notify, vault=platform.vault)
    yield create_app(deps).openapi()
    platform.close()


def test_every_post_but_the_resend_takes_an_idempotency_key(spec: dict[str, Any]) -> None:
    posts = {
        op["operationId"]: op
        for path in spec["paths"].values()
        for m, op in path.items()
        if m == "post"
    }
    assert set(posts) >= {"createPayment", "closePayment", "resendNotification"}
    for operation_id, op in posts.items():
        names = {p["name"] for p in op.get("parameters", [])}
        keyed = "Idempotency-Key" in names
        assert keyed == (operation_id not in NOT_KEYED), operation_id
        if keyed:
            assert 409 in {int(s) for s in op["responses"]}, operation_id
            assert "Idempotent-Replayed" in op["responses"][next(iter(op["responses"]))]["headers"]
