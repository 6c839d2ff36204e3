"""``/v1/reports``: the merchant's own reports. ``/v1/reports/sku/{date}``: per-SKU figures of a
business date (按商品对账), split from what the channels' bills confirmed
(``paygrid.recon.sku_report``), the merchant's SKUs only."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from fastapi import APIRouter, Request, Response

from paygrid.api import openapi as doc
from paygrid.api.deps import ApiDeps, call
from paygrid.api.errors import ApiError
from paygrid.channels import registry
from paygrid.kernel.clock import business_date, utcnow
from paygrid.recon.sku_report import NoBills, sku_figures
from paygrid.recon.sku_results import sku_csv
from paygrid.storage.database import Database

FIRST_REPORT_DATE = date(2000, 1, 1)
_REPORT_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
NOT_READY = (
    "REPORT_NOT_READY: no channel's bill of that business date has been taken in yet (a "
    "channel's bill is out once its day has ended); ask again later."
)


def router(deps: ApiDeps) -> APIRouter:
    routes = APIRouter(tags=["reports"])

    @routes.get(
        "/v1/reports/sku/{report_date}",
        operation_id="getSkuReport",
        summary="The merchant's per-SKU figures of a business date (CSV)",
        response_class=Response,
        responses=doc.csv_responses(
            "One CSV row per SKU of yours on the channels' bills of that date: business_date, "
            "sku, quantity, sales, discount, paid, refund_quantity, refund, fee, net (fen; "
            "columns in docs/merchant-api.md). paid, refund and fee add up exactly to what the "
            "channels confirmed for your payments and refunds.",
            {
                "Content-Disposition": {
                    "description": "attachment; filename=paygrid-sku-<mchid>-<date>.csv",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "Paygrid-Report-Channels": {
                    "description": "The channels whose bills of the date the figures come from, "
                    "comma-separated.",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "Paygrid-Report-Complete": {
                    "description": "false while a channel's bill of the date is not in yet.",
                    "required": True,
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
            },
            {404: NOT_READY},
        ),
        openapi_extra=doc.operation(doc.REPORT_DATE),
    )
    async def sku_report(report_date: str, request: Request) -> Response:
        principal, _ = await deps.signed(request)
        day = _report_day(report_date)
        if day > business_date(utcnow(), deps.zone):
            raise ApiError(
                400, "INVALID_REPORT_DATE", "that business date has not begun", "report_date"
            )
        mchid = principal.merchant.mchid
        report = await call(_sku_csv, deps.db, deps.data_dir, day, mchid)
        if report is None:
            raise ApiError(
                404,
                "REPORT_NOT_READY",
                f"no channel's bill of {day.isoformat()} has been taken in yet; ask again later",
            )
        text, channels = report
        filename = f"paygrid-sku-{mchid}-{day.isoformat()}.csv"
        complete = all(name in channels for name in registry.NAMES)
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Paygrid-Report-Channels": ",".join(channels),
                "Paygrid-Report-Complete": "true" if complete else "false",
            },
        )

    return routes


def _sku_csv(
    db: Database, data_dir: Path | None, day: date, mchid: str
) -> tuple[str, tuple[str, ...]] | None:
    """The merchant's CSV and the channels it covers; None when no bill of the date is in."""
    if data_dir is None:
        return None
    try:
        figures = sku_figures(db, data_dir, day, mchid)
    except NoBills:
        return None
    return sku_csv(figures, mchid), figures.channels


def _report_day(text: str) -> date:
    if not _REPORT_DATE.fullmatch(text):
        raise ApiError(400, "INVALID_REPORT_DATE", "report date must be yyyy-mm-dd", "report_date")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "INVALID_REPORT_DATE", "no such date", "report_date") from None
    if day < FIRST_REPORT_DATE:
        raise ApiError(
            400,
            "INVALID_REPORT_DATE",
            f"no reports before {FIRST_REPORT_DATE.isoformat()}",
            "report_date",
        )
    return day
