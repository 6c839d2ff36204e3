"""The bank sandbox: ``python -m paygrid.channels.bank.sandbox --data-dir D [--port 8105]``."""

from paygrid.channels.bank.credentials import load_or_create_credentials
from paygrid.channels.bank.sandbox.app import DEFAULT_PORT, run

__all__ = ["DEFAULT_PORT", "load_or_create_credentials", "run"]
