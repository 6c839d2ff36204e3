"""The figures as text, and the ratios to the baseline of the same run."""

from __future__ import annotations

import json
from typing import Any

from common import ratio

from e2e.cpu import is_paygrid

Rows = list[tuple[str, str]]
TOP_PROCESSES = 6
PAY_TO_NOTIFIED = "pay -> merchant notified"  # a stage of e2e/platform_rows.py, shown apart


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """paygrid beside the baseline of the same run: throughput, create latency, and CPU."""
    p, r, b = result["payments"], result.get("refunds") or {}, result["baseline"]
    server_cpu = b["cpu_ms_per_request"].get("baseline server")
    return {
        "payments_per_s / baseline req_per_s": ratio(p["payments_per_s"], b["req_per_s"], 3),
        "refunds_per_s / baseline req_per_s": ratio(r.get("refunds_per_s"), b["req_per_s"], 3),
        "create p50 / baseline p50": ratio(p["create"]["p50_ms"], b["p50_ms"], 2),
        "refund create p50 / baseline p50": ratio(
            (r.get("create") or {}).get("p50_ms"), b["p50_ms"], 2
        ),
        "paygrid CPU per payment / baseline server CPU per request": ratio(
            p["cpu_ms_per_payment"].get("paygrid"), server_cpu, 1
        ),
        "paygrid CPU per refund / baseline server CPU per request": ratio(
            (r.get("cpu_ms_per_refund") or {}).get("paygrid"), server_cpu, 1
        ),
    }


def _p(spread: dict[str, float]) -> str:
    return f"{spread['p50_ms']} / {spread['p99_ms']} ms"


def _cpu_line(per_unit: dict[str, float]) -> str:
    total = sum(per_unit.values())
    parts = ", ".join(f"{name} {value:.2f}" for name, value in per_unit.items())
    return f"{total:.2f} ms  ({parts})"


def _cores_line(cores: dict[str, float], cpus: int) -> str:
    parts = ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    return f"{sum(cores.values()):.2f} of {cpus}  ({parts})"


def _profile_line(cfg: dict[str, Any]) -> str:
    if cfg.get("profile") != "prod":
        return "embedded (`paygrid up`: API, cashier, relay, ledger, notifier in one process)"
    names = ", ".join(n for n in cfg.get("processes") or {} if is_paygrid(n))
    return f"prod (`paygrid up --profile prod`; paygrid = {names})"


def _machine_line(cfg: dict[str, Any]) -> str:
    before, after = cfg["machine_before"], cfg.get("machine_after") or {}
    loads = " -> ".join(
        "/".join(str(v) for v in m["load_average_1_5_15"]) for m in (before, after) if m
    )
    return (
        f"{cfg['cpus']} CPUs, shared with other sessions' test runs (load average 1/5/15 min "
        f"{loads}): absolute figures move between runs; compare the ratios"
    )


def _work_line(work: dict[str, float]) -> str:
    held = work.get("write_slot_held_ms")
    return (
        f"{work['transactions']} transactions ({work['of_them_read_only']} read-only), "
        f"{work['statements']} statements  (paygrid_db_*_total on every process's /metrics)"
        + (f"; SQLite's writer slot held {held} ms" if held else "")
    )


def _cpu_rows(figures: dict[str, Any], unit: str, cpus: int) -> Rows:
    each = figures.get(f"paygrid_cpu_ms_per_{unit}_by_process") or {}
    top = ", ".join(f"{name} {v:.2f}" for name, v in list(each.items())[:TOP_PROCESSES])
    return [
        (f"CPU per {unit}", _cpu_line(figures[f"cpu_ms_per_{unit}"])),
        *([("  paygrid by process (ms)", top)] if top else []),
        *(
            [(f"database work per {unit}", _work_line(figures[f"db_work_per_{unit}"]))]
            if figures.get(f"db_work_per_{unit}")
            else []
        ),
        *(
            [("SQLite writer slot busy", f"{busy:.0%} of the phase (1 writer at a time)")]
            if (busy := figures.get("sqlite_writer_busy"))
            else []
        ),
        ("CPU cores busy", _cores_line(figures["cpu_cores_busy"], cpus)),
        ("backlog when load ended", json.dumps(figures["backlog_at_load_end"])),
    ]


def _by_channel_rows(figures: dict[str, Any], waited: str) -> Rows:
    return [
        (
            f"  {channel} (n={v['create']['n']})",
            f"create {_p(v['create'])}, {waited} {_p(v['to_notified'])}",
        )
        for channel, v in figures["by_channel"].items()
    ]


def _payment_rows(p: dict[str, Any], cpus: int) -> Rows:
    timed_out = "" if p["all_notified_within_timeout"] else " (TIMED OUT)"
    return [
        (
            "PAYMENTS",
            "signed create (+ the channel's order at its sandbox) -> payer pays at the "
            "sandbox -> callback -> ledger -> merchant notification",
        ),
        (
            "payments",
            f"{p['notified']} of {p['payments']} notified{timed_out}, "
            f"{p['client_errors']} client errors",
        ),
        (
            "payments/s",
            f"{p['payments_per_s']}  (N / time to the last notification, "
            f"{p['elapsed_s']} s; creates+pays took {p['load_phase_s']} s)",
        ),
        ("create p50 / p99", _p(p["create"])),
        ("sandbox pay p50 / p99", _p(p["pay"])),
        ("pay -> notified p50 / p99", _p(p["stages"][PAY_TO_NOTIFIED])),
        ("create -> notified p50 / p99", _p(p["create_to_notified"])),
        *[(f"  {name}", _p(v)) for name, v in p["stages"].items() if name != PAY_TO_NOTIFIED],
        ("by channel", "p50 / p99"),
        *_by_channel_rows(p, "pay -> notified"),
        *_cpu_rows(p, "payment", cpus),
        *(
            [("RESTARTS during run", json.dumps(p["restarts_during_run"]))]
            if p.get("restarts_during_run")
            else []
        ),
    ]


def _refund_rows(r: dict[str, Any], cpus: int) -> Rows:
    timed_out = "" if r["all_notified_within_timeout"] else " (TIMED OUT)"
    return [
        (
            "REFUNDS",
            "signed POST /v1/refunds -> the channel's refund (its answer or its refund "
            "callback) -> SUCCESS -> refund voucher -> merchant notification",
        ),
        (
            "refunds",
            f"{r['notified']} of {r['refunds']} notified{timed_out} ({r['full_refunds']} "
            f"full, {r['partial_refunds']} partial, of {r['refunded_payments']} payments), "
            f"{r['failed_notified']} refund.failed, {r['client_errors']} client errors",
        ),
        (
            "refunds/s",
            f"{r['refunds_per_s']}  (N / time to the last notification, "
            f"{r['elapsed_s']} s; creates took {r['load_phase_s']} s)",
        ),
        ("refund create p50 / p99", _p(r["create"])),
        ("refund -> notified p50 / p99", _p(r["create_to_notified"])),
        *[(f"  {name}", _p(v)) for name, v in r["stages"].items()],
        ("by channel", "p50 / p99"),
        *_by_channel_rows(r, "refund -> notified"),
        *_cpu_rows(r, "refund", cpus),
        ("refund statuses over HTTP", json.dumps(r["statuses_over_http"])),
    ]


def _baseline_rows(b: dict[str, Any], cpus: int) -> Rows:
    return [
        ("BASELINE", "bare FastAPI POST, one-row INSERT + COMMIT, same engine and uvicorn setup"),
        ("requests", f"{b['ok']} of {b['requests']} ok, {b['errors']} errors"),
        ("req/s", f"{b['req_per_s']}  ({b['elapsed_s']} s)"),
        ("p50 / p99", f"{b['p50_ms']} / {b['p99_ms']} ms"),
        ("CPU per request", _cpu_line(b["cpu_ms_per_request"])),
        ("CPU cores busy", _cores_line(b["cpu_cores_busy"], cpus)),
    ]


def _end_rows(result: dict[str, Any]) -> Rows:
    end, n = result["end"], result["notifications_received"]
    check = end["check_exit_code"]
    return [
        ("payment statuses over HTTP", json.dumps(end["payment_statuses_over_http"])),
        ("notifications received", json.dumps(n)),
        ("db after drain", json.dumps(end["db_after_drain"])),
        ("paygrid check", "money invariants HOLD" if check == 0 else f"VIOLATIONS (exit {check})"),
    ]


def report(result: dict[str, Any]) -> str:
    cfg, cpus = result["config"], result["config"]["cpus"]
    rows: Rows = [
        ("machine", _machine_line(cfg)),
        ("profile", _profile_line(cfg)),
        ("database", cfg["database"] + (f" ({cfg['postgres']})" if cfg["postgres"] else "")),
        ("channel", f"{cfg['channel']}: {', '.join(cfg['channels'])}"),
        ("load generator", cfg["load_generator"]),
        ("server stack", cfg["server_stack"]),
        ("", ""),
        *_payment_rows(result["payments"], cpus),
        ("", ""),
        *([*_refund_rows(result["refunds"], cpus), ("", "")] if result.get("refunds") else []),
        *_baseline_rows(result["baseline"], cpus),
        ("", ""),
        ("RATIOS", "paygrid beside the baseline of this run"),
        *[(f"  {k}", str(v)) for k, v in result["ratios"].items() if v is not None],
        ("", ""),
        *_end_rows(result),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" if k else "" for k, v in rows]
    if result["end"]["check_exit_code"] != 0:
        lines.append(result["end"]["check_output"])
    sources = [("paygrid", result["payments"]), ("refunds", result.get("refunds") or {})]
    for label, part in [*sources, ("baseline", result["baseline"])]:
        lines += [f"{label} error: {e}" for e in part.get("error_examples") or []]
    return "\n".join(lines)
