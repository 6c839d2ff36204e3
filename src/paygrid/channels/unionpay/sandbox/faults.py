"""Fault injection (故障注入): notifications, gateway answers and files misbehave at given rates.

A seeded random drives every roll, and setting faults reseeds it, so a test that sets the same
faults and makes the same calls sees the same faults.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Mapping

from paygrid.channels.bank.settle import FAULT_BOUNDS, SettlementTerms
from paygrid.channels.bank.settle import FAULTS as SETTLEMENT_FAULTS
from paygrid.channels.unionpay.sandbox.settings import SettingsError, updated

_BOUNDS: dict[str, tuple[float, float]] = {
    "duplicate_rate": (0.0, 1.0),
    "drop_rate": (0.0, 1.0),
    "error_rate": (0.0, 1.0),
    "timeout_rate": (0.0, 1.0),
    "pending_rate": (0.0, 1.0),
    "missing_rate": (0.0, 1.0),
    "wrong_amount_rate": (0.0, 1.0),
    "delay_ms": (0, 600_000),
    "timeout_ms": (0, 120_000),
    "latency_ms": (0, 60_000),
    "extra_lines": (0, 1_000),
    "seed": (0, 2**63 - 1),
    **FAULT_BOUNDS,
}


@dataclasses.dataclass(frozen=True, slots=True)
class FaultConfig:
    # back-end notifications (后台通知)
    duplicate_rate: float = 0.0  # the same notification delivered twice
    delay_ms: int = 0  # first delivery held back this long
    reorder: bool = False  # held and sent newest first, in small batches
    drop_rate: float = 0.0  # never sent
    # the gateway (back-end, query and file transfer; not the browser's front consume)
    error_rate: float = 0.0  # signed respCode 06 (系统繁忙): the request is not processed
    timeout_rate: float = 0.0  # processed, answered only after timeout_ms (client times out)
    timeout_ms: int = 7_000
    latency_ms: int = 0
    # a back-end transaction done but answered 03/04/05 (status unknown: query later); a
    # query answered 03/04/05 itself
    pending_rate: float = 0.0
    # the reconciliation file (对账文件)
    missing_rate: float = 0.0  # a ZM line left out
    extra_lines: int = 0  # consume lines for transactions the sandbox never had
    wrong_amount_rate: float = 0.0  # a line one fen off
    # settlement into the reserve account (结算): none | late | short | missing
    settlement: str = "none"
    settlement_late_days: int = 2  # a late settlement arrives this many days after it was due
    settlement_short_fen: int = 100  # a short settlement lacks this much
    seed: int = 0

    def updated(self, changes: Mapping[str, object]) -> FaultConfig:
        config = updated(self, changes, _BOUNDS)
        if config.settlement not in SETTLEMENT_FAULTS:
            raise SettingsError(f"settlement must be one of {SETTLEMENT_FAULTS}")
        return config

    def settlement_terms(self, days: int) -> SettlementTerms:
        return SettlementTerms(
            days, self.settlement, self.settlement_late_days, self.settlement_short_fen
        )


class Faults:
    """The current faults and their random source; thread-safe."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or FaultConfig()
        self._random = random.Random(self._config.seed)

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._random = random.Random(config.seed)

    def roll(self, rate: float) -> bool:
        """True with probability ``rate``; 0 and 1 consume no randomness."""
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._random.random() < rate

    def randint(self, low: int, high: int) -> int:
        with self._lock:
            return self._random.randint(low, high)
