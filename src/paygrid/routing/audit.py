"""What a routing change changed, in words an operator reads in the audit (before -> after)."""

from __future__ import annotations

from decimal import Decimal

from paygrid.routing.config import RoutingConfig, bp_to_percent


def changes(before: RoutingConfig, after: RoutingConfig) -> list[str]:
    """Each difference as one line; empty when the two say the same."""
    lines: list[str] = []
    old_rules = {r.name: r for r in before.rules}
    new_rules = {r.name: r for r in after.rules}
    for name in new_rules.keys() - old_rules.keys():
        lines.append(f"rule {name} added: {', '.join(new_rules[name].channels)}")
    for name in old_rules.keys() - new_rules.keys():
        lines.append(f"rule {name} removed")
    for name in sorted(old_rules.keys() & new_rules.keys()):
        if old_rules[name] != new_rules[name]:
            lines.append(f"rule {name} changed")
    if [r.name for r in before.rules if r.name in new_rules] != [
        r.name for r in after.rules if r.name in old_rules
    ]:
        lines.append("rules reordered")
    for bank in sorted(before.weights.keys() | after.weights.keys()):
        old, new = before.weights.get(bank, {}), after.weights.get(bank, {})
        for channel in sorted(old.keys() | new.keys()):
            if old.get(channel, 0) != new.get(channel, 0):
                was, now = bp_to_percent(old.get(channel, 0)), bp_to_percent(new.get(channel, 0))
                lines.append(f"weight {bank} {channel}: {was}% -> {now}%")
    for channel in sorted(before.rates_ppm.keys() | after.rates_ppm.keys()):
        old_rate, new_rate = before.rates_ppm.get(channel), after.rates_ppm.get(channel)
        if old_rate != new_rate:
            lines.append(f"rate {channel}: {_ppm(old_rate)} -> {_ppm(new_rate)}")
    if before.health != after.health:
        lines.append("health policy changed")
    return lines


def _ppm(ppm: int | None) -> str:
    """2500 ppm -> '0.25%'; None -> '-'."""
    if ppm is None:
        return "-"
    text = f"{Decimal(ppm) / 10_000:f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"
