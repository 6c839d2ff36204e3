"""WeChat Pay API v3 (微信支付): adapter, signing, trade bill, and a sandbox in ``sandbox/``."""

from paygrid.channels.wechatpay.adapter import WechatPayAdapter
from paygrid.channels.wechatpay.transport import WechatPayConfig

__all__ = ["WechatPayAdapter", "WechatPayConfig"]
