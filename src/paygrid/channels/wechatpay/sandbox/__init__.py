"""WeChat Pay sandbox (微信支付沙箱): a separate HTTP server speaking API v3.

``python -m paygrid.channels.wechatpay.sandbox --data-dir DIR [--host H] [--port 8101]``
"""

from paygrid.channels.wechatpay.credentials import load_or_create_credentials
from paygrid.channels.wechatpay.sandbox.app import DEFAULT_PORT, create_app, run

__all__ = ["DEFAULT_PORT", "create_app", "load_or_create_credentials", "run"]
