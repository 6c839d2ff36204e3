"""Helpers for the WeChat Pay sandbox integration tests: a real sandbox process, a callback
receiver on a local port, and the wechatpayv3 SDK pointed at the sandbox."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx

SRC = Path(__file__).resolve().parents[2] / "src"
READY_PREFIX = "wechatpay sandbox listening on "
CHINA = timezone(timedelta(hours=8))


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    base_url: str
    data_dir: Path

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, trust_env=False)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_sandbox(data_dir: Path, timeout: float = 30.0) -> SandboxProcess:
    """Start ``python -m paygrid.channels.wechatpay.sandbox`` on a free port; wait for ready."""
    return start_module("paygrid.channels.wechatpay.sandbox", READY_PREFIX, data_dir, timeout)


def start_module(
    module: str,
    ready_prefix: str,
    data_dir: Path,
    timeout: float = 30.0,
    env_extra: dict[str, str] | None = None,
) -> SandboxProcess:
    """Start a sandbox (``python -m MODULE``) on a free port and wait for its ready line."""
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", module, "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=_pump, args=(stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        process.kill()
        raise RuntimeError(f"{module} did not print its ready line") from None
    assert line.startswith(ready_prefix), line
    return SandboxProcess(process, line[len(ready_prefix) :].strip(), data_dir)


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:  # keep reading so the sandbox never blocks on a full pipe
        lines.put(line)


@dataclass
class Received:
    headers: Message
    body: bytes


@dataclass
class CallbackReceiver:
    """A merchant's notify_url: records each POST and answers with ``statuses`` in turn."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def answer(self) -> int:
        with self._cond:
            return self.statuses.pop(0) if self.statuses else 204

    def record(self, item: Received) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} callbacks, expected {count}")
                self._cond.wait(left)
            return list(self.received)


@contextmanager
def callback_receiver(statuses: Sequence[int] = ()) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(statuses=list(statuses))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(min(length, 1 << 20))
            receiver.record(Received(self.headers, body))
            self.send_response(receiver.answer())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/wechatpay/notify"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def sdk_client(
    creds: dict[str, str],
    base_url: str,
    notify_url: str,
    mode: str,
    cert_dir: Path | None = None,
) -> Any:
    """wechatpayv3 as a merchant configures it, with only ``_core._gate_way`` changed.

    In certificate mode the SDK downloads certificates inside its constructor, before the gateway
    can be changed; so construction skips that step, the gateway is set, and the SDK's own
    ``_init_certificates`` runs against the sandbox.
    """
    from wechatpayv3 import WeChatPay, WeChatPayType
    from wechatpayv3.core import Core

    common = {
        "wechatpay_type": WeChatPayType.NATIVE,
        "mchid": creds["mchid"],
        "private_key": creds["private_key"],
        "cert_serial_no": creds["cert_serial_no"],
        "appid": creds["appid"],
        "apiv3_key": creds["apiv3_key"],
        "notify_url": notify_url,
        "timeout": (5, 10),
    }
    if mode == "public_key":
        client = WeChatPay(
            **common, public_key=creds["public_key"], public_key_id=creds["public_key_id"]
        )
        client._core._gate_way = base_url
        return client
    original = Core._init_certificates
    Core._init_certificates = lambda self: None
    try:
        client = WeChatPay(**common, cert_dir=str(cert_dir) if cert_dir else None)
    finally:
        Core._init_certificates = original
    client._core._gate_way = base_url
    client._core._init_certificates()
    return client


def beijing_date(rfc3339: str) -> date:
    return datetime.fromisoformat(rfc3339).astimezone(CHINA).date()


def sandbox_credentials(data_dir: Path) -> dict[str, str]:
    """Everything the WeChat Pay sandbox under ``paygrid up --data-dir DATA_DIR`` holds,
    including its platform private key (what only WeChat itself has)."""
    path = data_dir / "sandbox" / "wechatpay" / "wechatpay-credentials.json"
    loaded: dict[str, str] = json.loads(path.read_text())
    return loaded


def genuine_callback(
    data_dir: Path,
    transaction: Mapping[str, Any],
    *,
    apiv3_key: str | None = None,
    associated_data: str = "transaction",
    notify_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A payment callback as only WeChat could send it: ``transaction`` sealed with
    AEAD_AES_256_GCM under the APIv3 key (or ``apiv3_key``) with ``associated_data``, the body
    signed with the sandbox's platform key. Returns (body, headers)."""
    from paygrid.channels.wechatpay.signing import aead_encrypt, load_private_key, sign_response

    creds = sandbox_credentials(data_dir)
    plaintext = json.dumps(dict(transaction), ensure_ascii=False)
    resource = aead_encrypt(apiv3_key or creds["apiv3_key"], plaintext, associated_data)
    envelope = {
        "id": notify_id or str(uuid.uuid4()),
        "create_time": datetime.now(CHINA).isoformat(timespec="seconds"),
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "summary": "支付成功",
        "resource": {**resource, "original_type": "transaction"},
    }
    body = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    key = load_private_key(creds["public_key_private"])
    headers = sign_response(body, key, creds["public_key_id"])
    return body, {**headers, "Content-Type": "application/json"}
