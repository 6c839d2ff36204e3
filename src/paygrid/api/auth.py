"""Request signatures (DESIGN.md): PAYGRID-HMAC-SHA256 over
``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``, timestamp within ±300 s, nonce once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, exists, insert, select
from sqlalchemy.exc import IntegrityError

from paygrid.api.errors import ApiError
from paygrid.kernel.clock import utcnow
from paygrid.merchants import repository as merchants_repo
from paygrid.merchants.domain import ApiKey, Merchant
from paygrid.merchants.vault import Vault
from paygrid.storage.database import Database
from paygrid.storage.schema import api_nonces, merchant_keys, merchants

SCHEME = "PAYGRID-HMAC-SHA256"
TIMESTAMP_WINDOW_S = 300
MAX_NONCE_LEN = 64
_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")  # Unix seconds, ASCII digits only
KEY_CACHE_TTL_S = 30.0
KEY_CACHE_MAX = 10_000


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


class MerchantKeys:
    """The merchants' keys, opened once and kept for ``KEY_CACHE_TTL_S``: a request costs no
    read of the merchant and key (nor an unsealing). Nothing a key's state decides is taken
    from the cache: the nonce is written only if, at that moment, the key and the merchant are
    still active and the key unexpired (:func:`_use_nonce`); if not, the entry is dropped and
    the request authenticated again from the database."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self._vault = vault
        self._lock = threading.Lock()
        self._cached: dict[tuple[str, str], tuple[float, Merchant | None, ApiKey | None]] = {}

    def lookup(self, mchid: str, key_id: str) -> tuple[Merchant | None, ApiKey | None]:
        now = time.monotonic()
        with self._lock:
            hit = self._cached.get((mchid, key_id))
        if hit is not None and now - hit[0] < KEY_CACHE_TTL_S:
            return hit[1], hit[2]
        with self.db.read() as conn:
            merchant = merchants_repo.get(conn, mchid)
            key = merchants_repo.get_key(conn, self._vault, mchid, key_id)
        with self._lock:
            if len(self._cached) >= KEY_CACHE_MAX:
                self._cached.clear()  # bounded; refilled by the next requests
            self._cached[(mchid, key_id)] = (now, merchant, key)
        return merchant, key

    def forget(self, mchid: str, key_id: str) -> None:
        with self._lock:
            self._cached.pop((mchid, key_id), None)


def authenticate(
    keys: MerchantKeys,
    header: str | None,
    method: str,
    path_and_query: str,
    body: bytes,
) -> Principal:
    fields = parse_header(header)
    try:
        return _authenticate(keys, fields, method, path_and_query, body)
    except _KeyChanged:
        keys.forget(fields["mchid"], fields["key_id"])  # rotated or suspended meanwhile
    try:
        return _authenticate(keys, fields, method, path_and_query, body)
    except _KeyChanged:
        raise _unauthorized("UNAUTHORIZED", "unknown merchant or key") from None


class _KeyChanged(Exception):
    """The cached key or merchant is no longer active: look again in the database."""


def _authenticate(
    keys: MerchantKeys, fields: dict[str, str], method: str, path_and_query: str, body: bytes
) -> Principal:
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
    merchant, key = keys.lookup(fields["mchid"], fields["key_id"])
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
    if not _use_nonce(keys.db, key, nonce, utcnow()):
        raise _KeyChanged
    return Principal(merchant, key.key_id)


_KEY_ACTIVE = exists().where(
    merchant_keys.c.key_id == bindparam("key_id"),
    merchant_keys.c.mchid == bindparam("mchid"),
    merchant_keys.c.status == "ACTIVE",
    (merchant_keys.c.expires_at.is_(None)) | (merchant_keys.c.expires_at > bindparam("now")),
    merchants.c.mchid == merchant_keys.c.mchid,
    merchants.c.status == "ACTIVE",
)
_USE_NONCE = (  # built once: building it per request cost more than running it
    insert(api_nonces)
    .from_select(
        ["mchid", "nonce", "expires_at"],
        select(
            bindparam("mchid", type_=api_nonces.c.mchid.type),
            bindparam("nonce", type_=api_nonces.c.nonce.type),
            bindparam("expires_at", type_=api_nonces.c.expires_at.type),
        ).where(_KEY_ACTIVE),
    )
    .returning(api_nonces.c.nonce)
)


def _use_nonce(db: Database, key: ApiKey, nonce: str, now: datetime) -> bool:
    """Record the nonce, in one statement, only if the key and its merchant are active now;
    False if they are not (the cached key is stale)."""
    params = {
        "mchid": key.mchid,
        "key_id": key.key_id,
        "nonce": nonce,
        "now": now,
        "expires_at": now + timedelta(seconds=2 * TIMESTAMP_WINDOW_S),
    }
    try:
        with db.transaction() as conn:
            written = conn.execute(_USE_NONCE, params).first()
    except IntegrityError:
        raise _unauthorized("NONCE_REUSED", "this nonce was already used") from None
    return written is not None


def purge_nonces(db: Database) -> int:
    with db.transaction() as conn:
        return conn.execute(delete(api_nonces).where(api_nonces.c.expires_at < utcnow())).rowcount
