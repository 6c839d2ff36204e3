"""The institution's side of its bank: the reserve account's statement over the bank's
host-to-host API (``GET /v1/accounts/{account}/statements/{date}``, bearer key)."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import httpx

from paygrid.channels.ports import BILL_NOT_READY, ChannelError

TIMEOUT_S = 10.0
MAX_STATEMENT_BYTES = 64 * 1024 * 1024
CREDENTIALS_WAIT_S = 10.0
KEYS = ("account", "account_name", "currency", "api_key")


def bank_credentials(base_url: str, credentials_file: Path | None) -> dict[str, str]:
    """The reserve account and the API key: the configured file, or what the bank sandbox
    hands over."""
    if credentials_file is not None:
        creds: dict[str, str] = json.loads(credentials_file.read_text())
    else:
        creds = _from_sandbox(base_url)
    missing = [k for k in KEYS if not isinstance(creds.get(k), str) or not creds[k]]
    if missing:
        raise ChannelError("INVALID_CREDENTIALS", f"bank credentials lack {missing}")
    return creds


def _from_sandbox(base_url: str) -> dict[str, str]:
    deadline = time.monotonic() + CREDENTIALS_WAIT_S
    with httpx.Client(timeout=2.0) as client:  # one client: each new one costs ~0.1 s of CPU
        while True:
            try:
                answer = client.get(f"{base_url}/sandbox/credentials")
                creds: dict[str, str] = answer.raise_for_status().json()
                return creds
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise ChannelError(
                        "NETWORK_ERROR", f"bank sandbox: {exc}", retryable=True
                    ) from None
                time.sleep(0.05)  # the sandbox is still starting
            time.sleep(0.2)


def download_statement(base_url: str, creds: dict[str, str], day: date) -> bytes:
    """The MT940 statement of ``day``; ChannelError BILL_NOT_READY before it is out."""
    url = f"{base_url}/v1/accounts/{creds['account']}/statements/{day.isoformat()}"
    headers = {"Authorization": f"Bearer {creds['api_key']}"}
    try:
        with httpx.stream("GET", url, headers=headers, timeout=TIMEOUT_S) as response:
            if response.status_code != 200:
                response.read()
                raise _refusal(response)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_STATEMENT_BYTES:
                    raise ChannelError("TOO_LARGE", f"statement over {MAX_STATEMENT_BYTES} bytes")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise ChannelError("NETWORK_ERROR", f"bank: {exc}", retryable=True) from None


def _refusal(response: httpx.Response) -> ChannelError:
    try:
        code = str(response.json().get("code", ""))
    except ValueError:
        code = ""
    code = code or f"HTTP_{response.status_code}"
    if code == "STATEMENT_NOT_READY":
        return ChannelError(BILL_NOT_READY, "the statement is not out yet", retryable=True)
    return ChannelError(
        code, f"bank answered {response.status_code} {code}", retryable=response.status_code >= 500
    )
