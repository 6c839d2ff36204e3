"""A bus consumer process for tests, wired like `paygrid run ledger` or `paygrid run notifier`
(bootstrap with one consumer on JetStream), except that it SIGKILLs itself right after the
first batch of effects it commits and before that batch's acks leave.

    python -m tests.integration.consumer_process NATS_URL DATABASE_URL DATA_DIR CONSUMER ACK_WAIT_S
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from paygrid.bus import jetstream
from paygrid.bus.ports import BatchHandler, Event, PublishResult
from paygrid.config import Settings
from paygrid.platform.bootstrap import bootstrap

NO_EVENT_EXIT = 3
# Producer, dying consumer and survivor share one database, so one key-encryption key.
TEST_KEK = "cGF5Z3JpZC10ZXN0LWtlay0zMi1ieXRlcy0wMDAwMDA="
WAIT_FOR_EVENT_S = 60.0


class DieBeforeAck:
    """The real bus, except that each handler kills the process once its effect committed."""

    def __init__(self, bus: jetstream.JetStreamBus) -> None:
        self._bus = bus

    def subscribe(self, consumer: str, event_types: frozenset[str], handler: BatchHandler) -> None:
        def handle(events: Sequence[Event]) -> None:
            handler(events)  # the effects and their inbox rows commit here...
            os.kill(os.getpid(), signal.SIGKILL)  # ...and the acks never leave

        self._bus.subscribe(consumer, event_types, handle)

    def publish(self, event: Event) -> None:
        self._bus.publish(event)

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        return self._bus.publish_batch(events)


def main(argv: list[str]) -> int:
    nats_url, database_url, data_dir, consumer, ack_wait_s = argv
    jetstream.ACK_WAIT_S = float(ack_wait_s)  # the same ack wait as the test's own consumer
    bus = jetstream.JetStreamBus(nats_url, f"dying-{consumer}")
    bus.connect()
    settings = Settings(
        data_dir=Path(data_dir),
        database_url=database_url,
        nats_url=nats_url,
        run_sandboxes=False,
        kek=TEST_KEK,
    )
    bootstrap(settings, channels={}, bus=DieBeforeAck(bus), consumers=(consumer,), migrate=False)
    bus.start_consumers()
    time.sleep(WAIT_FOR_EVENT_S)
    return NO_EVENT_EXIT  # no event came: the test fails on this exit code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
