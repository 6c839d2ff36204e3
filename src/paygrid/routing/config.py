"""The routing configuration in force: rules, cut-over weights per payer bank, contracted
rates and the health policy. Every change makes a new numbered version (store.py); this is one
version, as plain values. Domain code: no framework, no database."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from paygrid.routing.health import HealthPolicy
from paygrid.routing.rules import Rule, RuleSet, rule_from_json

ALL_BANKS = "*"  # the weights of a bank without its own
FULL_SHARE_BP = 10_000  # weights are in basis points of a bank's traffic: 1% = 100
MAX_RATE_PPM = 100_000  # 10%: no contracted channel rate is higher


class ConfigError(ValueError):
    """A configuration that cannot be in force; ``line`` is where in the file, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


def percent_to_bp(text: str) -> int:
    """'1' or '0.5' or '12.25' percent -> basis points, exactly; at most two decimals."""
    try:
        value = Decimal(text.strip())
    except ArithmeticError:
        raise ConfigError(f"{text!r} is not a percentage") from None
    if not value.is_finite() or value < 0 or value > 100:
        raise ConfigError(f"{text!r} is not a percentage from 0 to 100")
    bp = value * 100
    if bp != bp.to_integral_value():
        raise ConfigError(f"{text!r}: a weight has at most two decimals (0.01%)")
    return int(bp)


def bp_to_percent(bp: int) -> str:
    return f"{Decimal(bp) / 100:f}".rstrip("0").rstrip(".") if bp % 100 else str(bp // 100)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    version: int
    rules: tuple[Rule, ...] = ()
    weights: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # bank -> ch -> bp
    rates_ppm: Mapping[str, int] = field(default_factory=dict)  # contracted rate per channel
    health: HealthPolicy = field(default_factory=HealthPolicy)

    def __post_init__(self) -> None:
        for bank, shares in self.weights.items():
            assert sum(shares.values()) <= FULL_SHARE_BP, f"weights of {bank} exceed 100%"
            assert all(0 <= bp <= FULL_SHARE_BP for bp in shares.values())
        assert all(0 <= r <= MAX_RATE_PPM for r in self.rates_ppm.values())

    def rule_set(self) -> RuleSet:
        return RuleSet(self.rules)

    def weights_for(self, bank: str | None) -> Mapping[str, int]:
        if bank is not None and bank in self.weights:
            return self.weights[bank]
        return self.weights.get(ALL_BANKS, {})

    def with_weight(self, bank: str, channel: str, bp: int) -> RoutingConfig:
        """This configuration with ``channel`` at ``bp`` of ``bank``'s traffic."""
        shares = dict(self.weights.get(bank, {}))
        if bp:
            shares[channel] = bp
        else:
            shares.pop(channel, None)
        if sum(shares.values()) > FULL_SHARE_BP:
            others = sum(v for c, v in shares.items() if c != channel)
            raise ConfigError(
                f"{bank}: the other channels already take {bp_to_percent(others)}%; "
                f"{bp_to_percent(bp)}% more would exceed 100%"
            )
        weights = {b: dict(s) for b, s in self.weights.items() if b != bank}
        if shares:
            weights[bank] = shares
        return RoutingConfig(self.version, self.rules, weights, self.rates_ppm, self.health)

    def to_json(self) -> dict[str, object]:
        return {
            "rules": [r.to_json() for r in self.rules],
            "weights": {b: dict(sorted(s.items())) for b, s in sorted(self.weights.items())},
            "rates_ppm": dict(sorted(self.rates_ppm.items())),
            "health": asdict(self.health),
        }

    def canonical(self) -> str:
        """The version-free content, byte-stable: what the audit compares and stores."""
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)


def config_from_json(version: int, data: Mapping[str, object]) -> RoutingConfig:
    rules = data.get("rules") or []
    weights = data.get("weights") or {}
    rates = data.get("rates_ppm") or {}
    health = data.get("health") or {}
    assert isinstance(rules, list) and isinstance(weights, dict)
    assert isinstance(rates, dict) and isinstance(health, dict)
    return RoutingConfig(
        version=version,
        rules=tuple(rule_from_json(r) for r in rules),
        weights={str(b): {str(c): int(v) for c, v in s.items()} for b, s in weights.items()},
        rates_ppm={str(c): int(v) for c, v in rates.items()},
        health=HealthPolicy(**health),
    )
