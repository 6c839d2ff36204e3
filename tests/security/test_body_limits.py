"""Defect 4 (issue 7): a 200 MB body without any signature must not cost the server memory.

Each entry point (merchant API, channel callbacks on the API port and on the production
gateway process, cashier, operations port, WeChat Pay sandbox) gets a 200 MB POST, streamed
chunked and with a declared Content-Length. The answer must be 413 before the client has sent
much, and the serving process's resident memory (VmRSS) must not grow by more than
RSS_GROWTH_LIMIT while it happens. The client stops sending as soon as the answer arrives."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from paygrid.ops.drill import free_port_block
from tests.conftest import PlatformFactory
from tests.integration.wechatpay_helpers import SandboxProcess, start_sandbox
from tests.support import RunningPlatform, channel_env, free_port, wait_http

pytestmark = pytest.mark.timeout(300)

ATTACK_BYTES = 200 * 1024 * 1024
PIECE = 256 * 1024
LIMIT = 64 * 1024
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
SENT_LIMIT = 64 * 1024 * 1024  # refused long before this; socket buffers hold a few MB at most
ANSWER_TIMEOUT_S = 60.0  # generous: the machine is shared


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """Samples a process's VmRSS every few milliseconds; ``growth`` is peak minus start."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_bytes(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))
        return self.peak - self.start


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int
    seconds: float


def _read_answer(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _frames(total: int, chunked: bool) -> Iterator[bytes]:
    """The body in pieces, framed for the wire: one endless JSON array or form field name."""
    left = total
    while left > 0:
        piece = b"[" * min(PIECE, left)
        left -= len(piece)
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


def stream_post(url: str, chunked: bool, total: int = ATTACK_BYTES, kind: str = JSON) -> Answer:
    """POST ``total`` bytes, chunked or with Content-Length, a piece at a time; stop sending
    as soon as the server answers (or stops reading and closes)."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: {kind}\r\n{framing}\r\n\r\n"
    ).encode()
    frames = _frames(total, chunked)
    started = time.monotonic()
    deadline = started + ANSWER_TIMEOUT_S
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(head)
        pending = b""
        while time.monotonic() < deadline:
            pending = pending or next(frames, b"")
            writing = [sock] if pending else []  # all sent: only wait for the answer
            readable, writable, _ = select.select([sock], writing, [], 1.0)
            if readable:
                break
            if not writable:
                continue
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed after answering: read what it said
            pending = pending[n:]
            sent += n
        status, headers, body = _read_answer(sock, deadline)
    return Answer(status, headers, body, sent, time.monotonic() - started)


def assert_refused_cheaply(
    url: str, pid: int, chunked: bool, kind: str = JSON, statuses: tuple[int, ...] = (413,)
) -> Answer:
    """``statuses``: a route that reads no body may refuse a chunked one otherwise (405)."""
    # Warm up with a small body: lazily imported code is not the attack's doing.
    httpx.post(url, content=b"{}", headers={"Content-Type": kind}, timeout=10.0)
    rss = PeakRss(pid)
    answer = stream_post(url, chunked, kind=kind)
    growth = rss.stop()
    how = "chunked" if chunked else "Content-Length"
    print(
        f"{url} ({how}): {answer.status} after {answer.sent / 2**20:.1f} MiB sent, "
        f"{answer.seconds:.2f} s, RSS +{growth / 2**20:.1f} MiB"
    )
    assert answer.status in statuses, (url, how, answer)
    assert answer.sent < SENT_LIMIT, f"{url} ({how}) read {answer.sent} bytes before refusing"
    assert answer.seconds < ANSWER_TIMEOUT_S / 2, (url, how, answer.seconds)
    assert growth < RSS_GROWTH_LIMIT, f"{url} ({how}): RSS grew by {growth / 2**20:.1f} MiB"
    if answer.status == 413:
        assert answer.headers.get("connection") == "close", answer.headers
    return answer


def error_body(answer: Answer) -> dict[str, str]:
    body: dict[str, str] = json.loads(answer.body)
    return body


# --- the embedded platform: merchant API, callbacks on the API port, cashier, ops port --------
@pytest.fixture
def running(platform_factory: PlatformFactory) -> RunningPlatform:
    return platform_factory()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_merchant_api_refuses_a_huge_body_while_reading(
    running: RunningPlatform, chunked: bool
) -> None:
    answer = assert_refused_cheaply(running.api_url + "/v1/payments", running.proc.pid, chunked)
    body = error_body(answer)
    assert body["code"] == "BODY_TOO_LARGE" and body["message"], body
    assert body["request_id"].startswith("req_")
    assert answer.headers["request-id"] == body["request_id"]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_callbacks_cashier_and_ops_port_refuse_a_huge_body(
    running: RunningPlatform, chunked: bool
) -> None:
    pid = running.proc.pid
    for url, kind in (
        (running.api_url + "/callbacks/wechatpay", JSON),
        (running.cashier_url + "/pay/pay_01M8SVVAKE003MCZ7FDGNWTAWZ/method", FORM),
    ):
        answer = assert_refused_cheaply(url, pid, chunked, kind)
        assert error_body(answer)["code"] == "BODY_TOO_LARGE", url
    # The operations port reads no body at all: a chunked one is refused by its method.
    ops = assert_refused_cheaply(running.ops_url + "/metrics", pid, chunked, statuses=(405, 413))
    assert ops.status == (405 if chunked else 413)


def test_a_body_at_the_limit_is_still_read(running: RunningPlatform) -> None:
    """The limit is the documented 64 KiB, not less: such a body reaches the signature check."""
    for chunked in (True, False):
        answer = stream_post(running.api_url + "/v1/payments", chunked, total=LIMIT)
        assert answer.status == 401, answer  # unsigned, but read in full
        answer = stream_post(running.api_url + "/v1/payments", chunked, total=LIMIT + 1)
        assert answer.status == 413, answer


# --- the WeChat Pay sandbox -------------------------------------------------------------------
@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path / "sandbox")
    yield process
    process.stop()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_sandbox_refuses_a_huge_body_while_reading(sandbox: SandboxProcess, chunked: bool) -> None:
    pid = sandbox.process.pid
    for path in ("/v3/pay/transactions/native", "/sandbox/pay"):
        answer = assert_refused_cheaply(sandbox.base_url + path, pid, chunked)
        assert error_body(answer)["code"] == "PARAM_ERROR", path  # WeChat Pay's own shape


# --- the production profile's gateway process ---------------------------------------------------
@contextlib.contextmanager
def gateway_process(running: RunningPlatform, data_dir: Path) -> Iterator[tuple[int, str, str]]:
    """`paygrid run gateway` as the supervisor starts it, on the embedded platform's database
    and sandbox; yields its pid, public URL and operations URL."""
    port = free_port()
    ops_base = free_port_block(8)
    db_url = running.database_url or f"sqlite:///{running.data_dir / 'paygrid.db'}"
    env = {
        **os.environ,
        "PAYGRID_PROFILE": "prod",
        "PAYGRID_DATA_DIR": str(data_dir),
        "PAYGRID_DATABASE_URL": db_url,
        "PAYGRID_NATS_URL": "nats://127.0.0.1:1",  # the gateway role needs no bus
        "PAYGRID_GATEWAY_PORT": str(port),
        "PAYGRID_OPS_BASE_PORT": str(ops_base),
        **channel_env(running.sandbox_urls),
        "PAYGRID_KEK_FILE": str(running.data_dir / "keys" / "kek"),  # the platform's own
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "gateway.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paygrid.cli", "run", "gateway"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield proc.pid, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_base + 7}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prod_gateway_refuses_a_huge_body_while_reading(
    running: RunningPlatform, tmp_path: Path
) -> None:
    with gateway_process(running, tmp_path / "gateway") as (pid, url, ops_url):
        for chunked in (True, False):
            answer = assert_refused_cheaply(url + "/callbacks/wechatpay", pid, chunked)
            assert error_body(answer)["code"] == "BODY_TOO_LARGE"
        # Its metrics are on its operations port, not on the port channels call.
        assert httpx.get(url + "/metrics").status_code == 404
        assert "paygrid_http_requests_total" in httpx.get(ops_url + "/metrics").text
