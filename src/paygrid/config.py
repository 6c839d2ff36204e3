"""Configuration: defaults for the embedded profile, overridden by PAYGRID_* environment
variables (documented in docs/configuration.md) and CLI flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    base_url: str
    fee_rate_ppm: int  # what the channel charges us (0.20% = 2000)
    credentials_file: Path | None = None  # None: fetch from the sandbox's /sandbox/credentials


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str | None = None  # None: SQLite under data_dir
    host: str = "127.0.0.1"
    api_port: int = 8000
    cashier_port: int = 8001
    zone: str = DEFAULT_BUSINESS_ZONE
    cell: int = 0
    run_sandboxes: bool = True
    notify_retry_scale: float = 1.0
    recovery_after_s: float = 30.0  # 补单: query PAYING payments silent for this long
    scheduler_interval_s: float = 5.0
    profile: str = "embedded"  # embedded | prod
    nats_url: str | None = None  # prod: None starts a nats-server under the data dir
    gateway_port: int = 8002  # prod: the channel gateway (callbacks)
    ops_base_port: int = 9100  # prod: worker processes serve /healthz /readyz /metrics here
    pg_port: int = 55432  # prod: port of the PostgreSQL paygrid starts itself
    nats_port: int = 4222  # prod: port of the nats-server paygrid starts itself
    kek_file: Path | None = None  # key-encryption key file; embedded default DATA/keys/kek
    kek: str | None = field(default=None, repr=False)  # or the KEK itself, base64 of 32 bytes
    channels: dict[str, ChannelSettings] = field(
        default_factory=lambda: {"wechatpay": ChannelSettings("http://127.0.0.1:8101", 2000)}
    )

    @property
    def api_base_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def cashier_base_url(self) -> str:
        return f"http://{self.host}:{self.cashier_port}"

    @property
    def callback_base_url(self) -> str:
        """Where channels send callbacks: the gateway in prod, the API port when embedded."""
        port = self.gateway_port if self.profile == "prod" else self.api_port
        return f"http://{self.host}:{port}"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'paygrid.db').resolve()}"


def _env(name: str, file_values: dict[str, str] | None = None) -> str | None:
    value = os.environ.get(f"PAYGRID_{name}")
    if value in (None, "") and file_values:
        value = file_values.get(name)
    return value if value not in (None, "") else None


def read_config_file(path: Path) -> dict[str, str]:
    """A TOML file whose [paygrid] keys are the variable names without PAYGRID_, any case:
    ``database_url = "postgresql://…"``. The environment overrides it."""
    with path.open("rb") as f:
        table = tomllib.load(f).get("paygrid", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [paygrid] must be a table")
    return {str(k).upper(): str(v) for k, v in table.items()}


def load(
    data_dir: Path | None = None, config_file: Path | None = None, **overrides: object
) -> Settings:
    """Defaults < config file < environment < explicit overrides (CLI flags)."""
    s = Settings()
    file_values = read_config_file(config_file) if config_file else {}
    if config_file is None and _env("CONFIG"):
        file_values = read_config_file(Path(str(_env("CONFIG"))))
    env_map = {
        "data_dir": ("DATA_DIR", Path),
        "database_url": ("DATABASE_URL", str),
        "api_port": ("API_PORT", int),
        "cashier_port": ("CASHIER_PORT", int),
        "zone": ("ZONE", str),
        "cell": ("CELL", int),
        "notify_retry_scale": ("NOTIFY_RETRY_SCALE", float),
        "recovery_after_s": ("RECOVERY_AFTER_S", float),
        "scheduler_interval_s": ("SCHEDULER_INTERVAL_S", float),
        "profile": ("PROFILE", str),
        "nats_url": ("NATS_URL", str),
        "gateway_port": ("GATEWAY_PORT", int),
        "ops_base_port": ("OPS_BASE_PORT", int),
        "pg_port": ("PG_PORT", int),
        "nats_port": ("NATS_PORT", int),
        "kek_file": ("KEK_FILE", Path),
        "kek": ("KEK", str),
    }
    for attr, (name, cast) in env_map.items():
        raw = _env(name, file_values)
        if raw is not None:
            s = replace(s, **{attr: cast(raw)})
    wx_url = _env("WECHATPAY_BASE_URL", file_values)
    wx_creds = _env("WECHATPAY_CREDENTIALS", file_values)
    if wx_url or wx_creds:
        base = s.channels["wechatpay"]
        s = replace(
            s,
            channels={
                **s.channels,
                "wechatpay": replace(
                    base,
                    base_url=wx_url or base.base_url,
                    credentials_file=Path(wx_creds) if wx_creds else None,
                ),
            },
        )
    # Real credentials mean a real gateway: no sandbox unless asked for.
    run_sandboxes = _env("RUN_SANDBOXES", file_values)
    s = replace(
        s, run_sandboxes=run_sandboxes not in ("0", "false") if run_sandboxes else wx_creds is None
    )
    if data_dir is not None:
        s = replace(s, data_dir=data_dir)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(s, **clean)  # type: ignore[arg-type]
