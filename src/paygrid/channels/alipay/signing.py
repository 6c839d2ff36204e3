"""Alipay open platform signatures (签名/验签), RSA2 = SHA256withRSA, PKCS#1 v1.5, base64.

Domain-level: only ``cryptography`` and the standard library.

- Request (商户 → 支付宝): over every parameter sent except ``sign``, empty values left out,
  ``sign_type`` included, sorted by key, joined ``k=v`` with ``&``, values not URL-encoded;
  signed with the app private key (应用私钥).
- Synchronous response (同步响应) ``{"<method>_response": {…}, "sign": "…"}``: signed by the
  Alipay key (支付宝私钥) over the exact raw text of the node, from its ``{`` to the matching
  ``}``; the verifier cuts that text out of the body and never re-serialises it.
- Asynchronous notify and return parameters (异步通知/同步跳转): over every parameter except
  ``sign`` and ``sign_type``, sorted, ``k=v`` joined with ``&`` (empty values kept).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import textwrap
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIGN_TYPE = "RSA2"
ERROR_NODE = "error_response"
MAX_SIGNATURE_CHARS = 1024  # RSA-4096 is 684 base64 characters


class SignatureError(Exception):
    """A signature, or the text it should cover, does not verify (验签失败)."""


# --- keys -------------------------------------------------------------------------------------


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """The app private key (应用私钥): PKCS#8 or PKCS#1 PEM, or the bare base64 body that the
    Alipay key tool prints."""
    key = serialization.load_pem_private_key(_pem(text, "PRIVATE KEY"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("expected an RSA private key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """The Alipay public key (支付宝公钥) or the app public key: PEM or bare base64."""
    key = serialization.load_pem_public_key(_pem(text, "PUBLIC KEY"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("expected an RSA public key")
    return key


def _pem(text: str, label: str) -> bytes:
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return stripped.encode("ascii")
    body = "\n".join(textwrap.wrap("".join(stripped.split()), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode("ascii")


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


# --- RSA2 -------------------------------------------------------------------------------------


def rsa2_sign(private_key: rsa.RSAPrivateKey, content: str) -> str:
    signature = private_key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def rsa2_verify(public_key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    if not signature or len(signature) > MAX_SIGNATURE_CHARS:
        return False
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
        public_key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# --- requests (请求签名) -----------------------------------------------------------------------


def request_sign_content(params: Mapping[str, str]) -> str:
    """The string a request signature covers: sorted non-empty params except ``sign``."""
    items = sorted((k, v) for k, v in params.items() if k != "sign" and k and v)
    return "&".join(f"{k}={v}" for k, v in items)


def sign_request(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """``params`` with empty values left out and ``sign`` added."""
    kept = {k: v for k, v in params.items() if k != "sign" and v}
    return {**kept, "sign": rsa2_sign(private_key, request_sign_content(kept))}


def verify_request(params: Mapping[str, str], public_key: rsa.RSAPublicKey) -> None:
    if not rsa2_verify(public_key, request_sign_content(params), params.get("sign", "")):
        raise SignatureError("request signature does not verify")


# --- notify and return parameters (异步通知/同步跳转验签) ---------------------------------------


def notify_sign_content(params: Mapping[str, str]) -> str:
    """The string a notify (or return) signature covers: all but ``sign`` and ``sign_type``."""
    items = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type"))
    return "&".join(f"{k}={v}" for k, v in items)


def sign_notify(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """``params`` with ``sign_type`` RSA2 and ``sign`` added (what the Alipay side does)."""
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    unsigned["sign_type"] = SIGN_TYPE
    return {**unsigned, "sign": rsa2_sign(private_key, notify_sign_content(unsigned))}


def verify_notify(params: Mapping[str, str], public_key: rsa.RSAPublicKey) -> None:
    if params.get("sign_type", SIGN_TYPE) != SIGN_TYPE:
        raise SignatureError(f"sign_type {params.get('sign_type')!r} is not RSA2")
    if not rsa2_verify(public_key, notify_sign_content(params), params.get("sign", "")):
        raise SignatureError("notify signature does not verify")


# --- synchronous responses (同步响应验签) ------------------------------------------------------


def response_node_name(method: str) -> str:
    """``alipay.trade.query`` → ``alipay_trade_query_response``."""
    return method.replace(".", "_") + "_response"


def signed_response(node_name: str, node_text: str, private_key: rsa.RSAPrivateKey) -> str:
    """The body ``{"<node>":<node_text>,"sign":"…"}`` signed over ``node_text`` as is."""
    sign = rsa2_sign(private_key, node_text)
    return f'{{"{node_name}":{node_text},"sign":{json.dumps(sign)}}}'


def extract_node(raw: str, node_name: str) -> str | None:
    """The exact text of the JSON object under the top-level key ``node_name``, or None.

    Found by the key and then by counting braces outside string literals, so ``{``/``}`` or
    escaped quotes inside values do not end it early.
    """
    match = re.search(r'"' + re.escape(node_name) + r'"\s*:\s*\{', raw)
    if match is None:
        return None
    start = match.end() - 1
    depth = 0
    in_string = escaped = False
    for index in range(start, len(raw)):
        char = raw[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return raw[start : index + 1]
    return None


def read_response(raw: str, method: str) -> tuple[str, str, str | None]:
    """``(node_name, node_text, sign)`` of a gateway answer: the method's node, else
    ``error_response``. Raises SignatureError when neither is a JSON object in ``raw``."""
    for name in (response_node_name(method), ERROR_NODE):
        text = extract_node(raw, name)
        if text is not None:
            return name, text, _top_level_sign(raw)
    raise SignatureError(f"no {response_node_name(method)} in the answer")


def _top_level_sign(raw: str) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    sign = data.get("sign") if isinstance(data, dict) else None
    return sign if isinstance(sign, str) and sign else None


def verify_response(raw: str, method: str, public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The verified response node as a dict; SignatureError when unsigned or not verifying."""
    name, text, sign = read_response(raw, method)
    if sign is None:
        raise SignatureError(f"{name} is not signed")
    if not rsa2_verify(public_key, text, sign):
        raise SignatureError(f"{name} signature does not verify")
    node = json.loads(text)
    if not isinstance(node, dict):
        raise SignatureError(f"{name} is not a JSON object")
    return node
