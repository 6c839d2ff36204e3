"""The one place that wires adapters to the domain, from configuration (composition root)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Connection

from paygrid.bus.inprocess import InProcessBus
from paygrid.bus.ports import MessageBus
from paygrid.bus.relay import OutboxRelay
from paygrid.channels import registry
from paygrid.channels.ports import ChannelAdapter
from paygrid.config import ChannelSettings, Settings
from paygrid.datadir import private_dir, write_private
from paygrid.kernel.clock import utcnow
from paygrid.ledger import handlers as ledger_handlers
from paygrid.ledger.handlers import FeeRates, LedgerConsumer
from paygrid.merchants import repository as merchant_repo
from paygrid.merchants.vault import Vault, VaultError, new_kek_text, parse_kek
from paygrid.notify import service as notify_service
from paygrid.notify.service import NotifyService, SecretLookup
from paygrid.notify.url_policy import parse_networks
from paygrid.payments.service import PaymentService, Urls
from paygrid.routing.service import RoutingService
from paygrid.storage.database import Database
from paygrid.storage.leader import LeaderLock

log = logging.getLogger(__name__)
CREDENTIALS_WAIT_S = 30.0


@dataclass
class Platform:
    settings: Settings
    db: Database
    bus: MessageBus
    relay: OutboxRelay
    channels: dict[str, ChannelAdapter]
    payments: PaymentService
    notify: NotifyService
    vault: Vault

    def close(self) -> None:
        self.notify.close()
        self.db.dispose()


def channel_credentials(name: str, cs: ChannelSettings, data_dir: Path) -> dict[str, str]:
    """A channel's merchant credentials: a configured file, or what its sandbox hands out
    (cached under the data dir, as a merchant keeps what it downloaded)."""
    if cs.credentials_file is not None:
        loaded: dict[str, str] = json.loads(cs.credentials_file.read_text())
        return loaded
    cache = data_dir / "channels" / f"{name}.json"
    deadline = time.monotonic() + CREDENTIALS_WAIT_S
    with httpx.Client(timeout=2.0) as client:  # one client: each new one costs ~0.1 s of CPU
        while True:
            try:
                response = client.get(f"{cs.base_url}/sandbox/credentials")
                response.raise_for_status()
                creds: dict[str, str] = response.json()
                private_dir(cache.parent)
                write_private(cache, json.dumps(creds, indent=2))
                return creds
            except httpx.HTTPError:
                if cache.exists():
                    cached: dict[str, str] = json.loads(cache.read_text())
                    return cached
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the sandbox is still starting
            time.sleep(0.2)


def build_channels(settings: Settings) -> dict[str, ChannelAdapter]:
    """An adapter for every channel of the registry, with its merchant credentials."""
    return {name: channel_adapter(settings, name) for name in settings.channels}


def channel_adapter(settings: Settings, name: str) -> ChannelAdapter:
    """One channel's adapter, with its merchant credentials."""
    cs = settings.channels[name]
    creds = channel_credentials(name, cs, settings.data_dir)
    return registry.spec(name).build_adapter(creds, cs.base_url)


def _merchant_rate(conn: Connection, mchid: str) -> int:
    merchant = merchant_repo.get(conn, mchid)
    assert merchant is not None, f"payment of unknown merchant {mchid}"
    return merchant.fee_rate_ppm


class KekError(RuntimeError):
    """No usable key-encryption key: paygrid refuses to start rather than guess."""


def default_kek_file(settings: Settings) -> Path:
    return settings.data_dir / "keys" / "kek"


def load_vault(settings: Settings) -> Vault:
    """The key-encryption key from PAYGRID_KEK or PAYGRID_KEK_FILE; the embedded profile
    generates DATA/keys/kek on first start, the production profile requires one."""
    if settings.kek and settings.kek_file:
        raise KekError("set PAYGRID_KEK or PAYGRID_KEK_FILE, not both")
    try:
        if settings.kek:
            return Vault(parse_kek(settings.kek, "PAYGRID_KEK"))
        path = settings.kek_file
        if path is None and settings.profile == "prod":
            raise KekError(
                "the production profile needs a key-encryption key: set PAYGRID_KEK_FILE to a "
                "file holding base64 of 32 random bytes, or PAYGRID_KEK (docs/production.md)"
            )
        if path is None:
            path = default_kek_file(settings)
            create_kek_file(path)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KekError(f"cannot read the KEK file {path}: {exc}") from None
        if path.stat().st_mode & 0o077:
            log.warning("KEK file %s is readable by group or others: chmod 600 it", path)
        return Vault(parse_kek(text, str(path)))
    except VaultError as exc:
        raise KekError(str(exc)) from None


def create_kek_file(path: Path) -> None:
    """Write a new random KEK to ``path`` (0600) unless the file exists."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(new_kek_text() + "\n")
    log.warning("generated a key-encryption key in %s: back it up (docs/operations.md)", path)


def check_vault(db: Database, vault: Vault) -> None:
    """Refuse a KEK other than the one the stored secrets are sealed under."""
    with db.read() as conn:
        foreign = merchant_repo.kek_ids(conn) - {vault.kek_id}
    if foreign:
        raise KekError(
            f"merchant secrets in the database are sealed under {', '.join(sorted(foreign))} "
            f"but the configured key-encryption key is {vault.kek_id}: configure the KEK they "
            "were sealed with (PAYGRID_KEK_FILE or PAYGRID_KEK)"
        )


def migrate_schema(db: Database, vault: Vault) -> None:
    """Upgrade the schema, sealing secrets an older version stored in plain text."""

    def seal(mchid: str, key_id: str, secret: str) -> tuple[str, str]:
        sealed = vault.seal(mchid, key_id, secret)
        return sealed.kek_id, sealed.blob

    db.migrate(seal)


def secret_lookup(vault: Vault) -> SecretLookup:
    """Notifications are signed with the merchant's newest valid key (after a rotation: the
    new one, also during the old key's grace period)."""

    def secret_for(conn: Connection, mchid: str) -> str:
        key = merchant_repo.newest_key(conn, vault, mchid, utcnow())
        assert key is not None, f"merchant {mchid} has no valid key"
        return key.secret

    return secret_for


CONSUMERS = ("ledger", "notify")


def bootstrap(
    settings: Settings,
    channels: dict[str, ChannelAdapter] | None = None,
    bus: MessageBus | None = None,
    consumers: tuple[str, ...] = CONSUMERS,
    migrate: bool = True,
) -> Platform:
    """Wire one process: ``consumers`` names the bus consumers this process runs (all of
    them in the embedded profile, one per process in prod)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    vault = load_vault(settings)
    db = Database(settings.db_url)
    if migrate:
        migrate_schema(db, vault)
    check_vault(db, vault)
    channels = channels if channels is not None else build_channels(settings)
    bus = bus or InProcessBus()
    contracted = {name: ch.fee_rate_ppm for name, ch in settings.channels.items()}
    payments = PaymentService(
        db,
        channels,
        Urls(settings.cashier_base_url, settings.callback_base_url),
        settings.cell,
        RoutingService(db, default_rates=contracted),
    )
    notify = NotifyService(
        db,
        secret_lookup(vault),
        settings.notify_retry_scale,
        settings.cell,
        parse_networks(settings.notify_allow_networks),
    )
    rates = FeeRates(
        _merchant_rate,
        lambda ch: settings.channels[ch].fee_rate_ppm if ch in settings.channels else 0,
    )
    if "ledger" in consumers:
        bus.subscribe(
            ledger_handlers.CONSUMER,
            ledger_handlers.EVENT_TYPES,
            LedgerConsumer(db, rates, settings.zone, settings.cell),
        )
    if "notify" in consumers:
        bus.subscribe(notify_service.CONSUMER, notify_service.EVENT_TYPES, notify)
    return Platform(
        settings,
        db,
        bus,
        OutboxRelay(db, bus, LeaderLock(db, "outbox-relay")),
        channels,
        payments,
        notify,
        vault,
    )
