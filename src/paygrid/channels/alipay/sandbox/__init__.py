"""Alipay sandbox (支付宝沙箱): a separate HTTP server speaking the open platform gateway.

``python -m paygrid.channels.alipay.sandbox --data-dir DIR [--host H] [--port 8102]``
"""

from paygrid.channels.alipay.credentials import DEFAULT_PORT, load_or_create_credentials
from paygrid.channels.alipay.sandbox.app import create_app, run

__all__ = ["DEFAULT_PORT", "create_app", "load_or_create_credentials", "run"]
