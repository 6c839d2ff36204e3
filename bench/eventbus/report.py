"""The phases as text, and paygrid's rates over the raw ones."""

from __future__ import annotations

from typing import Any

from eventbus.phases import Phase

# --- report ------------------------------------------------------------------------------------
COMPARE = {  # paygrid phase -> the raw phase it is held against
    "paygrid_relay": "raw_publish",
    "paygrid_consumer": "raw_consume",
    "paygrid_e2e": "raw_publish",
}


def ratios(phases: dict[str, Phase]) -> dict[str, dict[str, float | None]]:
    raws = [p for p in phases.values() if p.name.startswith("raw_")]
    out: dict[str, dict[str, float | None]] = {}
    for p in phases.values():
        if p.name in COMPARE:
            out[p.name] = {r.name: round(p.rate / r.rate, 3) if r.rate else None for r in raws}
    return out


def report(result: dict[str, Any], phases: dict[str, Phase]) -> str:
    cfg = result["config"]
    lines = [
        f"database       {cfg['database_desc']}",
        f"nats-server    {cfg['nats']}",
        f"events         {cfg['events']} a phase, {cfg['body_bytes']}-byte body, "
        f"outbox batch {cfg['batch']}/txn",
        f"machine        {cfg['cpus']} CPUs, load average "
        + "/".join(str(x) for x in cfg["load_average_1_5_15"])
        + " (1/5/15 min) at the end: other work shares these cores, compare ratios",
        "",
    ]
    cpu_head = "CPU us/event: total: top 3"
    head = f"{'phase':<22} {'events/s':>10} {'paygrid/raw':>12}  {cpu_head:<50} what"
    lines += [head, "-" * len(head)]
    for p in phases.values():
        vs = COMPARE.get(p.name)
        ratio = ""
        if vs and phases[vs].rate:
            ratio = f"{p.rate / phases[vs].rate:.3f}"
        n = max(p.done, 1)
        top = sorted(p.cpu_s.items(), key=lambda kv: -kv[1])[:3]
        total = sum(p.cpu_s.values()) * 1e6 / n
        cpu = f"{total:.0f}: " + ", ".join(
            f"{k.split(' ')[0]} {v * 1e6 / n:.0f}" for k, v in top if v > 0
        )
        if not p.done:
            cpu = "-"
        flag = " TIMED OUT" if p.timed_out else ""
        count = "" if p.done == p.events else f" ({p.done}/{p.events})"
        lines.append(f"{p.name:<22} {p.rate:>10,.0f} {ratio:>12}  {cpu:<50} {p.what}{count}{flag}")
    lines.append("")
    lines.append(
        "paygrid/raw: paygrid_relay and paygrid_e2e against raw_publish (awaiting each PubAck; "
        "the relay pipelines them), paygrid_consumer against raw_consume; all ratios in the JSON."
    )
    for name in ("paygrid_e2e", "paygrid_paced"):
        for stage, v in phases[name].latency.items():
            lines.append(f"{name} {stage}: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
    e2e = phases["paygrid_e2e"]
    if e2e.note:
        lines.append(f"paygrid_e2e: {e2e.note}")
    return "\n".join(lines)
