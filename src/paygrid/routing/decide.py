"""The routing decision (路由决策): one payment -> one channel, its fallbacks and the reasons.

1. The first matching rule names the eligible channels.
2. Channels that cannot take the payment (not enabled, method or currency) or whose breaker is
   open are out, each with its reason.
3. The payment's draw (a hash of its id: the same payment always draws the same number, so a
   retry never flips channel) falls in a weighted channel's share of the bank's traffic, or in
   the rest, which goes to the cheapest remaining channel (cost among equals; rule order breaks
   a tie). A weighted channel that is out gives its share to the rest.
4. The fallbacks, for failover, are the other usable channels, cheapest first.
Domain code: no framework, no database."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import NamedTuple

from paygrid.routing.config import FULL_SHARE_BP, RoutingConfig, bp_to_percent
from paygrid.routing.health import HealthBoard
from paygrid.routing.rules import RouteRequest, Rule, RuleSet

_WEIGHTS_CACHE_LIMIT = 65_536
DRAW_KEY = b"paygrid-route-v1"  # changing it re-deals every payment's draw: never casually

Eligibility = Callable[[str], "str | None"]  # channel -> why it cannot take this payment, or None


def draw(payment_id: str) -> int:
    """The payment's place in [0, 10000): uniform, stable across processes and restarts."""
    digest = hashlib.blake2b(payment_id.encode(), digest_size=8, key=DRAW_KEY).digest()
    return int.from_bytes(digest, "big") % FULL_SHARE_BP


class RouteDecision(NamedTuple):
    """What routing chose and why; recorded on the payment for operators, never shown to the
    merchant. ``channel`` None: no channel can take the payment (``reason`` says why).
    A named tuple: routing makes one per payment attempt and must stay cheap."""

    channel: str | None
    fallbacks: tuple[str, ...]
    rule: str | None
    draw: int
    weights: tuple[tuple[str, int], ...]  # (channel, basis points) in force for the bank
    out: tuple[tuple[str, str], ...]  # (channel, why it was out)
    config_version: int
    by_weight: bool  # the draw fell in ``channel``'s weighted share (else: the rest, by cost)

    @property
    def reason(self) -> str:
        if self.rule is None:
            return "no rule matches"
        if self.channel is None:
            return f"rule {self.rule}: every channel is out"
        if self.by_weight:
            bp = dict(self.weights)[self.channel]
            share = f"{self.channel}'s {bp_to_percent(bp)}% share"
            return f"rule {self.rule}: draw {self.draw} in {share}"
        cheapest = f", the cheapest of {len(self.fallbacks) + 1}" if self.fallbacks else ""
        return f"rule {self.rule}: draw {self.draw} in the rest: {self.channel}{cheapest}"

    def to_json(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "fallbacks": list(self.fallbacks),
            "rule": self.rule,
            "draw": self.draw,
            "weights": {c: bp_to_percent(bp) + "%" for c, bp in self.weights},
            "out": {c: why for c, why in self.out},
            "config_version": self.config_version,
            "reason": self.reason,
        }


class Router:
    """Decides with one configuration version; swap it with ``use`` (hot reload)."""

    def __init__(self, config: RoutingConfig, health: HealthBoard) -> None:
        self.health = health
        self.use(config)

    def use(self, config: RoutingConfig) -> None:
        self.config = config
        self._rules: RuleSet = config.rule_set()
        self.health.set_policy(config.health)
        rates = config.rates_ppm
        # Per rule, its channels cheapest first (rule order breaks a tie): cost among equals.
        self._by_cost: dict[str, tuple[str, ...]] = {
            r.name: tuple(sorted(r.channels, key=lambda c: (rates.get(c, 0), r.channels.index(c))))
            for r in config.rules
        }
        self._weights: dict[tuple[str, str | None], tuple[tuple[str, int], ...]] = {}

    def _weights_of(self, rule: Rule, bank: str | None) -> tuple[tuple[str, int], ...]:
        key = (rule.name, bank)
        found = self._weights.get(key)
        if found is None:
            shares = self.config.weights_for(bank)
            found = tuple((c, shares[c]) for c in rule.channels if shares.get(c))
            if len(self._weights) >= _WEIGHTS_CACHE_LIMIT:
                self._weights.clear()
            self._weights[key] = found
        return found

    def decide(
        self,
        req: RouteRequest,
        now: float,
        ineligible: Eligibility | None = None,
        exclude: Mapping[str, str] | None = None,
    ) -> RouteDecision:
        """``ineligible`` says why a channel cannot take this payment; ``exclude`` are
        channels already tried for it (failover), with why."""
        version = self.config.version
        rule = self._rules.first_match(req)
        n = draw(req.payment_id)
        if rule is None:
            return RouteDecision(None, (), None, n, (), (), version, False)
        weights = self._weights_of(rule, req.bank)
        by_cost = self._by_cost[rule.name]
        out: list[tuple[str, str]] = []
        if exclude or ineligible is not None or self.health.any_out():
            usable = []
            for channel in by_cost:
                why = self._why_out(channel, req.bank, now, ineligible, exclude)
                if why is None:
                    usable.append(channel)
                else:
                    out.append((channel, why))
            by_cost = tuple(usable)
        if not by_cost:
            return RouteDecision(None, (), rule.name, n, weights, tuple(out), version, False)
        chosen, by_weight = _pick(n, weights, by_cost)
        if self.health.any_out():
            self.health.chosen(chosen, req.bank, now)
        fallbacks = tuple(c for c in by_cost if c != chosen)
        return RouteDecision(
            chosen, fallbacks, rule.name, n, weights, tuple(out), version, by_weight
        )

    def _why_out(
        self,
        channel: str,
        bank: str | None,
        now: float,
        ineligible: Eligibility | None,
        exclude: Mapping[str, str] | None,
    ) -> str | None:
        why = exclude.get(channel) if exclude else None
        if why is None and ineligible is not None:
            why = ineligible(channel)
        if why is None:
            why = self.health.out_reason(channel, bank, now)
        return why


def _pick(
    n: int, weights: tuple[tuple[str, int], ...], by_cost: tuple[str, ...]
) -> tuple[str, bool]:
    """The channel whose weighted share holds draw ``n``, else the cheapest of the rest."""
    edge = 0
    for channel, bp in weights:
        if edge <= n < edge + bp and channel in by_cost:
            return channel, True
        edge += bp
    for channel in by_cost:
        if not any(channel == c for c, _ in weights):
            return channel, False
    return by_cost[0], False
