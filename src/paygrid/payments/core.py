"""What every payment use case shares: the unit of work, the channels, the URLs, the cell."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paygrid.channels.ports import ChannelAdapter, ChannelCapabilities, ChannelError
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.uow import UnitOfWork

if TYPE_CHECKING:
    from paygrid.routing.service import RoutingService


@dataclass(frozen=True, slots=True)
class Urls:
    cashier_base_url: str  # where the cashier app is served
    callback_base_url: str  # where channels send callbacks (回调)

    def callback_url(self, channel: str) -> str:
        return f"{self.callback_base_url.rstrip('/')}/callbacks/{channel}"


class Channels:
    """The adapters this process reaches, by channel name (from the channel registry)."""

    def __init__(self, adapters: Mapping[str, ChannelAdapter]) -> None:
        self._adapters = dict(adapters)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._adapters)

    def adapter(self, channel: str) -> ChannelAdapter:
        adapter = self._adapters.get(channel)
        if adapter is None:
            raise PaymentRejected("CHANNEL_NOT_SUPPORTED", f"unknown channel {channel!r}")
        return adapter

    def capabilities(self, channel: str) -> ChannelCapabilities:
        return self.adapter(channel).capabilities

    def currencies(self, channels: Iterable[str]) -> frozenset[str]:
        """The currencies any of ``channels`` takes (channels not configured here take none)."""
        found: frozenset[str] = frozenset()
        for name in channels:
            if name in self._adapters:
                found |= self._adapters[name].capabilities.currencies
        return found

    def check_currency(self, channel: str, currency: str) -> None:
        taken = self.capabilities(channel).currencies
        if currency not in taken:
            raise PaymentRejected(
                "UNSUPPORTED_CURRENCY",
                f"{channel} takes {', '.join(sorted(taken))}, not {currency}",
            )


@dataclass(frozen=True, slots=True)
class Core:
    uow: UnitOfWork
    channels: Channels
    urls: Urls
    cell: int = 0
    routing: RoutingService | None = None  # None: every payment names its channel

    def health(
        self, channel: str, bank: str | None, ok: bool, seconds: float, code: str | None
    ) -> None:
        """A channel order call's outcome, for routing's health board and /metrics."""
        if self.routing is not None:
            self.routing.record_call(channel, bank, ok, seconds, code)


def channel_refusal(channel: str, exc: ChannelError, doing: str = "") -> PaymentRejected:
    """The channel refused or failed a call: retryable trouble is CHANNEL_UNAVAILABLE (503)."""
    code = "CHANNEL_UNAVAILABLE" if exc.retryable else "CHANNEL_ERROR"
    if doing:
        return PaymentRejected(code, f"{doing} at {channel} failed: {exc.message}")
    return PaymentRejected(code, f"{channel}: {exc.message}")
