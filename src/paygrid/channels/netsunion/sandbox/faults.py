"""Fault injection (故障注入): notifications, API answers, bank decisions and clearing files
misbehave at given rates; the trade faults optionally for ONE payer bank only (``bank``: a
kernel bank code such as ``ICBC`` or its NetsUnion id), so a drill can degrade one bank.

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
from paygrid.channels.netsunion.banks import BANK_IDS, CODES
from paygrid.channels.netsunion.sandbox.settings import SettingsError, updated

_BOUNDS: dict[str, tuple[float, float]] = {
    "duplicate_rate": (0.0, 1.0),
    "drop_rate": (0.0, 1.0),
    "error_rate": (0.0, 1.0),
    "timeout_rate": (0.0, 1.0),
    "decline_rate": (0.0, 1.0),
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
    # which payer bank the trade faults hit: "" every bank, else one (code or NetsUnion id)
    bank: str = ""
    # result notifications (交易结果通知)
    duplicate_rate: float = 0.0  # the same notification (same NtfyId) delivered twice
    delay_ms: int = 0  # first delivery held back this long
    reorder: bool = False  # held and sent newest first, in small batches
    drop_rate: float = 0.0  # never sent
    # the gateway (messages naming a bank, or about a trade at one)
    error_rate: float = 0.0  # signed PS500001 system busy, message not processed
    timeout_rate: float = 0.0  # processed, answered only after timeout_ms (client times out)
    timeout_ms: int = 7_000
    latency_ms: int = 0
    # the bank (付款行)
    decline_rate: float = 0.0  # the bank refuses a debit (insufficient funds, NU5101)
    # clearing files (清算文件), every bank
    missing_rate: float = 0.0  # a line left out
    extra_lines: int = 0  # debit lines for trades the sandbox never had
    wrong_amount_rate: float = 0.0  # a line one fen off
    # settlement into the reserve account (结算): none | late | short | missing
    settlement: str = "none"
    settlement_late_days: int = 2
    settlement_short_fen: int = 100
    seed: int = 0

    def updated(self, changes: Mapping[str, object]) -> FaultConfig:
        config = updated(self, changes, _BOUNDS)
        if config.settlement not in SETTLEMENT_FAULTS:
            raise SettingsError(f"settlement must be one of {SETTLEMENT_FAULTS}")
        if config.bank and config.bank not in BANK_IDS and config.bank not in CODES:
            raise SettingsError(f"bank must be one of {sorted(BANK_IDS)} or their ids")
        return config

    def hits(self, bank_id: str | None) -> bool:
        """Whether the trade faults apply to a trade at ``bank_id`` (None: no bank known)."""
        if not self.bank:
            return True
        return bank_id is not None and self.bank in (bank_id, CODES.get(bank_id))

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

    def roll(self, rate: float, bank_id: str | None = None, scoped: bool = True) -> bool:
        """True with probability ``rate`` for a trade at ``bank_id`` (a ``scoped`` fault
        outside the configured bank never fires); 0 and 1 consume no randomness."""
        if rate <= 0.0 or (scoped and not self.config.hits(bank_id)):
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._random.random() < rate

    def randint(self, low: int, high: int) -> int:
        with self._lock:
            return self._random.randint(low, high)
