"""``/v1/bills``: the merchant's daily bill (商户对账单), to reconcile against paygrid."""

from __future__ import annotations

import re
from datetime import date

from fastapi import APIRouter, Request, Response

from paygrid.api import openapi as doc
from paygrid.api.deps import ApiDeps, call
from paygrid.api.errors import ApiError
from paygrid.kernel.clock import business_date, utcnow
from paygrid.reports.merchant_bill import merchant_bill_csv

FIRST_BILL_DATE = date(2000, 1, 1)  # no bill before; also keeps day arithmetic in range
_BILL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def router(deps: ApiDeps) -> APIRouter:
    routes = APIRouter(tags=["bills"])

    @routes.get(
        "/v1/bills/{bill_date}",
        operation_id="getBill",
        summary="The merchant's daily bill (CSV)",
        response_class=Response,
        responses=doc.csv_responses(
            "The payments and the refunds that succeeded on that business date, one CSV row "
            "each (columns in docs/merchant-api.md; amounts in fen, negative for a refund).",
            {
                "Content-Disposition": {
                    "description": "attachment; filename=paygrid-bill-<mchid>-<date>.csv",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "Paygrid-Bill-Complete": {
                    "description": "false while the business day is still running.",
                    "required": True,
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
            },
        ),
        openapi_extra=doc.operation(doc.BILL_DATE),
    )
    async def merchant_bill(bill_date: str, request: Request) -> Response:
        principal, _ = await deps.signed(request)
        day = _bill_day(bill_date)
        today = business_date(utcnow(), deps.zone)
        if day > today:
            raise ApiError(
                400, "INVALID_BILL_DATE", "that business date has not begun", "bill_date"
            )
        text = await call(merchant_bill_csv, deps.db, principal.merchant.mchid, day, deps.zone)
        filename = f"paygrid-bill-{principal.merchant.mchid}-{day.isoformat()}.csv"
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Paygrid-Bill-Complete": "true" if day < today else "false",
            },
        )

    return routes


def _bill_day(text: str) -> date:
    if not _BILL_DATE.fullmatch(text):
        raise ApiError(400, "INVALID_BILL_DATE", "bill date must be yyyy-mm-dd", "bill_date")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "INVALID_BILL_DATE", "no such date", "bill_date") from None
    if day < FIRST_BILL_DATE:
        raise ApiError(
            400, "INVALID_BILL_DATE", f"no bills before {FIRST_BILL_DATE.isoformat()}", "bill_date"
        )
    return day
