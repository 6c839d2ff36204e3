"""The routing rules file (TOML): parsed, validated whole, or refused whole with the line named.

    [health]                 # optional: the breaker's limits (health.HealthPolicy)
    min_calls = 20
    [rates]                  # contracted rate per channel, percent as a string
    CHANNEL_A = "0.25"
    [[rule]]                 # first match wins, in file order
    name = "icbc-cards"
    channels = ["CHANNEL_A", "CHANNEL_B"]   # names of the channel registry
    banks = ["ICBC"]         # also: merchants, methods, currencies, min_amount, max_amount (fen)
    [weights.ICBC]           # optional: replaces the weights in force (else they stay)
    CHANNEL_B = "1"          # percent of ICBC's traffic (docs/routing.md has a real file)

Domain code: no framework, no database."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields

from paygrid.routing.config import (
    ALL_BANKS,
    MAX_RATE_PPM,
    ConfigError,
    RoutingConfig,
    percent_to_bp,
)
from paygrid.routing.health import HealthPolicy
from paygrid.routing.rules import MAX_AMOUNT, MAX_CHANNELS_PER_RULE, MAX_RULES, Rule

MAX_FILE_BYTES = 4 * 1024 * 1024
_TOP_KEYS = frozenset({"rule", "weights", "rates", "health"})
_RULE_KEYS = frozenset(
    {"name", "channels", "merchants", "methods", "currencies", "banks", "min_amount", "max_amount"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What the values may be: the platform's channels, methods and payer banks."""

    channels: Collection[str]
    methods: Collection[str]
    banks: Collection[str]


@dataclass(frozen=True, slots=True)
class RulesFile:
    """A validated file: the config it makes, and whether it set the weights."""

    config: RoutingConfig
    sets_weights: bool


class _Lines:
    """Finds where things are in the text: tomllib gives values, not positions."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def header(self, pattern: str, nth: int = 0) -> int | None:
        seen = 0
        for i, line in enumerate(self.lines, 1):
            if re.match(pattern, line.strip()):
                if seen == nth:
                    return i
                seen += 1
        return None

    def key_after(self, start: int | None, key: str) -> int | None:
        if start is None:
            return None
        for i in range(start, len(self.lines)):
            stripped = self.lines[i].strip()
            if stripped.startswith("[") and i + 1 > start:
                return start
            if re.match(rf"^{re.escape(key)}\s*=", stripped):
                return i + 1
        return start


def parse(text: str, vocab: Vocabulary, base: RoutingConfig) -> RulesFile:
    """``text`` as a configuration on top of ``base`` (whose weights stay unless the file
    sets them). Raises ConfigError naming the line."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ConfigError(f"the file is over {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's error names the line only in its text: "... (at line 3, column 7)".
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"not valid TOML: {message}", int(found[1]) if found else None) from None
    at = _Lines(text)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}", at.header(rf"^\[?{unknown[0]}\b"))
    rules = _rules(data.get("rule", []), vocab, at)
    rates = _rates(data.get("rates", {}), vocab, at)
    health = _health(data.get("health", {}), at)
    sets_weights = "weights" in data
    weights = _weights(data["weights"], vocab, at) if sets_weights else base.weights
    config = RoutingConfig(base.version, rules, weights, rates, health)
    return RulesFile(config, sets_weights)


def _rules(raw: object, vocab: Vocabulary, at: _Lines) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise ConfigError("rule must be an array of tables: [[rule]]", at.header(r"^\[rule\]"))
    if len(raw) > MAX_RULES:
        raise ConfigError(f"{len(raw)} rules: at most {MAX_RULES}")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, table in enumerate(raw):
        line = at.header(r"^\[\[rule\]\]", i)
        rule = _rule(table, vocab, at, line)
        if rule.name in names:
            raise ConfigError(f"rule name {rule.name!r} is used twice", line)
        names.add(rule.name)
        rules.append(rule)
    return tuple(rules)


def _rule(table: Mapping[str, object], vocab: Vocabulary, at: _Lines, line: int | None) -> Rule:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(message, at.key_after(line, key))

    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown rule key {unknown[0]!r}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", "a rule needs a name: letters, digits, _ . : - (at most 64)")

    def names(key: str, allowed: Collection[str], what: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, f"rule {name}: {key} must be a list of strings")
        bad = [v for v in value if v not in allowed]
        if bad:
            raise fail(key, f"rule {name}: unknown {what} {bad[0]!r} (known: {_list(allowed)})")
        if len(set(value)) != len(value):
            raise fail(key, f"rule {name}: {key} names one twice")
        return tuple(value)

    channels = names("channels", vocab.channels, "channel")
    if not 1 <= len(channels) <= MAX_CHANNELS_PER_RULE:
        raise fail("channels", f"rule {name}: 1 to {MAX_CHANNELS_PER_RULE} channels")
    merchants = table.get("merchants", [])
    if not isinstance(merchants, list) or not all(
        isinstance(m, str) and _NAME.match(m) for m in merchants
    ):
        raise fail("merchants", f"rule {name}: merchants must be a list of merchant ids")
    currencies = table.get("currencies", [])
    if not isinstance(currencies, list) or not all(
        isinstance(c, str) and re.fullmatch(r"[A-Z]{3}", c) for c in currencies
    ):
        raise fail("currencies", f"rule {name}: currencies must be ISO 4217 codes like 'CNY'")
    low, high = table.get("min_amount", 0), table.get("max_amount", MAX_AMOUNT)
    for key, value in (("min_amount", low), ("max_amount", high)):
        if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
            raise fail(key, f"rule {name}: {key} must be a whole number of fen, 0 to {MAX_AMOUNT}")
    assert isinstance(low, int) and isinstance(high, int)
    if low > high:
        raise fail("max_amount", f"rule {name}: max_amount {high} is below min_amount {low}")
    return Rule(
        name=name,
        channels=channels,
        merchants=tuple(str(m) for m in merchants),
        methods=names("methods", vocab.methods, "method"),
        currencies=tuple(str(c) for c in currencies),
        banks=names("banks", vocab.banks, "bank"),
        min_amount=low,
        max_amount=high,
    )


def _rates(raw: object, vocab: Vocabulary, at: _Lines) -> dict[str, int]:
    line = at.header(r"^\[rates\]")
    if not isinstance(raw, dict):
        raise ConfigError("rates must be a table: [rates]", line)
    rates: dict[str, int] = {}
    for channel, value in raw.items():
        where = at.key_after(line, channel)
        if channel not in vocab.channels:
            raise ConfigError(f"rates: unknown channel {channel!r}", where)
        if not isinstance(value, str):
            raise ConfigError(f'rates.{channel}: a percentage as a string, e.g. "0.25"', where)
        try:
            ppm = _ppm(value)
        except ConfigError as exc:
            raise ConfigError(f"rates.{channel}: {exc.message}", where) from None
        if ppm > MAX_RATE_PPM:
            raise ConfigError(f"rates.{channel}: {value}% is above 10%", where)
        rates[channel] = ppm
    return rates


def _ppm(value: str) -> int:
    """'0.25' percent -> 2500 ppm; at most four decimals (0.0001%)."""
    whole, _, frac = value.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 4:
        raise ConfigError(f"{value!r} is not a percentage with at most four decimals")
    return int(whole) * 10_000 + int(frac.ljust(4, "0") or 0)


def _weights(raw: object, vocab: Vocabulary, at: _Lines) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict):
        raise ConfigError("weights must be tables: [weights.BANK]", at.header(r"^\[weights"))
    weights: dict[str, dict[str, int]] = {}
    for bank, shares in raw.items():
        line = at.header(rf"^\[weights\.\"?{re.escape(bank)}\"?\]") or at.header(r"^\[weights")
        if bank != ALL_BANKS and bank not in vocab.banks:
            raise ConfigError(f"weights: unknown bank {bank!r} (known: {_list(vocab.banks)})", line)
        if not isinstance(shares, dict):
            raise ConfigError(f'weights.{bank} must be a table of channel = "percent"', line)
        bank_shares: dict[str, int] = {}
        for channel, value in shares.items():
            where = at.key_after(line, channel)
            if channel not in vocab.channels:
                raise ConfigError(f"weights.{bank}: unknown channel {channel!r}", where)
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise ConfigError(f'weights.{bank}.{channel}: a percentage like "1"', where)
            try:
                bank_shares[channel] = percent_to_bp(str(value))
            except ConfigError as exc:
                raise ConfigError(f"weights.{bank}.{channel}: {exc.message}", where) from None
        if sum(bank_shares.values()) > 10_000:
            raise ConfigError(f"weights.{bank}: the shares add up to more than 100%", line)
        weights[bank] = bank_shares
    return weights


def _health(raw: object, at: _Lines) -> HealthPolicy:
    line = at.header(r"^\[health\]")
    if not isinstance(raw, dict):
        raise ConfigError("health must be a table: [health]", line)
    known = {f.name: f.type for f in fields(HealthPolicy)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"health: unknown key {key!r}", at.key_after(line, key))
        if type(value) not in (int, float) or (known[key] != "float" and type(value) is not int):
            raise ConfigError(f"health.{key}: a number", at.key_after(line, key))
    try:
        return HealthPolicy(**raw)
    except AssertionError:
        raise ConfigError("health: a limit is out of range (see docs/routing.md)", line) from None


def _list(values: Collection[str]) -> str:
    return ", ".join(sorted(values))
