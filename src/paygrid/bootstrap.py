"""The one place that wires adapters to the domain, from configuration (composition root)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Connection

from paygrid.bus.inprocess import InProcessBus
from paygrid.bus.ports import MessageBus
from paygrid.bus.relay import OutboxRelay
from paygrid.channels.ports import ChannelAdapter
from paygrid.config import ChannelSettings, Settings
from paygrid.ledger import handlers as ledger_handlers
from paygrid.ledger.handlers import FeeRates, LedgerConsumer
from paygrid.merchants import repository as merchant_repo
from paygrid.notify import service as notify_service
from paygrid.notify.service import NotifyService
from paygrid.notify.url_policy import parse_networks
from paygrid.payments.service import PaymentService, Urls
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
    while True:
        try:
            response = httpx.get(f"{cs.base_url}/sandbox/credentials", timeout=2.0)
            response.raise_for_status()
            creds: dict[str, str] = response.json()
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(creds, indent=2))
            cache.chmod(0o600)
            return creds
        except httpx.HTTPError:
            if cache.exists():
                cached: dict[str, str] = json.loads(cache.read_text())
                return cached
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def build_channels(settings: Settings) -> dict[str, ChannelAdapter]:
    from paygrid.channels.wechatpay.adapter import WechatPayAdapter, WechatPayConfig

    cs = settings.channels["wechatpay"]
    creds = channel_credentials("wechatpay", cs, settings.data_dir)
    return {"wechatpay": WechatPayAdapter(WechatPayConfig.from_credentials(creds, cs.base_url))}


def _merchant_rate(conn: Connection, mchid: str) -> int:
    merchant = merchant_repo.get(conn, mchid)
    assert merchant is not None, f"payment of unknown merchant {mchid}"
    return merchant.fee_rate_ppm


def merchant_secret(conn: Connection, mchid: str) -> str:
    key = merchant_repo.first_key(conn, mchid)
    assert key is not None, f"merchant {mchid} has no active key"
    return key.secret


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
    db = Database(settings.db_url)
    if migrate:
        db.migrate()
    channels = channels if channels is not None else build_channels(settings)
    bus = bus or InProcessBus()
    payments = PaymentService(
        db,
        channels,
        Urls(settings.cashier_base_url, settings.callback_base_url),
        settings.cell,
    )
    notify = NotifyService(
        db,
        merchant_secret,
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
    )
