"""The merchant's notify_url: a threaded HTTP server in the bench's parent process."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from paygrid.api.client import verify_notification

POLL_S = 0.02
KINDS = ("payment.succeeded", "refund.succeeded", "refund.failed")
RESOURCE_KEY = {"payment.succeeded": "payment_id"}  # the refund notifications: refund_id
Stamps = dict[str, tuple[float, float]]  # id -> (monotonic, wall) of its first notification


class NotifyReceiver:
    """Answers 200 to every notification; records when each Paygrid-Notify-Id first arrived,
    of which type, for which payment (payment.succeeded) or refund (refund.succeeded,
    refund.failed), and whether its signature verified."""

    def __init__(self, secret: str) -> None:
        self.lock = threading.Lock()
        self.first_seen: set[str] = set()  # notify ids
        # type -> payment or refund id -> (monotonic, wall) of its first notification
        self.seen: dict[str, Stamps] = {kind: {} for kind in KINDS}
        self.posts = 0
        self.bad_signatures = 0
        self.other_types = 0
        self._server = self._start(secret)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"

    def _start(self, secret: str) -> ThreadingHTTPServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real merchant server would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = (time.monotonic(), time.time())
                signed = verify_notification(secret, dict(self.headers.items()), body)
                outer.record(self.headers.get("Paygrid-Notify-Id", ""), body, signed, now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def record(self, notify_id: str, body: bytes, signed: bool, now: tuple[float, float]) -> None:
        try:
            message = json.loads(body)
            kind = str(message["type"])
            ref = str(message["data"][RESOURCE_KEY.get(kind, "refund_id")])
        except (ValueError, KeyError, TypeError):
            kind, ref = "", ""
        with self.lock:
            self.posts += 1
            if not signed:
                self.bad_signatures += 1
            elif kind not in self.seen:
                self.other_types += 1
            elif notify_id not in self.first_seen:
                self.first_seen.add(notify_id)
                self.seen[kind].setdefault(ref, now)

    def received(self, kind: str, refs: set[str]) -> Stamps:
        """When each of ``refs`` got its first ``kind`` notification (those that did)."""
        with self.lock:
            got = self.seen[kind]
            return {r: got[r] for r in refs if r in got}

    def wait_for(self, refs: set[str], timeout: float, kinds: tuple[str, ...]) -> bool:
        """Until each of ``refs`` has a notification of one of ``kinds``, at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(any(r in self.seen[k] for k in kinds) for r in refs):
                    return True
            time.sleep(POLL_S)
        return False

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "posts": self.posts,
                "distinct_notify_ids": len(self.first_seen),
                "bad_signatures": self.bad_signatures,
                "other_types": self.other_types,
                **{kind: len(got) for kind, got in self.seen.items()},
            }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
