"""Routing decisions per second and their p99 latency with 1,000 rules, against a bare
dictionary lookup over the same requests in the same run; and the traffic split measured over
100,000 payments against the configured weight (1% of one bank through one channel).

    .venv/bin/python bench/routing.py [--decisions 200000] [--rules 1000] [--payments 100000]

Prints the figures and writes bench/results/routing.json."""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import common
from rich.console import Console

from paygrid.kernel.banks import BANKS
from paygrid.routing.config import RoutingConfig
from paygrid.routing.decide import Router
from paygrid.routing.health import HealthBoard
from paygrid.routing.rules import RouteRequest, Rule

CHANNELS = ("unionpay", "netsunion", "wechatpay", "alipay")
METHODS = ("page", "agreement", "native", "h5")
GOAL_PER_S = 100_000


def rules(n: int) -> tuple[Rule, ...]:
    """``n`` rules as a payment team would have them: most per merchant (method and amount
    bands), some per bank, a catch-all last."""
    rng = random.Random(1)
    made: list[Rule] = []
    banks = sorted(BANKS)
    for i in range(n - 1):
        if i % 10 == 0:
            made.append(
                Rule(f"bank-{i}", ("unionpay", "netsunion"), banks=(banks[i % len(banks)],),
                     methods=("page", "agreement"), max_amount=rng.choice((50_000, 500_000)))
            )  # fmt: skip
        else:
            low = rng.choice((0, 10_000, 100_000))
            made.append(
                Rule(f"m-{i}", tuple(rng.sample(CHANNELS, 2)), merchants=(f"m{i % 400:04d}",),
                     methods=(METHODS[i % 4],), min_amount=low, max_amount=low + 90_000)
            )  # fmt: skip
    made.append(Rule("default", CHANNELS))
    return tuple(made)


def requests(n: int) -> list[RouteRequest]:
    rng = random.Random(2)
    banks = sorted(BANKS)
    return [
        RouteRequest(
            payment_id=f"pay_{i:010d}",
            mchid=f"m{rng.randrange(500):04d}",
            method=rng.choice(METHODS),
            amount=rng.randrange(1, 600_000),
            currency="CNY",
            bank=rng.choice(banks),
        )
        for i in range(n)
    ]


def throughput(router: Router, reqs: list[RouteRequest]) -> tuple[float, float]:
    """(decisions/s of the router, lookups/s of a bare dict) over the same requests."""
    decide = router.decide
    start = time.perf_counter()
    for r in reqs:
        decide(r, 0.0)
    routed = len(reqs) / (time.perf_counter() - start)
    table = {(r.mchid, r.method, r.currency, r.bank): "unionpay" for r in reqs}
    get = table.get
    start = time.perf_counter()
    for r in reqs:
        get((r.mchid, r.method, r.currency, r.bank))
    bare = len(reqs) / (time.perf_counter() - start)
    return routed, bare


def latencies(router: Router, reqs: list[RouteRequest]) -> list[float]:
    clock, decide = time.perf_counter, router.decide
    out: list[float] = []
    for r in reqs:
        t = clock()
        decide(r, 0.0)
        out.append(clock() - t)
    return out


def split(n: int) -> dict[str, Any]:
    """1% of ICBC's payments through netsunion: the share measured over ``n`` payments."""
    rule = Rule("cards", ("unionpay", "netsunion"), banks=("ICBC",))
    rates = {"unionpay": 2500, "netsunion": 1500}
    config = RoutingConfig(1, (rule,), {"ICBC": {"netsunion": 100}}, rates)
    router = Router(config, HealthBoard())
    hits = sum(
        router.decide(RouteRequest(f"pay_{i:010d}", "m1", "page", 100, "CNY", "ICBC"), 0.0).channel
        == "netsunion"
        for i in range(n)
    )
    share = 100 * hits / n
    return {
        "payments": n,
        "configured_pct": 1.0,
        "measured_pct": round(share, 3),
        "off_by_pp": round(share - 1.0, 3),
        "within_half_pp": abs(share - 1.0) <= 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--payments", type=int, default=100_000)
    args = parser.parse_args()
    console = Console(stderr=True)
    config = RoutingConfig(1, rules(args.rules), {"ICBC": {"netsunion": 100}},
                           {"unionpay": 2500, "netsunion": 1500, "wechatpay": 2000})  # fmt: skip
    router = Router(config, HealthBoard())
    reqs = requests(args.decisions)
    with common.progress(console) as bar:
        task = bar.add_task("routing", total=4)
        throughput(router, reqs[:20_000])  # warm the candidate cache and the interpreter
        bar.advance(task)
        routed, bare = throughput(router, reqs)
        bar.advance(task)
        lat = latencies(router, reqs[: min(len(reqs), 100_000)])
        bar.advance(task)
        shares = split(args.payments)
        bar.advance(task)
    matched = sum(router.decide(r, 0.0).rule != "default" for r in reqs[:10_000])
    result = {
        "rules": args.rules,
        "decisions": len(reqs),
        "decisions_per_s": round(routed),
        "goal_per_s": GOAL_PER_S,
        "bare_dict_lookups_per_s": round(bare),
        "router_over_dict": common.ratio(bare, routed, 1),
        "decision_latency_us": common.spread_us(lat),
        "requests_matching_a_specific_rule_pct": round(matched / 100, 1),
        "split": shares,
        "machine": common.machine_note(),
    }
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (common.RESULTS_DIR / "routing.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
