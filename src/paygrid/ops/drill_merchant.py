"""The crash drill's merchant: its notify_url, which verifies each notification's signature,
acknowledges it (or fails at a given rate, so that paygrid must retry) and keeps what it
acknowledged."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from paygrid.api.client import verify_notification


class Receiver:
    """The merchant's notify_url: answers 200 (or 500 at ``fail_rate``), keeps every POST."""

    def __init__(self, secret: str, fail_rate: float, rng: random.Random) -> None:
        self.posts = 0
        self.bad_signatures = 0
        self.ids: dict[str, str] = {}  # notify id -> payment id
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = verify_notification(secret, dict(self.headers.items()), body)
                with lock:
                    outer.posts += 1
                    if not ok:
                        outer.bad_signatures += 1
                    fail = rng.random() < fail_rate
                    if ok and not fail:
                        note = json.loads(body)
                        outer.ids[note["id"]] = note["data"]["payment_id"]
                self.send_response(500 if fail or not ok else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
