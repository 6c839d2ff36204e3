"""Routing's domain: the rule index agrees with the plain definition, weights split traffic
as configured and never flip a payment, the breaker's table, failover reasons, cost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paygrid.routing.config import ConfigError, RoutingConfig, bp_to_percent, percent_to_bp
from paygrid.routing.decide import Router, draw
from paygrid.routing.health import (
    BreakerState,
    HealthBoard,
    HealthPolicy,
    IllegalBreakerTransition,
    _Breaker,
)
from paygrid.routing.rules import MAX_AMOUNT, RouteRequest, Rule, RuleSet

MERCHANTS = ["m1", "m2", "m3"]
METHODS = ["page", "native", "agreement"]
BANKS = ["ICBC", "CCB", "CMB"]
CHANNELS = ["a", "b", "c"]


def req(
    pid: str = "pay1", bank: str | None = "ICBC", amount: int = 1000, **kw: str
) -> RouteRequest:
    return RouteRequest(
        payment_id=pid,
        mchid=kw.get("mchid", "m1"),
        method=kw.get("method", "page"),
        amount=amount,
        currency=kw.get("currency", "CNY"),
        bank=bank,
    )


rules_st = st.lists(
    st.builds(
        lambda i, ch, m, me, cu, ba, lo, span: Rule(
            name=f"r{i}",
            channels=tuple(ch),
            merchants=tuple(m),
            methods=tuple(me),
            currencies=tuple(cu),
            banks=tuple(ba),
            min_amount=lo,
            max_amount=min(MAX_AMOUNT, lo + span),
        ),
        st.integers(),
        st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
        st.lists(st.sampled_from(MERCHANTS), max_size=2, unique=True),
        st.lists(st.sampled_from(METHODS), max_size=2, unique=True),
        st.lists(st.sampled_from(["CNY", "USD"]), max_size=1, unique=True),
        st.lists(st.sampled_from(BANKS), max_size=2, unique=True),
        st.integers(0, 2000),
        st.integers(0, 3000),
    ),
    max_size=30,
).map(lambda rs: [Rule(**{**r.to_json(), "name": f"r{i}"}) for i, r in enumerate(rs)])  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    rules_st,
    st.lists(
        st.tuples(
            st.sampled_from(MERCHANTS),
            st.sampled_from(METHODS),
            st.sampled_from(["CNY", "USD"]),
            st.sampled_from([*BANKS, None]),
            st.integers(0, 6000),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_the_index_finds_the_first_rule_a_plain_scan_finds(
    rules: list[Rule], requests: list[tuple[str, str, str, str | None, int]]
) -> None:
    ruleset = RuleSet(rules)
    for _ in range(2):  # the second pass answers from the candidate cache
        for mchid, method, currency, bank, amount in requests:
            r = RouteRequest("p", mchid, method, amount, currency, bank)
            expected = next((rule for rule in rules if rule.matches(r)), None)
            assert ruleset.first_match(r) == expected


def two_channel_router(weight_bp: int, **health: int) -> Router:
    config = RoutingConfig(
        version=7,
        rules=(Rule("cards", ("a", "b"), banks=("ICBC", "CCB")),),
        weights={"ICBC": {"b": weight_bp}} if weight_bp else {},
        rates_ppm={"a": 2500, "b": 2000},
        health=HealthPolicy(**health) if health else HealthPolicy(),
    )
    return Router(config, HealthBoard())


def test_one_percent_of_a_banks_traffic_goes_to_the_weighted_channel() -> None:
    router = two_channel_router(100)  # 1% of ICBC to b
    n = 100_000
    to_b = sum(router.decide(req(f"pay_{i:08d}"), 0.0).channel == "b" for i in range(n))
    assert abs(to_b / n * 100 - 1.0) <= 0.5
    # CCB has no weights: the rest of its traffic goes to the cheaper channel, b
    assert router.decide(req("x", bank="CCB"), 0.0).channel == "b"


def test_a_payment_always_draws_the_same_number_and_channel() -> None:
    router = two_channel_router(5000)
    first = [router.decide(req(f"pay{i}"), 0.0) for i in range(200)]
    again = [two_channel_router(5000).decide(req(f"pay{i}"), 0.0) for i in range(200)]
    assert [d.channel for d in first] == [d.channel for d in again]
    assert {d.channel for d in first} == {"a", "b"}
    assert draw("pay1") == draw("pay1") and 0 <= draw("pay1") < 10_000


def test_the_decision_says_which_rule_which_draw_and_what_was_out() -> None:
    router = two_channel_router(100)
    d = router.decide(req("p"), 0.0, ineligible=lambda c: "not enabled" if c == "a" else None)
    assert d.channel == "b" and d.rule == "cards" and d.out == (("a", "not enabled"),)
    body = d.to_json()
    assert body["weights"] == {"b": "1%"} and body["config_version"] == 7
    assert body["draw"] == draw("p") and "rule cards" in str(body["reason"])
    none = router.decide(req("p", bank="CMB"), 0.0)
    assert none.channel is None and none.reason == "no rule matches"


def test_failover_excludes_the_channel_tried_and_keeps_the_draw() -> None:
    router = two_channel_router(10_000)  # all of ICBC to b
    first = router.decide(req("p"), 0.0)
    assert first.channel == "b" and first.fallbacks == ("a",)
    second = router.decide(req("p"), 0.0, exclude={"b": "order refused: SYSTEM_ERROR"})
    assert second.channel == "a" and second.draw == first.draw
    assert dict(second.out) == {"b": "order refused: SYSTEM_ERROR"}
    third = router.decide(req("p"), 0.0, exclude={"a": "x", "b": "y"})
    assert third.channel is None and "every channel is out" in third.reason


def test_cost_decides_among_equals_and_rule_order_breaks_a_tie() -> None:
    cfg = RoutingConfig(1, (Rule("r", ("a", "b", "c")),), {}, {"a": 3000, "b": 2000, "c": 2000})
    d = Router(cfg, HealthBoard()).decide(req(), 0.0)
    assert d.channel == "b" and d.fallbacks == ("c", "a")


def test_the_breaker_opens_probes_and_closes() -> None:
    router = two_channel_router(10_000, min_calls=10, open_s=30, probe_successes=2)
    board = router.health
    for i in range(10):
        board.record("b", "ICBC", i < 4, 100, None if i < 4 else "SYSTEM_ERROR", 1.0 + i / 10)
    assert board.state("b", "ICBC") == BreakerState.OPEN
    d = router.decide(req("p"), 3.0)
    assert d.channel == "a" and "breaker open for b/ICBC" in dict(d.out)["b"]
    assert "6 of 10 calls failed" in dict(d.out)["b"] and "SYSTEM_ERRORx6" in dict(d.out)["b"]
    assert router.decide(req("p", bank="CCB"), 3.0).channel == "b"  # other banks unaffected
    # after the cool-down one probe goes through per interval
    assert router.decide(req("p"), 32.0).channel == "b"
    assert board.state("b", "ICBC") == BreakerState.HALF_OPEN
    assert router.decide(req("p"), 32.5).channel == "a"  # the probe's answer is awaited
    board.record("b", "ICBC", True, 100, None, 32.6)
    assert router.decide(req("p"), 33.7).channel == "b"
    board.record("b", "ICBC", True, 100, None, 33.8)
    assert board.state("b", "ICBC") == BreakerState.CLOSED


def test_a_failed_probe_reopens_and_few_calls_never_open() -> None:
    board = HealthBoard(HealthPolicy(min_calls=5, open_s=10))
    for i in range(4):
        board.record("x", None, False, 10, "E", float(i))
    assert board.state("x") == BreakerState.CLOSED  # 4 calls say nothing yet
    board.record("x", None, False, 10, "E", 4.0)
    assert board.state("x") == BreakerState.OPEN
    assert board.out_reason("x", None, 15.0) is None  # half open: this one is the probe
    board.record("x", None, False, 10, "E", 15.1)
    assert board.state("x") == BreakerState.OPEN
    assert board.out_reason("x", None, 16.0) is not None
    # old failures leave the window: a new burst of successes keeps it closed
    with pytest.raises(IllegalBreakerTransition):
        _Breaker().move(BreakerState.HALF_OPEN, 0.0, "no")


def test_the_window_forgets_calls_older_than_its_length() -> None:
    board = HealthBoard(HealthPolicy(window_s=10, bucket_s=1, min_calls=5))
    for i in range(4):
        board.record("x", None, False, 10, "E", float(i))
    board.record("x", None, False, 10, "E", 30.0)  # the first four are out of the window
    assert board.state("x") == BreakerState.CLOSED
    figures, state = board.snapshot(30.0)[("x", "*")]
    assert figures.calls == 1 and state == BreakerState.CLOSED


def test_percentages_are_exact() -> None:
    assert percent_to_bp("1") == 100 and percent_to_bp("0.5") == 50 and percent_to_bp("50") == 5000
    assert bp_to_percent(100) == "1" and bp_to_percent(50) == "0.5" and bp_to_percent(1) == "0.01"
    for bad in ("0.001", "101", "-1", "x", "nan"):
        with pytest.raises(ConfigError):
            percent_to_bp(bad)


def test_weights_over_a_hundred_percent_are_refused() -> None:
    cfg = RoutingConfig(1, (Rule("r", ("a", "b", "c")),), {"ICBC": {"a": 6000}})
    assert cfg.with_weight("ICBC", "b", 4000).weights["ICBC"] == {"a": 6000, "b": 4000}
    with pytest.raises(ConfigError, match="exceed 100%"):
        cfg.with_weight("ICBC", "b", 4001)
    assert "ICBC" not in cfg.with_weight("ICBC", "a", 0).weights


def test_a_probe_is_taken_only_by_a_payment_routed_to_the_channel() -> None:
    router = two_channel_router(5000, min_calls=4, open_s=10)  # b has half of ICBC
    for i in range(4):
        router.health.record("b", "ICBC", False, 10, "E", float(i))
    to_rest = next(f"p{i}" for i in range(1000) if draw(f"p{i}") >= 5000)
    to_b = next(f"p{i}" for i in range(1000) if draw(f"p{i}") < 5000)
    assert router.decide(req(to_rest), 20.0).channel == "a"  # half open, but not chosen
    probe = router.decide(req(to_b), 20.1)  # the probe slot is still free
    assert probe.channel == "b" and probe.out == ()
    blocked = router.decide(req(to_b), 20.2)  # now it is taken until the interval passes
    assert blocked.channel == "a" and "waiting for the probe" in dict(blocked.out)["b"]
