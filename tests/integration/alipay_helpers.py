"""Helpers for the Alipay sandbox integration tests: a real sandbox process, a merchant's
notify_url on a local port, and python-alipay-sdk pointed at the sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tests.integration.wechatpay_helpers import SandboxProcess, start_module

READY_PREFIX = "alipay sandbox listening on "
CHINA = timezone(timedelta(hours=8))


def start_sandbox(
    data_dir: Path, timeout: float = 30.0, env_extra: dict[str, str] | None = None
) -> SandboxProcess:
    """Start ``python -m paygrid.channels.alipay.sandbox`` on a free port; wait for ready."""
    module = "paygrid.channels.alipay.sandbox"
    return start_module(module, READY_PREFIX, data_dir, timeout, env_extra)


def beijing_today() -> date:
    return datetime.now(CHINA).date()


@dataclass
class Notify:
    form: dict[str, str]
    content_type: str


@dataclass
class NotifyReceiver:
    """A merchant's notify_url: records each POSTed form and answers with ``answers`` in turn
    (then ``success``)."""

    answers: list[str] = field(default_factory=list)
    received: list[Notify] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def answer(self) -> str:
        with self._cond:
            return self.answers.pop(0) if self.answers else "success"

    def record(self, item: Notify) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Notify]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} notifies, expected {count}")
                self._cond.wait(left)
            return list(self.received)

    def of(self, out_trade_no: str) -> list[dict[str, str]]:
        with self._cond:
            return [n.form for n in self.received if n.form.get("out_trade_no") == out_trade_no]

    def wait_of(self, out_trade_no: str, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.of(out_trade_no)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.of(out_trade_no)}: expected {count} notifies")
                self._cond.wait(left)
            return self.of(out_trade_no)


@contextmanager
def notify_receiver(answers: Sequence[str] = ()) -> Iterator[NotifyReceiver]:
    receiver = NotifyReceiver(answers=list(answers))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(min(length, 1 << 20)).decode("utf-8")
            form = dict(parse_qsl(body, keep_blank_values=True))
            receiver.record(Notify(form, self.headers.get("Content-Type", "")))
            reply = receiver.answer().encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/alipay/notify"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def sdk_client(creds: dict[str, str], notify_url: str | None = None, **overrides: str) -> Any:
    """python-alipay-sdk as a merchant configures it, with only the gateway changed."""
    from alipay import AliPay

    client = AliPay(
        appid=overrides.get("app_id", creds["app_id"]),
        app_notify_url=notify_url,
        app_private_key_string=overrides.get("app_private_key", creds["app_private_key"]),
        alipay_public_key_string=creds["alipay_public_key"],
        sign_type="RSA2",
    )
    client._gateway = creds["gateway_url"]  # the only change
    return client
