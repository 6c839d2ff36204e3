"""``/v1/notifications``: the merchant's notifications (商户通知) with their delivery attempts;
resend one now.

The resend takes no Idempotency-Key (docs/merchant-api.md): it changes nothing but delivers
the same notification, with the same id, once more; a repeated resend is one more delivery."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from paygrid.api import openapi as doc
from paygrid.api.deps import ApiDeps, call, require_empty_object
from paygrid.api.errors import ApiError
from paygrid.kernel.ids import is_id
from paygrid.notify.service import NotificationNotFound


def router(deps: ApiDeps) -> APIRouter:
    routes = APIRouter(tags=["notifications"])

    @routes.get(
        "/v1/notifications",
        operation_id="listNotifications",
        summary="List notifications and their delivery attempts",
        response_model=None,
        responses=doc.responses(
            {200: (doc.NotificationList, "The notifications, oldest first (at most 200).")},
            links=doc.NOTIFICATION_LINKS,
        ),
        openapi_extra=doc.operation(doc.PAYMENT_FILTER),
    )
    async def list_notifications(request: Request) -> dict[str, Any]:
        principal, _ = await deps.signed(request)
        payment_id = request.query_params.get("payment_id")
        if payment_id is not None and not is_id(payment_id, "pay"):
            raise ApiError(
                400, "INVALID_PAYMENT_ID", "payment_id is not a payment id", "payment_id"
            )
        items = await call(deps.notify.list_for, principal.merchant.mchid, payment_id)
        return {"data": items}

    @routes.post(
        "/v1/notifications/{notify_id}/resend",
        operation_id="resendNotification",
        summary="Deliver a notification again, now",
        response_model=None,
        responses=doc.responses(
            {200: (doc.Notification, "The notification, with this attempt.")}, (404,)
        ),
        openapi_extra=doc.operation(doc.NOTIFY_ID, body=doc.EMPTY_BODY),
    )
    async def resend_notification(notify_id: str, request: Request) -> dict[str, Any]:
        principal, body = await deps.signed(request)
        require_empty_object(body)
        try:
            if not is_id(notify_id, "ntf"):
                raise NotificationNotFound(notify_id)
            return await call(deps.notify.resend, notify_id, principal.merchant.mchid)
        except NotificationNotFound:
            raise ApiError(404, "NOTIFICATION_NOT_FOUND", f"no notification {notify_id}") from None

    return routes
