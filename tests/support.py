"""Real processes for integration tests: `paygrid up` as a subprocess on free loopback ports
(paygrid.ops.running), the PostgreSQL and NATS servers (paygrid.ops.scratch), and a merchant's
notify_url."""

from __future__ import annotations

from paygrid.ops.running import (  # noqa: F401  (tests import them from here)
    STARTUP_TIMEOUT_S,
    RunningPlatform,
    channel_base_urls,
    channel_env,
    reachable_by_postgres,
    start_platform,
    start_prod_platform,
    wait_http,
    wait_until,
)
from paygrid.ops.scratch import (  # noqa: F401
    NatsServer,
    PostgresServer,
    free_port,
    free_ports,
    nats_server,
    pg_bin,
    postgres_server,
)


# --- a merchant's notification endpoint -----------------------------------------------------
class MerchantReceiver:
    """A merchant's notify_url: records every POST; answers ``fail_first`` of them with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    outer.received.append((dict(self.headers.items()), body))
                    fail = len(outer.received) <= outer.fail_first
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
