"""Channel health (通道健康度) and the circuit breaker (熔断) that takes a failing channel out.

Every channel call the platform makes is recorded here with its outcome, latency and error
code, per (channel, payer bank) and per channel over all banks, in a sliding window of time
buckets. A breaker opens when a window holds enough calls and too many failed; after a
cool-down it lets single probes through (half open) and closes after consecutive successes.
Health is per process: each process judges the calls it makes itself (docs/routing.md).
Domain code: no framework, no database; the clock is passed in."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

ALL_BANKS = "*"
MAX_CODES_PER_BUCKET = 16  # distinct error codes kept per bucket; the rest count as OTHER


class BreakerState(enum.StrEnum):
    CLOSED = "CLOSED"  # traffic flows
    OPEN = "OPEN"  # taken out: no traffic until the cool-down ends
    HALF_OPEN = "HALF_OPEN"  # single probes go through; successes close it, a failure reopens


_B = BreakerState
BREAKER_TRANSITIONS: Mapping[BreakerState, frozenset[BreakerState]] = {
    _B.CLOSED: frozenset({_B.OPEN}),
    _B.OPEN: frozenset({_B.HALF_OPEN}),
    _B.HALF_OPEN: frozenset({_B.CLOSED, _B.OPEN}),
}


class IllegalBreakerTransition(Exception):
    pass


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Limits of the window and the breaker; the rules file may set them ([health])."""

    window_s: int = 60
    bucket_s: int = 5
    min_calls: int = 20  # fewer calls in the window say nothing
    max_failure_pct: int = 50  # at or above this share of failures the breaker opens
    open_s: int = 30  # cool-down before the first probe
    probe_interval_s: float = 1.0  # at most one probe per interval while half open
    probe_successes: int = 3  # consecutive probe successes that close the breaker

    def __post_init__(self) -> None:
        assert 1 <= self.bucket_s <= self.window_s <= 3600
        assert 1 <= self.min_calls <= 100_000 and 1 <= self.max_failure_pct <= 100
        assert 1 <= self.open_s <= 3600 and 0 < self.probe_interval_s <= 60
        assert 1 <= self.probe_successes <= 100


@dataclass(slots=True)
class _Bucket:
    start: float
    calls: int = 0
    failures: int = 0
    latency_ms_sum: int = 0
    codes: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class WindowFigures:
    calls: int
    failures: int
    mean_latency_ms: int
    codes: Mapping[str, int]

    @property
    def success_pct(self) -> float:
        return 100.0 if not self.calls else 100.0 * (self.calls - self.failures) / self.calls


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """A breaker moved: logged, counted on /metrics, shown by ``paygrid routing show``."""

    channel: str
    bank: str
    before: BreakerState
    after: BreakerState
    reason: str


@dataclass(slots=True)
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    since: float = 0.0
    reason: str = ""
    last_probe: float = float("-inf")
    probe_streak: int = 0

    def move(self, target: BreakerState, now: float, reason: str) -> None:
        if target not in BREAKER_TRANSITIONS[self.state]:
            raise IllegalBreakerTransition(f"breaker {self.state} -> {target} is not allowed")
        self.state, self.since, self.reason, self.probe_streak = target, now, reason, 0


class _Window:
    def __init__(self, policy: HealthPolicy) -> None:
        self.policy = policy
        self.buckets: list[_Bucket] = []

    def add(self, now: float, ok: bool, latency_ms: int, code: str | None) -> None:
        start = now - now % self.policy.bucket_s
        if not self.buckets or self.buckets[-1].start != start:
            self.buckets.append(_Bucket(start))
            horizon = now - self.policy.window_s
            while self.buckets and self.buckets[0].start + self.policy.bucket_s <= horizon:
                self.buckets.pop(0)
        bucket = self.buckets[-1]
        bucket.calls += 1
        bucket.latency_ms_sum += max(0, latency_ms)
        if not ok:
            bucket.failures += 1
            name = code or "FAILED"
            if name not in bucket.codes and len(bucket.codes) >= MAX_CODES_PER_BUCKET:
                name = "OTHER"
            bucket.codes[name] += 1

    def figures(self, now: float) -> WindowFigures:
        horizon = now - self.policy.window_s
        live = [b for b in self.buckets if b.start + self.policy.bucket_s > horizon]
        calls = sum(b.calls for b in live)
        codes: Counter[str] = Counter()
        for b in live:
            codes.update(b.codes)
        return WindowFigures(
            calls=calls,
            failures=sum(b.failures for b in live),
            mean_latency_ms=sum(b.latency_ms_sum for b in live) // calls if calls else 0,
            codes=dict(codes.most_common(5)),
        )


class HealthBoard:
    """The health of every (channel, bank) this process has called, and their breakers."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._breakers: dict[tuple[str, str], _Breaker] = {}
        self._not_closed: set[tuple[str, str]] = set()  # the fast path: empty when all is well
        self._moves: list[BreakerChange] = []  # moves made while deciding (OPEN -> HALF_OPEN)

    def set_policy(self, policy: HealthPolicy) -> None:
        self.policy = policy
        for window in self._windows.values():
            window.policy = policy

    def record(
        self,
        channel: str,
        bank: str | None,
        ok: bool,
        latency_ms: int,
        code: str | None,
        now: float,
    ) -> list[BreakerChange]:
        """One channel call's outcome; returns the breaker moves it caused."""
        changes: list[BreakerChange] = []
        keys = [(channel, ALL_BANKS)] + ([(channel, bank)] if bank else [])
        for key in keys:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(self.policy)
            window.add(now, ok, latency_ms, code)
        # A call for a bank is judged for that bank alone: one failing bank must not take the
        # channel out for every other bank. Calls without a bank judge the channel as a whole.
        change = self._judge(keys[-1], ok, now)
        if change is not None:
            changes.append(change)
        return changes

    def _judge(self, key: tuple[str, str], ok: bool, now: float) -> BreakerChange | None:
        breaker = self._breakers.setdefault(key, _Breaker())
        before = breaker.state
        if before == _B.HALF_OPEN:
            if not ok:
                breaker.move(_B.OPEN, now, "a probe failed")
            else:
                breaker.probe_streak += 1
                if breaker.probe_streak >= self.policy.probe_successes:
                    breaker.move(_B.CLOSED, now, f"{breaker.probe_streak} probes succeeded")
        elif before == _B.CLOSED and not ok:
            figures = self._windows[key].figures(now)
            failing = figures.failures * 100 >= self.policy.max_failure_pct * figures.calls
            if figures.calls >= self.policy.min_calls and failing:
                breaker.move(_B.OPEN, now, _describe(figures, self.policy))
        if breaker.state == before:
            return None
        if breaker.state == _B.CLOSED:
            self._not_closed.discard(key)
        else:
            self._not_closed.add(key)
        return BreakerChange(key[0], key[1], before, breaker.state, breaker.reason)

    def any_out(self) -> bool:
        """True when some breaker is not closed (the fast path of a decision skips health)."""
        return bool(self._not_closed)

    def out_reason(self, channel: str, bank: str | None, now: float) -> str | None:
        """None when ``channel`` may take a payment of ``bank`` now (a half-open breaker lets
        one probe through per interval: :meth:`chosen` takes it); otherwise why it is out."""
        if not self._not_closed:
            return None
        for key in self._keys(channel, bank):
            breaker = self._breakers[key]
            where = channel if key[1] == ALL_BANKS else f"{channel}/{key[1]}"
            if breaker.state == _B.OPEN and now - breaker.since >= self.policy.open_s:
                breaker.move(_B.HALF_OPEN, now, "cool-down over: probing")
                self._moves.append(BreakerChange(*key, _B.OPEN, _B.HALF_OPEN, breaker.reason))
            if breaker.state == _B.OPEN:
                return f"breaker open for {where}: {breaker.reason}"
            if now - breaker.last_probe < self.policy.probe_interval_s:
                return f"breaker half open for {where}: waiting for the probe's result"
        return None

    def chosen(self, channel: str, bank: str | None, now: float) -> None:
        """Routing chose ``channel``: through a half-open breaker, this payment is its probe
        (a decision that chose another channel leaves the probe to the next payment)."""
        for key in self._keys(channel, bank):
            breaker = self._breakers[key]
            if breaker.state == _B.HALF_OPEN:
                breaker.last_probe = now

    def _keys(self, channel: str, bank: str | None) -> list[tuple[str, str]]:
        keys = [(channel, ALL_BANKS), (channel, bank)] if bank else [(channel, ALL_BANKS)]
        return [k for k in keys if k in self._not_closed]

    def drain_moves(self) -> list[BreakerChange]:
        """The breaker moves deciding made since the last call (for the log and /metrics)."""
        moves, self._moves = self._moves, []
        return moves

    def state(self, channel: str, bank: str = ALL_BANKS) -> BreakerState:
        breaker = self._breakers.get((channel, bank))
        return breaker.state if breaker else BreakerState.CLOSED

    def snapshot(self, now: float) -> dict[tuple[str, str], tuple[WindowFigures, BreakerState]]:
        """Every (channel, bank) seen: its window's figures and its breaker."""
        return {
            key: (window.figures(now), self.state(*key)) for key, window in self._windows.items()
        }


def _describe(figures: WindowFigures, policy: HealthPolicy) -> str:
    codes = ", ".join(f"{c}x{n}" for c, n in figures.codes.items())
    return (
        f"{figures.failures} of {figures.calls} calls failed in {policy.window_s} s "
        f"(>= {policy.max_failure_pct}%){': ' + codes if codes else ''}"
    )
