"""UnionPay sandbox (银联全渠道沙箱): a separate HTTP server speaking ACP 5.1.0.

``python -m paygrid.channels.unionpay.sandbox --data-dir DIR [--host H] [--port 8103]``
"""

from paygrid.channels.unionpay.credentials import DEFAULT_PORT, load_or_create_credentials
from paygrid.channels.unionpay.sandbox.app import create_app, run

__all__ = ["DEFAULT_PORT", "create_app", "load_or_create_credentials", "run"]
