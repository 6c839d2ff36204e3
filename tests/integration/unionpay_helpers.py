"""Helpers for the UnionPay sandbox integration tests: a real sandbox process, a merchant's
backUrl on a local port answering the HTTP statuses a test asks for, and ids shaped as
paygrid's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from paygrid.kernel.ids import new_id
from tests.integration.wechatpay_helpers import SandboxProcess, start_module

READY_PREFIX = "unionpay sandbox listening on "


def start_sandbox(
    data_dir: Path, timeout: float = 30.0, env_extra: dict[str, str] | None = None
) -> SandboxProcess:
    """Start ``python -m paygrid.channels.unionpay.sandbox`` on a free port; wait for ready."""
    module = "paygrid.channels.unionpay.sandbox"
    return start_module(module, READY_PREFIX, data_dir, timeout, env_extra)


def ref(prefix: str = "pay") -> str:
    return new_id(prefix)


@dataclass
class Receiver:
    """A merchant's backUrl: records each POST body and answers ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def status(self) -> int:
        with self._cond:
            return self.statuses.pop(0) if self.statuses else 200

    def record(self, body: bytes) -> None:
        with self._cond:
            self.received.append(body)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} notifications, expected {count}")
                self._cond.wait(left)
            return list(self.received)


@contextmanager
def receiver(statuses: Sequence[int] = ()) -> Iterator[Receiver]:
    got = Receiver(statuses=list(statuses))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            got.record(self.rfile.read(min(length, 1 << 20)))
            self.send_response(got.status())
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}/unionpay/back"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
