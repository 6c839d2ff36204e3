"""Helpers for the NetsUnion sandbox tests: a real sandbox process, the member's notification
endpoint on a local port (answering with the adapter's signed acknowledgement), and an agreement
signed through the adapter with the SMS code read from ``/sandbox/sms``."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from paygrid.channels.netsunion.adapter import NetsUnionAdapter, build_adapter
from paygrid.channels.ports import AgreementRequest, AgreementState, CallbackReply
from tests.integration.wechatpay_helpers import SandboxProcess, start_module

READY_PREFIX = "netsunion sandbox listening on "


def start_sandbox(data_dir: Path, env_extra: dict[str, str] | None = None) -> SandboxProcess:
    return start_module(
        "paygrid.channels.netsunion.sandbox", READY_PREFIX, data_dir, 30.0, env_extra
    )


def adapter_for(sandbox: SandboxProcess) -> NetsUnionAdapter:
    with sandbox.http() as http:
        creds = http.get("/sandbox/credentials").json()
    return build_adapter(creds, sandbox.base_url)


def new_ref(prefix: str = "PG") -> str:
    return f"{prefix}{secrets.token_hex(8).upper()}"


def new_mobile() -> str:
    return f"139{secrets.randbelow(10**8):08d}"


@dataclass
class Receiver:
    """The member's notification endpoint: records each POST and answers with ``reply``."""

    reply: Callable[[bytes], CallbackReply]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def record(self, headers: dict[str, str], body: bytes) -> None:
        with self._cond:
            self.received.append((headers, body))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} notifications, expected {count}")
                self._cond.wait(left)
            return list(self.received)


@contextmanager
def receiver(reply: Callable[[bytes], CallbackReply]) -> Iterator[Receiver]:
    got = Receiver(reply)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(min(int(self.headers.get("Content-Length", "0")), 1 << 20))
            got.record(dict(self.headers.items()), body)
            answer = got.reply(body)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}/netsunion/notify"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


def agreement_request(bank: str = "ICBC", account_no: str | None = None) -> AgreementRequest:
    return AgreementRequest(
        agreement_ref=new_ref("AG"),
        bank=bank,
        account_no=account_no or f"6222{secrets.randbelow(10**15):015d}",
        holder_name="张三",
        id_type="01",
        id_no="11010519491231002X",
        mobile=new_mobile(),
    )


def sms_code(http: httpx.Client, mobile: str) -> str:
    sent = http.get("/sandbox/sms", params={"mobile": mobile}).json()["sms"]
    assert sent, f"no SMS to {mobile}"
    code: str = sent[0]["code"]
    assert code in sent[0]["text"]
    return code


def sign_agreement(adapter: NetsUnionAdapter, http: httpx.Client, bank: str = "ICBC") -> str:
    request = agreement_request(bank)
    asked = adapter.request_agreement(request)
    assert asked.state is AgreementState.PENDING_CODE, asked
    signed = adapter.confirm_agreement(request.agreement_ref, sms_code(http, request.mobile))
    assert signed.state is AgreementState.SIGNED and signed.agreement_no, signed
    return signed.agreement_no
