"""Settings reach the real processes: `paygrid up` (embedded and prod) and the other commands
take ports, data dir and profile from the environment and the configuration file, a flag
beats the environment, and a bad value stops a command naming where it came from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paygrid.channels import registry
from paygrid.config import env_name
from paygrid.kernel.ids import cell_of
from paygrid.ops.launch import PROD_PORTS, free_port_block, prod_layout
from paygrid.platform.bootstrap import create_kek_file
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import (
    MerchantReceiver,
    RunningPlatform,
    free_port,
    pg_bin,
    reachable_by_postgres,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


def clean_env(**settings: str) -> dict[str, str]:
    """Our environment without any PAYGRID_* variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGRID_")}
    return {**env, "PAYGRID_SCHEDULER_INTERVAL_S": "0.5", **settings}


def other_sandboxes() -> dict[str, str]:
    """A free port for the sandbox of every channel but the first (whose port a test picks)
    and for the bank sandbox, as configuration file keys: a test never starts a sandbox on a
    fixed port."""
    others = {f"{n}_base_url": f"http://127.0.0.1:{free_port()}" for n in registry.NAMES[1:]}
    return {**others, "bank_base_url": f"http://127.0.0.1:{free_port()}"}


def other_sandboxes_env() -> dict[str, str]:
    return {env_name(key): url for key, url in other_sandboxes().items()}


def write_config(path: Path, values: dict[str, object]) -> Path:
    lines = ["[paygrid]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def paygrid(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paygrid.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Up:
    """`paygrid up` started with exactly the given flags and environment, from ``cwd``."""

    def __init__(self) -> None:
        self.started: list[RunningPlatform] = []

    def __call__(
        self,
        cwd: Path,
        env: dict[str, str],
        data_dir: Path,
        ports: tuple[int, int, int],
        *flags: str,
    ) -> RunningPlatform:
        api, cashier, sandbox = ports
        log_path = cwd / f"up-{len(self.started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "paygrid.cli", "up", *flags],
            cwd=cwd,
            env=env,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        running = RunningPlatform(
            proc,
            data_dir,
            f"http://127.0.0.1:{api}",
            f"http://127.0.0.1:{cashier}",
            f"http://127.0.0.1:{sandbox}",
            None,
            log_path,
        )
        self.started.append(running)
        try:
            wait_http(f"{running.api_url}/healthz", timeout=90, proc=proc)
            wait_http(f"{running.cashier_url}/readyz", timeout=30, proc=proc)
        except Exception as exc:
            raise AssertionError(
                f"paygrid up did not answer: {exc}\n{running.log()[-3000:]}"
            ) from None
        return running


@pytest.fixture
def up() -> Iterator[Up]:
    launcher = Up()
    yield launcher
    for running in launcher.started:
        running.stop()


def refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
    except httpx.ConnectError:
        return True
    return False


def ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def assert_serves(running: RunningPlatform, tmp_path: Path) -> None:
    """The API answers signed requests with the demo merchant kept in the data dir."""
    assert (running.data_dir / "paygrid.db").exists()
    assert not (tmp_path / "var").exists(), "the default data dir was used"
    client = running.client()  # credentials from DATA/demo-merchant.json
    assert client.get_payment("pay_00000000000000000000000000").status_code == 404


def test_up_takes_ports_and_data_dir_from_the_environment(up: Up, tmp_path: Path) -> None:
    api, cashier, sandbox = ports()
    data = tmp_path / "from-env"
    env = clean_env(
        PAYGRID_API_PORT=str(api),
        PAYGRID_CASHIER_PORT=str(cashier),
        PAYGRID_DATA_DIR=str(data),
        PAYGRID_WECHATPAY_BASE_URL=f"http://127.0.0.1:{sandbox}",
        **other_sandboxes_env(),
    )
    running = up(tmp_path, env, data, (api, cashier, sandbox))
    assert_serves(running, tmp_path)
    assert httpx.get(f"{running.sandbox_url}/sandbox/credentials").status_code == 200


def test_up_takes_them_from_the_configuration_file(up: Up, tmp_path: Path) -> None:
    api, cashier, sandbox = ports()
    data = tmp_path / "from-file"
    cfg = write_config(
        tmp_path / "paygrid.toml",
        {
            "api_port": api,
            "CASHIER_PORT": cashier,
            "data_dir": str(data),
            "wechatpay_base_url": f"http://127.0.0.1:{sandbox}",
            **other_sandboxes(),
        },
    )
    running = up(tmp_path, clean_env(PAYGRID_CONFIG=str(cfg)), data, (api, cashier, sandbox))
    assert_serves(running, tmp_path)


def test_flag_beats_environment_beats_file(up: Up, tmp_path: Path) -> None:
    (api_file, api_env, api_flag), (cashier_file, cashier_env) = ports(), ports()[:2]
    sandbox = free_port()
    file_dir, env_dir = tmp_path / "file-dir", tmp_path / "env-dir"
    cfg = write_config(
        tmp_path / "paygrid.toml",
        {
            "api_port": api_file,
            "cashier_port": cashier_file,
            "data_dir": str(file_dir),
            "wechatpay_base_url": f"http://127.0.0.1:{sandbox}",
            **other_sandboxes(),
        },
    )
    env = clean_env(
        PAYGRID_API_PORT=str(api_env),
        PAYGRID_CASHIER_PORT=str(cashier_env),
        PAYGRID_DATA_DIR=str(env_dir),
        PAYGRID_CONFIG=str(tmp_path / "not-this.toml"),  # --config beats it
    )
    running = up(
        tmp_path,
        env,
        env_dir,
        (api_flag, cashier_env, sandbox),
        "--api-port",
        str(api_flag),
        "--config",
        str(cfg),
    )
    assert_serves(running, tmp_path)
    assert refused(api_file) and refused(api_env) and refused(cashier_file)
    assert not file_dir.exists()


# --- the other commands --------------------------------------------------------------------
def test_commands_find_the_data_dir_and_database_by_environment_and_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(PAYGRID_DATA_DIR=str(data))
    created = paygrid(tmp_path, env, "merchant", "create", "--name", "M", "--json")
    assert created.returncode == 0, created.stderr
    assert (data / "paygrid.db").exists() and not (tmp_path / "var").exists()
    mchid = json.loads(created.stdout)["mchid"]

    cfg = write_config(tmp_path / "paygrid.toml", {"data_dir": str(data)})
    by_file = clean_env(PAYGRID_CONFIG=str(cfg))
    checked = paygrid(tmp_path, by_file, "check")
    assert checked.returncode == 0 and "invariants hold" in checked.stdout, checked.stderr
    listed = paygrid(
        tmp_path, by_file, "notifications", "list", "--mchid", mchid, "--payment-id", "pay_x"
    )
    assert listed.returncode == 0, listed.stderr

    # A flag beats the environment: an empty dir has no database.
    empty = tmp_path / "empty"
    flagged = paygrid(tmp_path, env, "check", "--data-dir", str(empty))
    assert flagged.returncode == 2 and str(empty / "paygrid.db") in flagged.stderr

    migrated_db = tmp_path / "other.db"
    migrated = paygrid(
        tmp_path, clean_env(PAYGRID_DATABASE_URL=f"sqlite:///{migrated_db}"), "migrate"
    )
    assert migrated.returncode == 0 and migrated_db.exists(), migrated.stderr

    (data / "status.json").write_text(
        json.dumps(
            {
                "at": 0,
                "processes": [
                    {
                        "name": "relay",
                        "pid": 1,
                        "alive": False,
                        "uptime_s": 0,
                        "restarts": 0,
                        "last_exit": None,
                    }
                ],
            }
        )
    )
    status = paygrid(tmp_path, by_file, "status")
    assert status.returncode == 0 and "relay" in status.stdout, status.stderr

    offline = f"http://127.0.0.1:{free_port()}"  # no sandbox there: the stored credentials
    creds = paygrid(
        tmp_path,
        clean_env(PAYGRID_DATA_DIR=str(data), PAYGRID_WECHATPAY_BASE_URL=offline),
        "sandbox",
        "credentials",
        "wechatpay",
        "--json",
    )
    assert creds.returncode == 0, creds.stderr
    assert (data / "sandbox" / "wechatpay").is_dir()


COMMANDS = [
    ("up",),
    ("run", "api"),
    ("check",),
    ("migrate",),
    ("merchant", "create", "--name", "M"),
    ("notifications", "list", "--mchid", "m", "--payment-id", "p"),
    ("notifications", "resend", "n"),
    ("status",),
    ("sandbox", "credentials", "wechatpay"),
    ("sandbox", "serve", "wechatpay"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_bad_value_stops_every_command_naming_its_source(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    bad_env = paygrid(tmp_path, clean_env(PAYGRID_CELL="abc"), *command, timeout=60)
    assert bad_env.returncode == 2, bad_env.stdout + bad_env.stderr
    assert "configuration error: PAYGRID_CELL = 'abc': not an integer" in bad_env.stderr
    assert "Traceback" not in bad_env.stderr

    cfg = tmp_path / "paygrid.toml"
    cfg.write_text("[paygrid]\napi_prot = 9000\n")
    bad_file = paygrid(tmp_path, clean_env(PAYGRID_CONFIG=str(cfg)), *command, timeout=60)
    assert bad_file.returncode == 2, bad_file.stdout + bad_file.stderr
    assert f"configuration error: {cfg}: [paygrid] unknown key 'api_prot'" in bad_file.stderr
    assert "Traceback" not in bad_file.stderr
    assert not (tmp_path / "var").exists()


def test_the_profile_from_the_file_decides_which_ports_must_differ(tmp_path: Path) -> None:
    """The gateway exists only in the production profile: sharing the API's port is an error
    there and nothing in the embedded profile, whichever source names the profile."""
    cfg = write_config(
        tmp_path / "paygrid.toml", {"profile": "prod", "api_port": 18000, "gateway_port": 18000}
    )
    prod = paygrid(tmp_path, clean_env(PAYGRID_CONFIG=str(cfg)), "status")
    assert prod.returncode == 2
    assert "api_port" in prod.stderr and f"{cfg}: [paygrid] gateway_port" in prod.stderr
    embedded = paygrid(
        tmp_path, clean_env(PAYGRID_CONFIG=str(cfg), PAYGRID_PROFILE="embedded"), "status"
    )
    assert (
        embedded.returncode == 2 and "no " in embedded.stderr and "status.json" in embedded.stderr
    )
    assert "configuration error" not in embedded.stderr


# --- the production profile, chosen by the environment, configured by the file -------------
@pytest.mark.postgres
def test_prod_profile_from_environment_with_ports_from_file(
    tmp_path: Path, merchant: MerchantReceiver
) -> None:
    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI")
        pytest.skip("PostgreSQL binaries not installed")
    # Outside pytest's folders: other pytest sessions reset their permissions to 0700, and
    # PostgreSQL (run as the postgres user when we are root) must reach its data dir.
    data = Path(tempfile.mkdtemp(prefix="paygrid-settings-prod-"))
    reachable_by_postgres(data)
    layout = prod_layout(free_port_block(PROD_PORTS))
    kek = tmp_path / "kek"
    create_kek_file(kek)
    cfg = write_config(
        tmp_path / "paygrid.toml",
        {
            **{k: int(v) if v.isdigit() else v for k, v in layout.items()},
            "data_dir": str(data),
            "cell": 7,
            "notify_retry_scale": 0.01,
            "kek_file": str(kek),  # the production profile requires a KEK (docs/production.md)
            "notify_allow_networks": "127.0.0.0/8",  # the test's merchant is on the loopback
        },
    )
    env = clean_env(PAYGRID_PROFILE="prod", PAYGRID_CONFIG=str(cfg))
    log_path = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "paygrid.cli", "up"],  # no flag at all
        cwd=tmp_path,
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{layout['api_port']}"
    running = RunningPlatform(proc, data, api, "", layout["wechatpay_base_url"], None, log_path)
    try:
        wait_until(lambda: (data / "profile.json").exists() or proc.poll() is not None, 150)
        assert proc.poll() is None, running.log()[-4000:]
        status = paygrid(tmp_path, env, "status")
        assert status.returncode == 0, status.stderr
        for role in ("postgres", "nats", "api", "gateway", "core", "relay", "ledger", "notifier"):
            assert role in status.stdout
        body = json.loads((data / "status.json").read_text())
        assert all(p["alive"] for p in body["processes"]), body
        ops = int(layout["ops_base_port"])
        for port in (int(layout["gateway_port"]), *range(ops, ops + 5)):
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200

        # The roles got the file's settings: the API's ids carry cell 7, the channel calls
        # back the gateway on the file's port, the notifier delivers.
        client = running.client()
        created = client.create_payment(order(merchant))
        assert created.status_code == 201, created.text
        payment = created.json()
        assert cell_of(payment["payment_id"]) == 7
        pay(running, payment["code_url"])
        wait_status(client, payment["payment_id"], "SUCCESS", timeout=60)
        wait_until(lambda: len(merchant.received) >= 1, timeout=60)
        assert not (tmp_path / "var").exists()
    finally:
        running.stop()
        shutil.rmtree(data, ignore_errors=True)
