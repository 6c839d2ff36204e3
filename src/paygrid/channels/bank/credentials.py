"""The reserve account (备付金账户) the bank sandbox keeps for the institution, and the key its
statement API takes. Created on the sandbox's first start and kept as JSON in its data
directory, so a restarted bank keeps the same account."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

CREDENTIALS_FILE = "bank-credentials.json"
ACCOUNT_NAME = "paygrid 备付金专户 (sandbox)"
CURRENCY = "CNY"


def load_or_create_credentials(data_dir: Path) -> dict[str, str]:
    """``account``, ``account_name``, ``currency`` and ``api_key`` (the statement API's
    bearer key), as the institution's bank relationship manager would hand them over."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = {
        "account": "6222021" + "".join(secrets.choice("0123456789") for _ in range(12)),
        "account_name": ACCOUNT_NAME,
        "currency": CURRENCY,
        "api_key": secrets.token_hex(24),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(creds, indent=2, ensure_ascii=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return creds
