"""Request signatures (DESIGN.md): PAYGRID-HMAC-SHA256 over
``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``, timestamp within ±300 s, nonce once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from paygrid.api.errors import ApiError
from paygrid.kernel.clock import utcnow
from paygrid.merchants import repository as merchants
from paygrid.merchants.domain import Merchant
from paygrid.merchants.vault import Vault
from paygrid.storage.database import Database
from paygrid.storage.schema import api_nonces

SCHEME = "PAYGRID-HMAC-SHA256"
TIMESTAMP_WINDOW_S = 300
MAX_NONCE_LEN = 64
_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")  # Unix seconds, ASCII digits only


@dataclass(frozen=True, slots=True)
class Principal:
    merchant: Merchant
    key_id: str


def string_to_sign(
    method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    head = f"{method}\n{path_and_query}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def sign(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def authorization_header(
    mchid: str,
    key_id: str,
    secret: str,
    method: str,
    path_and_query: str,
    body: bytes,
    nonce: str,
    timestamp: int | None = None,
) -> str:
    """Client side of the scheme (used by the CLI, tests and benchmarks)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = sign(secret, string_to_sign(method, path_and_query, ts, nonce, body))
    return (
        f'{SCHEME} mchid="{mchid}",key_id="{key_id}",nonce="{nonce}",timestamp="{ts}",'
        f'signature="{signature}"'
    )


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def parse_header(value: str | None) -> dict[str, str]:
    if not value:
        raise _unauthorized("UNAUTHORIZED", "missing Authorization header")
    scheme, _, params = value.partition(" ")
    if scheme != SCHEME:
        raise _unauthorized("UNAUTHORIZED", f"Authorization scheme must be {SCHEME}")
    fields = dict(_PARAM_RE.findall(params))
    missing = [
        k for k in ("mchid", "key_id", "nonce", "timestamp", "signature") if not fields.get(k)
    ]
    if missing:
        raise _unauthorized("UNAUTHORIZED", f"Authorization lacks {', '.join(missing)}")
    return fields


def authenticate(
    db: Database,
    vault: Vault,
    header: str | None,
    method: str,
    path_and_query: str,
    body: bytes,
) -> Principal:
    fields = parse_header(header)
    if not _TIMESTAMP_RE.fullmatch(fields["timestamp"]):
        raise _unauthorized("TIMESTAMP_INVALID", "timestamp must be Unix seconds")
    ts = int(fields["timestamp"])
    if abs(time.time() - ts) > TIMESTAMP_WINDOW_S:
        raise _unauthorized(
            "TIMESTAMP_EXPIRED", f"timestamp is more than {TIMESTAMP_WINDOW_S}s from server time"
        )
    nonce = fields["nonce"]
    if len(nonce) > MAX_NONCE_LEN:
        raise _unauthorized("NONCE_INVALID", f"nonce longer than {MAX_NONCE_LEN} characters")
    with db.read() as conn:
        merchant = merchants.get(conn, fields["mchid"])
        key = merchants.get_key(conn, vault, fields["mchid"], fields["key_id"])
    if merchant is None or key is None or key.status != "ACTIVE" or not merchant.active:
        raise _unauthorized("UNAUTHORIZED", "unknown merchant or key")
    expected = sign(
        key.secret, string_to_sign(method, path_and_query, fields["timestamp"], nonce, body)
    )
    # As bytes: compare_digest refuses str with non-ASCII characters (a header is latin-1).
    if not hmac.compare_digest(expected.encode(), fields["signature"].encode()):
        raise _unauthorized("SIGNATURE_INVALID", "signature does not match the request")
    if not key.valid_at(utcnow()):  # told only to whoever holds the secret
        raise _unauthorized("KEY_EXPIRED", "this key was rotated and its grace period is over")
    _use_nonce(db, merchant.mchid, nonce)
    return Principal(merchant, key.key_id)


def _use_nonce(db: Database, mchid: str, nonce: str) -> None:
    expires = utcnow() + timedelta(seconds=2 * TIMESTAMP_WINDOW_S)
    try:
        with db.transaction() as conn:
            conn.execute(insert(api_nonces).values(mchid=mchid, nonce=nonce, expires_at=expires))
    except IntegrityError:
        raise _unauthorized("NONCE_REUSED", "this nonce was already used") from None


def purge_nonces(db: Database) -> int:
    with db.transaction() as conn:
        return conn.execute(delete(api_nonces).where(api_nonces.c.expires_at < utcnow())).rowcount
