"""Routing rules (路由规则): which channels are eligible for a payment.

A rule matches on merchant, method, currency, payer bank and an amount range; the first
matching rule (in file order) names the eligible channels in order of preference. Rules are
compiled into an index keyed by the exact fields so a decision looks at a handful of rules,
not all of them. Domain code: no framework, no database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import product

ANY = "*"
MAX_RULES = 10_000  # a rules file past this is a mistake, not a configuration
MAX_CHANNELS_PER_RULE = 16
MAX_AMOUNT = 10**15  # as kernel.money.MAX_MINOR_UNITS
_INDEX_CACHE_LIMIT = 65_536  # distinct (merchant, method, currency, bank) tuples remembered


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What routing decides on: one payment as the merchant and the payer described it."""

    payment_id: str
    mchid: str
    method: str
    amount: int  # minor units
    currency: str
    bank: str | None = None  # kernel/banks.py code of the payer's bank (付款银行)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. An empty tuple of a field matches anything; amounts are inclusive, in fen."""

    name: str
    channels: tuple[str, ...]
    merchants: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    currencies: tuple[str, ...] = ()
    banks: tuple[str, ...] = ()
    min_amount: int = 0
    max_amount: int = MAX_AMOUNT

    def __post_init__(self) -> None:
        assert self.channels and len(self.channels) <= MAX_CHANNELS_PER_RULE, self.name
        assert len(set(self.channels)) == len(self.channels), f"{self.name}: channel twice"
        assert 0 <= self.min_amount <= self.max_amount <= MAX_AMOUNT, self.name

    def matches(self, req: RouteRequest) -> bool:
        """The plain definition the index must agree with (tests compare the two)."""
        return (
            (not self.merchants or req.mchid in self.merchants)
            and (not self.methods or req.method in self.methods)
            and (not self.currencies or req.currency in self.currencies)
            and (not self.banks or (req.bank is not None and req.bank in self.banks))
            and self.min_amount <= req.amount <= self.max_amount
        )

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "channels": list(self.channels),
            "merchants": list(self.merchants),
            "methods": list(self.methods),
            "currencies": list(self.currencies),
            "banks": list(self.banks),
            "min_amount": self.min_amount,
            "max_amount": self.max_amount,
        }


_Key = tuple[str, str, str, str]  # merchant, method, currency, bank; ANY where the rule has none
_Entry = tuple[int, Rule]  # (position in the file, rule)


class RuleSet:
    """The rules in file order, indexed by their exact-match fields."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        assert len(self.rules) <= MAX_RULES
        names = [r.name for r in self.rules]
        assert len(set(names)) == len(names), "rule names are unique"
        self._index: dict[_Key, list[_Entry]] = {}
        for position, rule in enumerate(self.rules):
            for key in product(
                rule.merchants or (ANY,),
                rule.methods or (ANY,),
                rule.currencies or (ANY,),
                rule.banks or (ANY,),
            ):
                self._index.setdefault(key, []).append((position, rule))
        self._candidates: dict[_Key, tuple[Rule, ...]] = {}

    def first_match(self, req: RouteRequest) -> Rule | None:
        """The first rule in file order that matches, or None."""
        key = (req.mchid, req.method, req.currency, req.bank or ANY)
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = self._gather(key)
        for rule in candidates:
            if rule.min_amount <= req.amount <= rule.max_amount:
                return rule
        return None

    def _gather(self, key: _Key) -> tuple[Rule, ...]:
        """Every rule whose exact fields admit ``key``, in file order (then cached)."""
        mchid, method, currency, bank = key
        found: dict[int, Rule] = {}
        banks = (bank, ANY) if bank != ANY else (ANY,)
        for k in product((mchid, ANY), (method, ANY), (currency, ANY), banks):
            for position, rule in self._index.get(k, ()):
                found[position] = rule
        candidates = tuple(found[p] for p in sorted(found))
        if len(self._candidates) >= _INDEX_CACHE_LIMIT:
            self._candidates.clear()  # bounded: a flood of new merchants cannot grow it
        self._candidates[key] = candidates
        return candidates


def channels_named(rules: Iterable[Rule]) -> frozenset[str]:
    return frozenset(c for r in rules for c in r.channels)


def rule_from_json(data: Mapping[str, object]) -> Rule:
    def strs(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        assert isinstance(value, list)
        return tuple(str(v) for v in value)

    min_amount, max_amount = data.get("min_amount", 0), data.get("max_amount", MAX_AMOUNT)
    assert isinstance(min_amount, int) and isinstance(max_amount, int)
    return Rule(
        name=str(data["name"]),
        channels=strs("channels"),
        merchants=strs("merchants"),
        methods=strs("methods"),
        currencies=strs("currencies"),
        banks=strs("banks"),
        min_amount=min_amount,
        max_amount=max_amount,
    )
