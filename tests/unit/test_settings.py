"""Settings resolution (config.resolve): for every setting, the default, the configuration
file, the environment over the file and a flag over the environment; bad values name their
source; the production profile's own defaults; children resolve exactly their parent's."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paygrid import config
from paygrid.channels import registry
from paygrid.config import (
    ChannelSettings,
    ConfigError,
    Settings,
    env_name,
    flag_name,
    resolve,
    setting,
)

ROOT = Path(__file__).resolve().parents[2]

# Three valid values per setting: the configuration file's (not the default), the
# environment's (not the file's), the flag's (not the environment's).
SAMPLES: dict[str, tuple[object, object, object]] = {
    "data_dir": (Path("/srv/pg-file"), Path("/srv/pg-env"), Path("/srv/pg-flag")),
    "database_url": (
        "postgresql://file@127.0.0.1:1/a",
        "postgresql://env@127.0.0.1:1/b",
        "sqlite:////srv/flag.db",
    ),
    "host": ("127.0.0.2", "127.0.0.3", "127.0.0.4"),
    "api_port": (18000, 18001, 18002),
    "cashier_port": (18010, 18011, 18012),
    "ops_port": (18030, 18031, 18032),
    "background_ops_port": (18040, 18041, 18042),
    "zone": ("UTC", "Europe/Paris", "Asia/Tokyo"),
    "cell": (1, 2, 3),
    "run_sandboxes": (False, True, False),
    "notify_retry_scale": (0.5, 0.25, 0.125),
    "recovery_after_s": (1.5, 2.5, 3.5),
    "scheduler_interval_s": (0.5, 0.75, 2.0),
    "recon_schedule": (False, True, False),
    "recon_interval_s": (60.0, 120.0, 30.0),
    "recon_lookback_days": (2, 7, 3),
    "recon_bill_ready_after_s": (3600.0, -86400.0, 0.0),
    "profile": ("prod", "embedded", "prod"),
    "nats_url": ("nats://127.0.0.1:1", "nats://127.0.0.1:2", "tls://127.0.0.1:3"),
    "gateway_port": (18020, 18021, 18022),
    "ops_base_port": (19100, 19200, 19300),
    "copies": ("api=2", "notifier=3", "ledger=2,api=2"),
    "copy_ops_base_port": (19400, 19500, 19600),
    "pg_port": (15432, 15433, 15434),
    "nats_port": (14222, 14223, 14224),
    "kek_file": (Path("/srv/kek-file"), Path("/srv/kek-env"), Path("/srv/kek-flag")),
    "kek": (
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
        "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=",
    ),
    "notify_allow_networks": ("10.1.0.0/16", "10.2.0.0/16", "192.168.0.0/24,10.3.0.0/16"),
    "bank_base_url": ("http://127.0.0.1:18105", "http://127.0.0.1:18106", "http://127.0.0.1:18107"),
    "bank_credentials": (
        Path("/srv/bank-file.json"),
        Path("/srv/bank-env.json"),
        Path("/srv/b.json"),
    ),
}
# Every channel of the registry has the same settings, PAYGRID_<CHANNEL>_<FIELD>.
for _i, _name in enumerate(registry.NAMES):
    SAMPLES[f"{_name}_base_url"] = tuple(
        f"http://127.0.0.1:{18200 + 10 * _i + k}" for k in range(3)
    )  # type: ignore[assignment]
    SAMPLES[f"{_name}_credentials"] = tuple(
        Path(f"/srv/{_name}-{k}.json") for k in ("file", "env", "flag")
    )  # type: ignore[assignment]
    SAMPLES[f"{_name}_fee_rate_ppm"] = (1000, 1500, 2500)
CHANNEL_FIELDS = {
    f"{name}_{field}": (name, field)
    for name in registry.NAMES
    for field in config.setting_names(ChannelSettings)
}
FIELDS = [*config.setting_names(Settings), *CHANNEL_FIELDS]


def value_of(s: Settings, name: str) -> object:
    if name in CHANNEL_FIELDS:
        channel, field = CHANNEL_FIELDS[name]
        return getattr(s.channels[channel], field)
    return getattr(s, name)


def default_of(name: str) -> object:
    return value_of(Settings(), name)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_config(path: Path, values: dict[str, object]) -> Path:
    lines = ["[paygrid]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_setting_has_samples_and_documentation() -> None:
    missing = set(FIELDS) - set(SAMPLES)
    assert not missing, f"add three sample values for {missing} to SAMPLES"
    docs = (ROOT / "docs" / "configuration.md").read_text()
    undocumented = [env_name(name) for name in FIELDS if f"`{env_name(name)}`" not in docs]
    assert not undocumented, f"docs/configuration.md lacks {undocumented}"


@pytest.mark.parametrize("name", FIELDS)
def test_each_setting_through_each_source(name: str, tmp_path: Path) -> None:
    file_value, env_val, flag_value = SAMPLES[name]
    default = default_of(name)
    assert value_of(resolve({}, {}), name) == default
    assert default != file_value != env_val != flag_value  # each step is visible

    cfg = write_config(tmp_path / "paygrid.toml", {name: file_value})
    from_file = resolve({}, {config.CONFIG_ENV: str(cfg)})
    assert value_of(from_file, name) == file_value
    assert value_of(resolve({"config": cfg}, {}), name) == file_value

    env = {config.CONFIG_ENV: str(cfg), env_name(name): env_value(env_val)}
    assert value_of(resolve({}, env), name) == env_val

    assert value_of(resolve({name: flag_value}, env), name) == flag_value
    # Flags that were not given (None) override nothing.
    assert value_of(resolve({name: None, "config": None}, env), name) == env_val


def test_file_keys_in_any_case_and_config_flag_beats_variable(tmp_path: Path) -> None:
    used = write_config(tmp_path / "used.toml", {"API_PORT": 18000, "Profile": "prod"})
    ignored = write_config(tmp_path / "ignored.toml", {"api_port": 18005})
    s = resolve({"config": used}, {config.CONFIG_ENV: str(ignored)})
    assert (s.api_port, s.profile) == (18000, "prod")


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"api_port": 18000})
    assert resolve({}, {config.CONFIG_ENV: str(cfg), "PAYGRID_API_PORT": ""}).api_port == 18000


def test_real_channel_credentials_turn_the_sandbox_off_unless_asked() -> None:
    assert resolve({}, {}).run_sandboxes is True
    first, *others = registry.NAMES
    one = {f"PAYGRID_{first.upper()}_CREDENTIALS": "/srv/one.json"}
    s = resolve({}, one)
    assert not s.sandboxed(first) and all(s.sandboxed(name) for name in others)
    assert s.run_sandboxes is bool(others)
    every = {f"PAYGRID_{name.upper()}_CREDENTIALS": f"/srv/{name}.json" for name in registry.NAMES}
    assert resolve({}, every).run_sandboxes is False
    assert resolve({}, {**every, "PAYGRID_RUN_SANDBOXES": "1"}).run_sandboxes is True


@pytest.mark.parametrize("name", registry.NAMES)
def test_channel_settings_reach_the_channel(name: str) -> None:
    spec = registry.spec(name)
    assert resolve({}, {}).channels[name].base_url == spec.default_base_url
    s = resolve({}, {f"PAYGRID_{name.upper()}_BASE_URL": "http://127.0.0.1:18101"})
    assert s.channels[name].base_url == "http://127.0.0.1:18101"
    assert s.channels[name].fee_rate_ppm == spec.fee_rate_ppm


# --- defaults that depend on the profile ---------------------------------------------------
@dataclass(frozen=True)
class ProfiledSettings:
    profile: str = setting("embedded", check=config.one_of(*config.PROFILES))
    allow_networks: tuple[str, ...] = setting(("127.0.0.0/8",), prod=())
    port_a: int = setting(1, prod=2, check=config.port)


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_profile_defaults_follow_the_resolved_profile(source: str, tmp_path: Path) -> None:
    def values(flags: Mapping[str, object], env: Mapping[str, str]) -> dict[str, Any]:
        return config.resolve_fields(ProfiledSettings, flags, env)[0]

    assert values({}, {}) == {
        "profile": "embedded",
        "allow_networks": ("127.0.0.0/8",),
        "port_a": 1,
    }
    cfg = write_config(tmp_path / "c.toml", {"profile": "prod"})
    given = {
        "flag": ({"profile": "prod"}, {}),
        "env": ({}, {"PAYGRID_PROFILE": "prod"}),
        "file": ({}, {config.CONFIG_ENV: str(cfg)}),
    }[source]
    assert values(*given) == {"profile": "prod", "allow_networks": (), "port_a": 2}
    flags, env = given
    set_anyway = {**env, "PAYGRID_ALLOW_NETWORKS": "10.1.0.0/16, 10.2.0.0/16"}
    assert values(flags, set_anyway)["allow_networks"] == ("10.1.0.0/16", "10.2.0.0/16")
    listed = tmp_path / "list.toml"
    listed.write_text('[paygrid]\nprofile = "prod"\nallow_networks = ["10.3.0.0/16"]\n')
    assert values({"config": listed}, {})["allow_networks"] == ("10.3.0.0/16",)


def test_settings_with_a_production_default_take_it_in_prod() -> None:
    prod = resolve({}, {"PAYGRID_PROFILE": "prod"})
    for f in dataclasses.fields(Settings):
        if f.name not in config.setting_names(Settings):
            continue  # the channels' settings, checked above
        wanted = f.metadata["prod"]
        if wanted is not config._NO_PROD:
            assert getattr(prod, f.name) == wanted, f.name


# --- bad values ----------------------------------------------------------------------------
BAD = [
    ("api_port", "abc", "not an integer"),
    ("api_port", "70000", "not a TCP port"),
    ("cashier_port", "0", "not a TCP port"),
    ("cell", "256", "must be 0-255"),
    ("cell", "1.5", "not an integer"),
    ("zone", "Mars/Olympus", "not a time zone"),
    ("profile", "production", "must be one of embedded, prod"),
    ("notify_retry_scale", "-1", "greater than 0"),
    ("recovery_after_s", "nan", "not a finite number"),
    ("scheduler_interval_s", "soon", "not a number"),
    ("recon_lookback_days", "40", "1-31 days"),
    ("recon_interval_s", "0", "greater than 0"),
    ("run_sandboxes", "maybe", "not a boolean"),
    ("database_url", "mysql://db/x", "postgresql://"),
    ("nats_url", "http://127.0.0.1:4222", "nats://"),
    ("wechatpay_base_url", "ftp://x", "not an http(s) URL"),
    ("ops_base_port", "65534", "not a TCP port"),
    ("host", "a\nb", "control character"),
]


@pytest.mark.parametrize(("name", "raw", "problem"), BAD)
def test_a_bad_variable_is_named(name: str, raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({}, {env_name(name): raw})
    assert str(caught.value).startswith(f"{env_name(name)} = {raw!r}: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(("name", "raw", "problem"), BAD)
def test_a_bad_file_value_names_file_and_key(
    name: str, raw: str, problem: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "paygrid.toml", {name: raw})
    with pytest.raises(ConfigError) as caught:
        resolve({"config": cfg}, {})
    assert str(caught.value).startswith(f"{cfg}: [paygrid] {name} = ")
    assert problem in str(caught.value)


def test_wrong_toml_types_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    for line, problem in [
        ("api_port = true", "api_port = True: not an integer"),
        ("zone = 8", "zone = 8: not a string"),
        ('run_sandboxes = "yes please"', "not a boolean"),
    ]:
        cfg.write_text(f"[paygrid]\n{line}\n")
        with pytest.raises(ConfigError, match=re.escape(str(cfg))) as caught:
            resolve({"config": cfg}, {})
        assert problem in str(caught.value)


def test_a_bad_flag_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^--api-port = 0: not a TCP port"):
        resolve({"api_port": 0}, {})
    with pytest.raises(ConfigError, match=r"^--profile = 'dev': must be one of"):
        resolve({"profile": "dev"}, {})
    assert flag_name("cashier_port") == "--cashier-port"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[paygrid]\napi_prot = 8000\n", "[paygrid] unknown key 'api_prot'"),
        ("api_port = 8000\n", "unknown key 'api_port': settings go in a [paygrid] table"),
        ("[paygrid]\nconfig = 'other.toml'\n", "[paygrid] unknown key 'config'"),
        ("paygrid = 3\n", "paygrid must be a table"),
        ("[paygrid\n", "not valid TOML"),
        ("[paygrid]\napi_port = 1\nAPI_PORT = 2\n", "api_port is given twice"),
    ],
)
def test_a_bad_file_is_named(content: str, message: str, tmp_path: Path) -> None:
    cfg = tmp_path / "paygrid.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as caught:
        resolve({}, {config.CONFIG_ENV: str(cfg)})
    assert str(caught.value).startswith(f"{cfg}: ")
    assert message in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        resolve({"config": tmp_path / "nope.toml"}, {})


def test_two_listeners_on_one_port_are_refused_naming_both_sources() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({"cashier_port": 18000}, {"PAYGRID_API_PORT": "18000"})
    assert str(caught.value) == (
        "api_port (PAYGRID_API_PORT) and cashier_port (--cashier-port) are both port 18000"
    )
    # The gateway and the worker ports exist only in the production profile.
    clash = {"PAYGRID_GATEWAY_PORT": "8000"}
    assert resolve({}, clash).gateway_port == 8000
    with pytest.raises(ConfigError, match=r"gateway_port .* are both port 8000"):
        resolve({}, {**clash, "PAYGRID_PROFILE": "prod"})
    with pytest.raises(ConfigError, match=r"^PAYGRID_WECHATPAY_BASE_URL = .*: needs a port"):
        resolve({}, {"PAYGRID_WECHATPAY_BASE_URL": "http://sandbox.test"})


# --- child processes -----------------------------------------------------------------------
def test_a_child_resolves_exactly_its_parents_settings(tmp_path: Path) -> None:
    parent = resolve({name: flag for name, (_, _, flag) in SAMPLES.items()}, {})
    misleading = write_config(tmp_path / "c.toml", {"cell": 9, "zone": "UTC"})
    inherited = {
        "PATH": "/usr/bin",
        config.CONFIG_ENV: str(misleading),
        "PAYGRID_CELL": "7",
        "PAYGRID_NATS_URL": "nats://elsewhere:4222",
    }
    env = config.child_env(parent, inherited)
    assert env["PATH"] == "/usr/bin" and config.CONFIG_ENV not in env
    assert resolve({}, env) == parent
    defaults = resolve({}, {})
    assert resolve({}, config.child_env(defaults, inherited)) == defaults
