"""Schemathesis hooks that sign every generated request as a real merchant.

Load with ``SCHEMATHESIS_HOOKS=tests/security/schemathesis_signing.py`` and point
``PAYGRID_SCHEMATHESIS_CREDENTIALS`` at the merchant's credentials (the data dir's
demo-merchant.json: mchid, key_id, secret). docs/operations.md shows a whole run."""

from __future__ import annotations

import functools
import json
import os
import secrets
from pathlib import Path
from typing import Any

import requests
import schemathesis

from paygrid.api.auth import authorization_header

CREDENTIALS_ENV = "PAYGRID_SCHEMATHESIS_CREDENTIALS"


class PaygridSigner(requests.auth.AuthBase):
    """Signs the request as it goes on the wire: method, target and body bytes after
    schemathesis and requests serialized it, with a fresh nonce and timestamp each time
    (requests calls this again if it has to resend)."""

    def __init__(self, credentials: dict[str, str]) -> None:
        self.mchid = credentials["mchid"]
        self.key_id = credentials["key_id"]
        self.secret = credentials["secret"]

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        if not isinstance(raw, bytes) or r.method is None:
            raise TypeError("only a request with its whole body at hand can be signed")
        r.headers["Authorization"] = authorization_header(
            self.mchid,
            self.key_id,
            self.secret,
            r.method,
            r.path_url,
            raw,
            secrets.token_hex(16),
        )
        return r


def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    kwargs["auth"] = _signer_from_env()


@functools.cache
def _signer_from_env() -> PaygridSigner:
    return PaygridSigner(json.loads(Path(os.environ[CREDENTIALS_ENV]).read_text()))


if CREDENTIALS_ENV in os.environ:  # loaded as SCHEMATHESIS_HOOKS, not imported by a test
    schemathesis.hook(before_call)
