"""Configuration: one resolution for every command (docs/configuration.md).

Every field of :class:`Settings` is one setting, named ``PAYGRID_<FIELD>`` in the environment,
``<field>`` (any case) in the ``[paygrid]`` table of the configuration file, and
``--<field-with-dashes>`` where a command offers it as a flag. Precedence, per setting:
flags > environment > file (``--config`` / ``PAYGRID_CONFIG``) > defaults. Defaults that
differ by profile (``setting(..., prod=...)``) are taken after the profile is resolved.

Adding a setting is one line here (and one row in docs/configuration.md)::

    notify_allow_networks: tuple[str, ...] = setting(("127.0.0.0/8",), prod=())
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from paygrid.config_parse import CONFIG_TABLE, Check, parse, read_config_file
from paygrid.config_parse import ConfigError as ConfigError  # raised by resolve()
from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "PAYGRID_"
CONFIG_ENV = "PAYGRID_CONFIG"
PROFILES = ("embedded", "prod")
OPS_PORTS = 9  # prod: ops_base_port + 0..4 the workers, + 5..7 api, cashier, gateway, + 8 recon


T = TypeVar("T")
_NO_PROD = object()


def setting(
    default: T,
    *,
    prod: object = _NO_PROD,
    check: Check | None = None,
    empty: bool = False,
    secret: bool = False,
) -> T:
    """A settings field: ``default`` (the embedded profile's), ``prod`` the production
    profile's default when it differs, ``check`` a validation beyond the type. ``empty``: an
    empty value is meaningful (e.g. "no networks") instead of counting as unset. ``secret``:
    never shown (repr, error messages)."""
    metadata = {"prod": prod, "check": check, "empty": empty, "secret": secret}
    field: T = dataclasses.field(default=default, metadata=metadata, repr=not secret)
    return field


def port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "not a TCP port (1-65535)"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def one_of(*allowed: str) -> Check:
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


def _zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return "not a time zone name (e.g. Asia/Shanghai)"
    return None


def _cell(value: int) -> str | None:
    return None if 0 <= value <= 255 else "must be 0-255"


def _ops_base(value: int) -> str | None:
    last = 65535 - (OPS_PORTS - 1)
    return None if 1 <= value <= last else f"not a TCP port (1-{last}: {OPS_PORTS} ports from it)"


MAX_COPIES = 8  # prod: copies of one role at most


def parse_copies(value: str) -> dict[str, int]:
    """``api=2,notifier=2`` -> {"api": 2, "notifier": 2}; raises ValueError."""
    copies: dict[str, int] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        role, sep, count = part.partition("=")
        if not sep or not role.strip() or not count.strip().isdigit():
            raise ValueError(f"{part.strip()!r} is not ROLE=N (e.g. api=2,notifier=2)")
        n = int(count)
        if not 1 <= n <= MAX_COPIES:
            raise ValueError(f"{role.strip()}={n}: copies must be 1-{MAX_COPIES}")
        copies[role.strip()] = n
    return copies


def _copies(value: str) -> str | None:
    from paygrid.platform.workers import ROLE_NAMES, SCALABLE_ROLES

    try:
        copies = parse_copies(value)
    except ValueError as exc:
        return str(exc)
    for role, n in copies.items():
        if role not in ROLE_NAMES:
            return f"{role!r} is not a role ({', '.join(ROLE_NAMES)})"
        if n > 1 and role not in SCALABLE_ROLES:
            return f"{role} runs in one copy; roles that scale: {', '.join(SCALABLE_ROLES)}"
    return None


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    return None if parts.scheme in ("http", "https") and parts.hostname else "not an http(s) URL"


def _database_url(value: str) -> str | None:
    if value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
        return None
    return "must start with postgresql:// or sqlite:///"


def _networks(value: str) -> str | None:
    from ipaddress import ip_network

    for part in value.split(","):
        try:
            if part.strip():
                ip_network(part.strip(), strict=True)
        except ValueError:
            return f"{part.strip()!r} is not a network in CIDR form (e.g. 10.20.0.0/16)"
    return None


def _nats_url(value: str) -> str | None:
    return None if urlsplit(value).scheme in ("nats", "tls") else "must start with nats://"


def _ppm(value: int) -> str | None:
    return None if 0 <= value <= 1_000_000 else "must be 0-1000000 (parts per million)"


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """One channel's settings, named ``PAYGRID_<CHANNEL>_<FIELD>`` (``<channel>_<field>`` in
    the file, ``--<channel>-<field>`` as a flag) for every channel of the registry; defaults
    from its registry entry."""

    base_url: str = setting("", check=_http_url)  # default: its sandbox on loopback
    credentials: Path | None = setting(None)  # None: fetch from the sandbox's credentials
    fee_rate_ppm: int = setting(0, check=_ppm)  # what the channel charges us (0.20% = 2000)

    @property
    def credentials_file(self) -> Path | None:
        return self.credentials


def _channel_defaults() -> dict[str, dict[str, object]]:
    from paygrid.channels import registry

    return {
        c.name: {"base_url": c.default_base_url, "fee_rate_ppm": c.fee_rate_ppm}
        for c in registry.CHANNELS
    }


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = setting(Path("var"))
    database_url: str | None = setting(None, check=_database_url)  # None: SQLite in data_dir
    host: str = setting("127.0.0.1")
    api_port: int = setting(8000, check=port)
    cashier_port: int = setting(8001, check=port)
    ops_port: int = setting(8009, check=port)  # embedded: /healthz /readyz /metrics
    background_ops_port: int = setting(8010, check=port)  # embedded: the workers' /metrics
    zone: str = setting(DEFAULT_BUSINESS_ZONE, check=_zone)
    cell: int = setting(0, check=_cell)
    # Start the sandbox of every channel without a credentials file (default: true unless
    # every channel has one).
    run_sandboxes: bool = setting(True)
    # The bank that holds the reserve account (备付金): its statement API (default: the bank
    # sandbox, started with the channels' sandboxes) and the key file it gave us.
    bank_base_url: str = setting("http://127.0.0.1:8105", check=_http_url)
    bank_credentials: Path | None = setting(None)  # None: from the bank sandbox
    notify_retry_scale: float = setting(1.0, check=positive)
    recovery_after_s: float = setting(30.0, check=positive)  # 补单 after this much silence
    scheduler_interval_s: float = setting(5.0, check=positive)
    # Reconciliation as a job (the recon role; the embedded profile's background process):
    # a pass every recon_interval_s over the last recon_lookback_days business dates.
    recon_schedule: bool = setting(True)  # false: recon runs only when a person runs it
    recon_interval_s: float = setting(300.0, check=positive)
    recon_lookback_days: int = setting(5, check=lambda v: None if 1 <= v <= 31 else "1-31 days")
    # A date's bill is fetched from this many seconds after the date's end (default: each
    # channel's own bill-ready time); 0 or less makes a date's bill due during the date itself
    # (demos and tests with a sandbox's close-day).
    recon_bill_ready_after_s: float | None = setting(None)
    profile: str = setting("embedded", check=one_of(*PROFILES))
    nats_url: str | None = setting(None, check=_nats_url)  # prod: None starts a nats-server
    gateway_port: int = setting(8002, check=port)  # prod: the channel gateway (callbacks)
    ops_base_port: int = setting(9100, check=_ops_base)  # prod: each process's /metrics
    # prod: more copies of a stateless role (ROLE=N,...), e.g. api=2,notifier=2 (docs/scaling.md)
    copies: str = setting("", check=_copies, empty=True)
    # prod: copy k >= 2 of a role serves /metrics on copy_ops_base_port + (k-2)*OPS_PORTS + offset
    copy_ops_base_port: int = setting(9200, check=_ops_base)
    pg_port: int = setting(55432, check=port)  # prod: the PostgreSQL paygrid starts itself
    nats_port: int = setting(4222, check=port)  # prod: the nats-server paygrid starts itself
    # Networks a notify_url may reach although internal (CIDRs, comma-separated); empty: none.
    notify_allow_networks: str = setting("127.0.0.0/8", prod="", check=_networks, empty=True)
    kek_file: Path | None = setting(None)  # key-encryption key file; embedded: DATA/keys/kek
    kek: str | None = setting(None, secret=True)  # or the KEK itself, base64 of 32 bytes
    # Per channel of the registry, resolved like the rest (ChannelSettings).
    channels: Mapping[str, ChannelSettings] = dataclasses.field(
        default_factory=lambda: {
            name: ChannelSettings(**defaults)  # type: ignore[arg-type]
            for name, defaults in _channel_defaults().items()
        }
    )

    def sandboxed(self, channel: str) -> bool:
        """Whether ``paygrid up`` starts this channel's sandbox."""
        return self.run_sandboxes and self.channels[channel].credentials is None

    @property
    def bank_sandboxed(self) -> bool:
        """Whether ``paygrid up`` starts the bank sandbox (the reserve account's bank)."""
        return self.run_sandboxes and self.bank_credentials is None

    def copies_of(self, role: str) -> int:
        """How many copies of a production role run (the ``copies`` setting; default 1)."""
        return parse_copies(self.copies).get(role, 1)

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


# --- resolution -------------------------------------------------------------------------------
def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve(
    flags: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """The settings of one command: defaults < file < environment < ``flags``.

    ``flags`` holds only options given on the command line (a command's options default to
    None, meaning "not given"); its ``config`` key is the ``--config`` file. Raises
    :class:`ConfigError` naming the source of the first bad value."""
    flags = flags or {}
    env = os.environ if env is None else env
    channel_keys = {
        f"{name}_{f}": name for name in _channel_defaults() for f in setting_names(ChannelSettings)
    }
    known = set(setting_names(Settings)) | set(channel_keys)
    unknown = set(flags) - known - {"config"}
    if unknown:
        raise TypeError(f"no such settings: {sorted(unknown)}")
    file_path = flags.get("config") or env.get(CONFIG_ENV) or None
    file_values = read_config_file(Path(str(file_path)), known) if file_path else {}
    values, sources = resolve_fields(Settings, flags, env, file_values=file_values)
    channels: dict[str, ChannelSettings] = {}
    for name, defaults in _channel_defaults().items():
        found, where = resolve_fields(
            ChannelSettings,
            flags,
            env,
            prefix=f"{name}_",
            defaults=defaults,
            file_values=file_values,
        )
        channels[name] = ChannelSettings(**found)
        sources.update({f"{name}_{k}": v for k, v in where.items()})
    if sources["run_sandboxes"] == "default":  # real credentials mean a real channel
        values["run_sandboxes"] = any(c.credentials is None for c in channels.values())
    settings = Settings(**values, channels=channels)
    _check_ports(settings, sources)
    return settings


S = TypeVar("S", bound="DataclassInstance")


def setting_names(cls: type[DataclassInstance]) -> list[str]:
    """The fields of a settings dataclass that are settings (made by :func:`setting`)."""
    return [f.name for f in dataclasses.fields(cls) if "secret" in f.metadata]


def resolve_fields(
    cls: type[S],
    flags: Mapping[str, object],
    env: Mapping[str, str],
    *,
    prefix: str = "",
    defaults: Mapping[str, object] | None = None,
    file_values: Mapping[str, object] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Field values of the settings dataclass ``cls`` and where each came from; each field
    is known as ``prefix + name`` (a channel's settings: ``<channel>_base_url``...)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "secret" in f.metadata}
    hints = typing.get_type_hints(cls)
    file_path = flags.get("config") or env.get(CONFIG_ENV) or None
    if file_values is None:
        unknown = set(flags) - {prefix + n for n in fields} - {"config"}
        if unknown:
            raise TypeError(f"no such settings: {sorted(unknown)}")
        known = {prefix + n for n in fields}
        file_values = read_config_file(Path(str(file_path)), known) if file_path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in fields:
        empty_ok = bool(fields[name].metadata.get("empty"))
        given = _given(prefix + name, flags, env, file_values, file_path, empty_ok)
        if given is None:
            continue
        source, raw = given
        values[name] = parse(source, raw, hints[name], fields[name].metadata)
        sources[name] = source
    profile = values.get("profile", fields["profile"].default) if "profile" in fields else None
    for name, f in fields.items():
        if name not in values:
            prod = f.metadata.get("prod", _NO_PROD)
            default = (defaults or {}).get(name, f.default)
            values[name] = prod if profile == "prod" and prod is not _NO_PROD else default
            sources[name] = "default"
    return values, sources


def _given(
    name: str,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    file_values: Mapping[str, object],
    file_path: object,
    empty_ok: bool = False,
) -> tuple[str, object] | None:
    if flags.get(name) is not None:
        return flag_name(name), flags[name]
    if env.get(env_name(name), "") != "" or (empty_ok and env_name(name) in env):
        # an empty variable counts as unset, unless empty means something for this setting
        return env_name(name), env[env_name(name)]
    if name in file_values:
        return f"{file_path}: [{CONFIG_TABLE}] {name}", file_values[name]
    return None


def _check_ports(s: Settings, sources: Mapping[str, str]) -> None:
    """No two things this profile listens on may share a port."""
    used: dict[str, int] = {"api_port": s.api_port, "cashier_port": s.cashier_port}
    if s.profile != "prod":
        used["ops_port"] = s.ops_port
        used["background_ops_port"] = s.background_ops_port
    sandboxes = {
        f"{name}_base_url": c.base_url for name, c in s.channels.items() if s.sandboxed(name)
    }
    if s.bank_sandboxed:
        sandboxes["bank_base_url"] = s.bank_base_url
    for key, url in sandboxes.items():
        sandbox = urlsplit(url).port
        if sandbox is None:
            raise ConfigError(f"{sources[key]} = {url!r}: needs a port (the sandbox listens on it)")
        used[key] = sandbox
    if s.profile == "prod":
        used["gateway_port"] = s.gateway_port
        used.update({f"ops_base_port+{i}": s.ops_base_port + i for i in range(OPS_PORTS)})
        extra = max(parse_copies(s.copies).values(), default=1) - 1
        base = s.copy_ops_base_port
        used.update({f"copy_ops_base_port+{i}": base + i for i in range(OPS_PORTS * extra)})
        if s.database_url is None:
            used["pg_port"] = s.pg_port
        if s.nats_url is None:
            used["nats_port"] = s.nats_port
    seen: dict[int, str] = {}
    for name, number in used.items():
        if number in seen:
            first = seen[number]
            raise ConfigError(
                f"{_source(first, sources)} and {_source(name, sources)} are both port {number}"
            )
        seen[number] = name


def _source(name: str, sources: Mapping[str, str]) -> str:
    field = name.split("+")[0]
    return f"{name} ({sources.get(field, 'default')})"


def to_env(s: Settings) -> dict[str, str]:
    """Every setting as PAYGRID_* variables (unset ones absent): what a child process needs
    to resolve exactly these settings from its environment alone."""
    out = {env_name(name): _env_text(getattr(s, name)) for name in setting_names(Settings)}
    for channel, cs in s.channels.items():
        for name in setting_names(ChannelSettings):
            out[env_name(f"{channel}_{name}")] = _env_text(getattr(cs, name))
    return {k: v for k, v in out.items() if v is not None}


def _env_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def child_env(s: Settings, inherited: Mapping[str, str]) -> dict[str, str]:
    """``inherited`` without any setting or config file variable, plus ``s`` as variables."""
    names = {env_name(n) for n in setting_names(Settings)} | {CONFIG_ENV}
    names |= {
        env_name(f"{channel}_{n}") for channel in s.channels for n in setting_names(ChannelSettings)
    }
    kept = {k: v for k, v in inherited.items() if k not in names}
    return {**kept, **to_env(s)}
