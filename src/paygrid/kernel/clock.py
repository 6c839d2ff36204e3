"""Time: everything stored in UTC; business dates (账期) in the configured zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

DEFAULT_BUSINESS_ZONE = "Asia/Shanghai"


def utcnow() -> datetime:
    return datetime.now(UTC)


def business_date(at: datetime, zone: str = DEFAULT_BUSINESS_ZONE) -> date:
    """The business date (账期) an instant belongs to, with cut-off at 00:00 in `zone`."""
    assert at.tzinfo is not None, "naive datetimes are not allowed"
    return at.astimezone(ZoneInfo(zone)).date()


def as_utc(at: datetime) -> datetime:
    """Normalise a stored datetime (SQLite returns naive UTC) to an aware UTC one."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def rfc3339(at: datetime) -> str:
    return as_utc(at).isoformat(timespec="seconds").replace("+00:00", "Z")
