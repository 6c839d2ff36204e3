"""Routing configuration versions in the database (routing_versions): append-only and audited.

A change writes version N+1 with who, when, why and the whole new configuration; the one
before it is the "before". A rollback writes a new version with an older content. Two
operators changing at once: one wins the version number, the other is told to look again."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from paygrid.kernel.clock import utcnow
from paygrid.routing.config import ConfigError, RoutingConfig, config_from_json
from paygrid.storage.database import Database
from paygrid.storage.schema import routing_versions

MAX_ACTOR_LEN = 64
MAX_REASON_LEN = 2000
HISTORY_LIMIT = 1000  # versions a history listing shows at most


@dataclass(frozen=True, slots=True)
class Version:
    """One configuration version as the audit shows it."""

    version: int
    config: RoutingConfig
    action: str
    actor: str
    reason: str
    created_at: datetime


class ConcurrentChange(Exception):
    """Another change took the next version number first; read the configuration again."""


EMPTY = RoutingConfig(version=0)  # no version yet: no rules, every payment names its channel


def current_version(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.max(routing_versions.c.version))).scalar() or 0)


def load(db: Database, version: int | None = None) -> Version | None:
    """The version in force (or ``version``); None when routing was never configured."""
    query = select(routing_versions)
    if version is None:
        query = query.order_by(routing_versions.c.version.desc()).limit(1)
    else:
        query = query.where(routing_versions.c.version == version)
    with db.read() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return Version(
        version=row.version,
        config=config_from_json(row.version, json.loads(row.config)),
        action=row.action,
        actor=row.actor,
        reason=row.reason,
        created_at=row.created_at,
    )


def in_force(db: Database) -> RoutingConfig:
    found = load(db)
    return found.config if found else EMPTY


def history(db: Database, limit: int = 50) -> list[Version]:
    """The newest ``limit`` versions, newest first."""
    limit = max(1, min(limit, HISTORY_LIMIT))
    with db.read() as conn:
        rows = conn.execute(
            select(routing_versions.c.version)
            .order_by(routing_versions.c.version.desc())
            .limit(limit)
        ).all()
    found = [load(db, r.version) for r in rows]
    return [v for v in found if v is not None]


def change(
    db: Database,
    action: str,
    actor: str,
    reason: str,
    make: Callable[[RoutingConfig], RoutingConfig],
) -> Version:
    """Apply ``make`` to the configuration in force and write the result as the next version.
    ``make`` raises ConfigError to refuse; nothing is written then."""
    if not actor.strip() or len(actor) > MAX_ACTOR_LEN:
        raise ConfigError(f"--by names who changes routing (1 to {MAX_ACTOR_LEN} characters)")
    if not reason.strip() or len(reason) > MAX_REASON_LEN:
        raise ConfigError(f"--reason says why (1 to {MAX_REASON_LEN} characters)")
    before = in_force(db)
    after = make(before)
    if after.canonical() == before.canonical() and before.version:
        raise ConfigError(f"nothing changes: version {before.version} is already this")
    version = before.version + 1
    now = utcnow()
    try:
        with db.transaction() as conn:
            conn.execute(
                insert(routing_versions).values(
                    version=version,
                    config=after.canonical(),
                    action=action,
                    actor=actor.strip(),
                    reason=reason.strip(),
                    created_at=now,
                )
            )
    except IntegrityError:
        raise ConcurrentChange(
            f"version {version} was written by someone else meanwhile; look again"
        ) from None
    return Version(version, config_from_json(version, after.to_json()), action, actor, reason, now)


def rollback(db: Database, actor: str, reason: str, to: int | None = None) -> Version:
    """Put back the content of version ``to`` (default: the one before the current) as a new
    version."""
    current = in_force(db).version
    target = to if to is not None else current - 1
    if not 1 <= target < current:
        raise ConfigError(f"there is no earlier version {target} to roll back to")
    older = load(db, target)
    assert older is not None, f"routing version {target} is missing"
    return change(
        db, "rollback", actor, f"back to version {target}: {reason}", lambda _: older.config
    )
