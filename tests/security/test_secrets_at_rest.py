"""Secrets at rest (issue 7, defect 7): every file paygrid keeps is owner-only; merchant
secrets are sealed under a key-encryption key, so the database alone reveals none of them; a
wrong KEK is refused clearly; a merchant's key can be rotated with a grace period."""

from __future__ import annotations

import base64
import grp
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from subprocess import PIPE

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from paygrid.api.client import MerchantClient, verify_notification
from paygrid.channels import registry
from paygrid.storage.database import MIGRATIONS_DIR, Database
from paygrid.storage.schema import metadata
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import (
    MerchantReceiver,
    RunningPlatform,
    channel_base_urls,
    channel_env,
    free_ports,
    pg_bin,
    start_platform,
    start_prod_platform,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)
KEK_A = base64.b64encode(b"A" * 32).decode()
KEK_B = base64.b64encode(b"B" * 32).decode()


def needles(secret: str) -> list[bytes]:
    """The secret as the merchant holds it, its bytes, and their base64 and hex forms."""
    text = secret.encode()
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    forms = [text, raw]
    return [*forms, *(base64.b64encode(f) for f in forms), *(f.hex().encode() for f in forms)]


def assert_secret_not_in_database(running: RunningPlatform, secret: str) -> None:
    """Neither in any stored value (both databases) nor anywhere in the SQLite files."""
    db = running.database()
    try:
        with db.read() as conn:
            stored = [
                str(value).encode()
                for table in metadata.sorted_tables
                for row in conn.execute(select(table))
                for value in row
            ]
    finally:
        db.dispose()
    for needle in needles(secret):
        assert not any(needle in value for value in stored), needle
    if running.database_url is None:
        for name in ("paygrid.db", "paygrid.db-wal", "paygrid.db-shm"):
            path = running.data_dir / name
            if path.exists():
                content = path.read_bytes()
                for needle in needles(secret):
                    assert needle not in content, (name, needle)


def create_merchant(running: RunningPlatform, name: str = "Shop") -> dict[str, str]:
    created = running.paygrid("merchant", "create", "--name", name, "--json")
    assert created.returncode == 0, created.stderr
    creds: dict[str, str] = json.loads(created.stdout)
    return creds


def client_for(running: RunningPlatform, creds: dict[str, str]) -> MerchantClient:
    return MerchantClient(running.api_url, creds["mchid"], creds["key_id"], creds["secret"])


def signed_call(client: MerchantClient) -> tuple[int, str]:
    """An authenticated request that touches no data: 404 once the signature passed."""
    response = client.request("GET", "/v1/payments?out_trade_no=none-such")
    code = response.json().get("code", "")
    return response.status_code, str(code)


def loose_entries(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` (itself included) with a group or other permission."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{stat.filemode(mode)} {path}")
    return found


def up_expecting_failure(
    data_dir: Path, env: dict[str, str], database_url: str | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`paygrid up` that must refuse to start: it exits by itself, nothing listens."""
    api, cashier, pg, nats, gateway, ops_base, bank, *sandboxes = free_ports(
        7 + len(registry.NAMES)
    )
    cmd = [sys.executable, "-m", "paygrid.cli", "up", "--data-dir", str(data_dir)]
    cmd += ["--api-port", str(api), "--cashier-port", str(cashier), *extra]
    if database_url:
        cmd += ["--database-url", database_url]
    full_env = {
        **os.environ,
        **channel_env(channel_base_urls(sandboxes)),
        "PAYGRID_BANK_BASE_URL": f"http://127.0.0.1:{bank}",
        "PAYGRID_PG_PORT": str(pg),
        "PAYGRID_NATS_PORT": str(nats),
        "PAYGRID_GATEWAY_PORT": str(gateway),
        "PAYGRID_OPS_BASE_PORT": str(ops_base),
        **env,
    }
    for name in ("PAYGRID_KEK", "PAYGRID_KEK_FILE"):
        if name not in env:
            full_env.pop(name, None)
    proc = subprocess.Popen(
        cmd, stdout=PIPE, stderr=PIPE, text=True, env=full_env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # it started after all: stop it and its children
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# --- file modes ---------------------------------------------------------------------------
def test_every_file_in_the_data_dir_is_owner_only(
    tmp_path: Path, platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older version left it
    (data_dir / "old-notes.txt").write_text("left by an older version")
    (data_dir / "old-notes.txt").chmod(0o644)
    running = platform_factory()
    client = running.client()
    payment = client.create_payment(order(merchant)).json()
    pay(running, payment["code_url"])
    wait_status(client, payment["payment_id"], "SUCCESS")
    create_merchant(running)
    assert (running.data_dir / "paygrid.db-wal").exists()
    assert (running.data_dir / "sandbox" / "wechatpay").is_dir()
    assert loose_entries(running.data_dir) == []
    assert stat.S_IMODE(running.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((running.data_dir / "keys" / "kek").stat().st_mode) == 0o600


# --- sealed secrets -----------------------------------------------------------------------
def test_the_database_alone_reveals_no_merchant_secret(
    platform_factory: PlatformFactory, database_url: str | None
) -> None:
    running = platform_factory(database_url)
    creds = create_merchant(running)
    status, code = signed_call(client_for(running, creds))
    assert (status, code) == (404, "PAYMENT_NOT_FOUND")  # the sealed secret verifies
    for secret in (creds["secret"], running.credentials["secret"]):
        assert_secret_not_in_database(running, secret)
    running.stop()
    assert_secret_not_in_database(running, creds["secret"])  # after the final checkpoint too


def test_same_kek_restarts_another_kek_is_refused(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGRID_KEK", KEK_A)  # for `paygrid up` and the CLI alike
    data_dir = tmp_path / "var"
    running = start_platform(data_dir, database_url)
    try:
        assert not (data_dir / "keys").exists()  # a configured KEK: nothing generated
        creds = create_merchant(running)
    finally:
        running.stop()

    running = start_platform(data_dir, database_url)
    try:
        assert signed_call(client_for(running, creds)) == (404, "PAYMENT_NOT_FOUND")
        assert signed_call(running.client()) == (404, "PAYMENT_NOT_FOUND")
    finally:
        running.stop()

    refused = up_expecting_failure(data_dir, {"PAYGRID_KEK": KEK_B}, database_url)
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1, output
    assert "sealed under" in output and "key-encryption key" in output, output
    # The generated default KEK is not silently used in its place either.
    refused = up_expecting_failure(data_dir, {}, database_url)
    assert refused.returncode == 1 and "sealed under" in refused.stdout + refused.stderr


def test_a_malformed_kek_is_refused(tmp_path: Path) -> None:
    refused = up_expecting_failure(tmp_path / "var", {"PAYGRID_KEK": "c2hvcnQ="})
    assert refused.returncode == 1
    assert "PAYGRID_KEK: the KEK must be 32 bytes" in refused.stdout + refused.stderr


def test_upgrade_seals_secrets_an_older_version_stored_in_plain_text(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    url = database_url or f"sqlite:///{data_dir / 'paygrid.db'}"
    old = Database(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO merchants VALUES ('m0000000001', 'Old Shop', 'ACTIVE', 6000, "
                "'wechatpay', '2026-01-01 00:00:00')"
            )
        )
        secret = secrets.token_urlsafe(32)  # as paygrid made them
        conn.execute(
            text(
                "INSERT INTO merchant_keys (key_id, mchid, secret, status, created_at) VALUES "
                "('key_old', 'm0000000001', :s, 'ACTIVE', '2026-01-01 00:00:00')"
            ),
            {"s": secret},
        )
    with pytest.raises(RuntimeError, match="in plain text"):
        old.migrate()  # no KEK: the migration refuses instead of leaving plain text
    old.dispose()

    running = start_platform(data_dir, database_url)  # generates the KEK, seals, vacuums
    try:
        old_creds = {"mchid": "m0000000001", "key_id": "key_old", "secret": secret}
        assert signed_call(client_for(running, old_creds)) == (404, "PAYMENT_NOT_FOUND")
        assert_secret_not_in_database(running, secret)
    finally:
        running.stop()
    if database_url is None:
        content = b"".join(p.read_bytes() for p in data_dir.glob("paygrid.db*"))
        assert secret.encode() not in content


# --- rotation -----------------------------------------------------------------------------
def test_rotate_key_with_a_grace_period(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    old = create_merchant(running)
    old_client = client_for(running, old)
    assert signed_call(old_client) == (404, "PAYMENT_NOT_FOUND")

    rotated = running.paygrid(
        "merchant", "rotate-key", "--mchid", old["mchid"], "--grace-seconds", "8", "--json"
    )
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["mchid"] == old["mchid"] and new["key_id"] != old["key_id"]
    assert new["secret"] != old["secret"] and new["old_key_ids"] == [old["key_id"]]
    new_client = client_for(running, new)
    assert signed_call(new_client) == (404, "PAYMENT_NOT_FOUND")
    assert signed_call(old_client) == (404, "PAYMENT_NOT_FOUND")  # within the grace
    assert_secret_not_in_database(running, new["secret"])

    # Notifications are signed with the newest key, also during the grace.
    payment = new_client.create_payment(order(merchant)).json()
    pay(running, payment["code_url"])
    wait_until(lambda: len(merchant.received) >= 1, timeout=30)
    headers, body = merchant.received[0]
    assert verify_notification(new["secret"], headers, body)
    assert not verify_notification(old["secret"], headers, body)

    expires_at = datetime.fromisoformat(new["old_keys_expire_at"])
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 1.0)
    response = old_client.request("GET", "/v1/payments?out_trade_no=none-such")
    assert response.status_code == 401 and response.json()["code"] == "KEY_EXPIRED"
    assert signed_call(new_client) == (404, "PAYMENT_NOT_FOUND")
    forged = MerchantClient(running.api_url, old["mchid"], old["key_id"], "not-the-secret")
    assert forged.request("GET", "/v1/payments?out_trade_no=x").json()["code"] == (
        "SIGNATURE_INVALID"  # the expiry is told only to whoever holds the secret
    )

    unknown = running.paygrid("merchant", "rotate-key", "--mchid", "m0000000000", "--json")
    assert unknown.returncode == 2 and "no merchant m0000000000" in unknown.stderr
    negative = running.paygrid(
        "merchant", "rotate-key", "--mchid", old["mchid"], "--grace-seconds", "-1"
    )
    assert negative.returncode == 2 and "grace" in negative.stderr


# --- the production profile ---------------------------------------------------------------
def test_prod_profile_requires_a_kek(tmp_path: Path) -> None:
    refused = up_expecting_failure(tmp_path / "prod", {}, None, "--profile", "prod")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1, output
    assert "needs a key-encryption key" in output and "PAYGRID_KEK_FILE" in output
    assert not (tmp_path / "prod" / "keys").exists()  # nothing generated
    assert not (tmp_path / "prod" / "postgres").exists()  # refused before starting anything


@pytest.mark.postgres
def test_prod_profile_files_private_and_secrets_sealed_in_postgres(tmp_path: Path) -> None:
    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries not installed")
    running = start_prod_platform(tmp_path / "prod")
    try:
        wait_until(lambda: signed_call(running.client())[0] == 404, timeout=60)
        rotated = running.paygrid(
            "merchant", "rotate-key", "--mchid", running.credentials["mchid"], "--json"
        )
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)
        new_client = MerchantClient(running.api_url, new["mchid"], new["key_id"], new["secret"])
        assert signed_call(new_client) == (404, "PAYMENT_NOT_FOUND")
        for secret in (running.credentials["secret"], new["secret"]):
            assert_secret_not_in_database(running, secret)

        data_dir = running.data_dir
        assert (data_dir / "postgres" / "data" / "PG_VERSION").exists()
        assert (data_dir / "nats").is_dir()
        loose = loose_entries(data_dir)
        if os.geteuid() == 0:  # PostgreSQL runs as postgres and must pass through DIR
            top = data_dir.stat()
            assert stat.S_IMODE(top.st_mode) == 0o710
            assert grp.getgrgid(top.st_gid).gr_name == "postgres"
            loose = [entry for entry in loose if not entry.endswith(f" {data_dir}")]
        assert loose == []
    finally:
        running.stop()
