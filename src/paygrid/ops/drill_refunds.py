"""The crash drill's refunds (退款): for a share of the payments the payers paid, the merchant
waits until paygrid says SUCCESS, then asks for one full refund or for several partial refunds
at once (each its own out_refund_no, summing above the amount on purpose, so that some must be
refused with 409 REFUND_EXCEEDS_REMAINING), each with an Idempotency-Key and retried through
the kills until paygrid gives a definitive answer. What was asked and answered is kept for the
final checks (:mod:`paygrid.ops.drill_refund_checks`)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from paygrid.api.client import MerchantClient

REFUND_RATE = 0.4  # of the payments the payer paid, those the merchant refunds
PARTIAL_RATE = 0.5  # of those, refunded in several concurrent partial refunds, else in full
MAX_PARTS = 4  # partial refunds asked at once of one payment (at least 2)
MAX_JOBS = 8  # payments being refunded at once
POLL_S = 0.3
EXCEEDS = "REFUND_EXCEEDS_REMAINING"
# Answers that are not paygrid's word on the refund: the request is sent again, unchanged.
RETRIED_CODES = frozenset({"IDEMPOTENCY_REQUEST_IN_PROGRESS"})
ACCEPTED, UNANSWERED = "ACCEPTED", "UNANSWERED"


def partial_amounts(amount: int, parts: int, rng: random.Random) -> list[int]:
    """``parts`` (≥ 2) refund amounts of a payment of ``amount`` fen: each 1..amount, and
    together above the amount, so that at least one of them cannot fit."""
    assert amount >= 1 and parts >= 2
    cut = [rng.randint(1, max(1, 2 * amount // parts)) for _ in range(parts)]
    short = amount + 1 - sum(cut)
    for i in range(parts):  # top up, in turn, until the sum is above the amount
        if short <= 0:
            break
        added = min(short, amount - cut[i])
        cut[i] += added
        short -= added
    assert sum(cut) > amount and all(1 <= c <= amount for c in cut)
    return cut


@dataclass(frozen=True, slots=True)
class Asked:
    """One refund the drill asked for and paygrid's definitive answer: ACCEPTED (201 or 200,
    ``refund_id`` set), the error code of a refusal, or UNANSWERED within the retry time."""

    payment_id: str
    out_refund_no: str
    amount: int
    full: bool
    outcome: str
    refund_id: str | None = None


@dataclass
class RefundFigures:
    payments: int = 0  # payments the merchant refunded
    asked: int = 0  # refunds asked (each out_refund_no once)
    accepted: int = 0  # answered 201 or 200
    refused: int = 0  # answered 409 REFUND_EXCEEDS_REMAINING
    succeeded_at_channel: int = 0  # refunds the channels made
    success: int = 0  # refunds SUCCESS in paygrid
    verified: int = 0  # paygrid's refunds compared with the channels' at the end

    def summary(self) -> dict[str, int]:
        return {f"refunds_{name}": value for name, value in vars(self).items()}


class Refunder:
    """Refunds payments in the background while the drill's chaos goes on (at most MAX_JOBS
    payments at once), each request retried for ``retry_s``."""

    def __init__(
        self,
        client: MerchantClient,
        rng: random.Random,
        retry_s: float,
        say: Callable[[str], None],
    ) -> None:
        self.client = client
        self.rng = rng
        self.retry_s = retry_s
        self.say = say
        self.asked: list[Asked] = []
        self.problems: list[str] = []  # found while asking (the final checks are apart)
        self.figures = RefundFigures()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(MAX_JOBS, thread_name_prefix="drill-refund")

    def maybe_refund(self, payment_id: str, amount: int) -> None:
        """After the payer paid: refund this payment, at REFUND_RATE."""
        with self._lock:
            if self.rng.random() >= REFUND_RATE:
                return
            parts = (
                partial_amounts(amount, self.rng.randint(2, MAX_PARTS), self.rng)
                if self.rng.random() < PARTIAL_RATE
                else [amount]
            )
            self.figures.payments += 1
        self._pool.submit(self._refund, payment_id, parts)

    def finish(self) -> None:
        """Wait for every refund job (each bounded by its retry times)."""
        self._pool.shutdown(wait=True)
        f = self.figures
        self.say(
            f"refunds done: {f.asked} asked of {f.payments} payments, {f.accepted} accepted, "
            f"{f.refused} refused"
        )

    def _refund(self, payment_id: str, parts: list[int]) -> None:
        if not self._wait_success(payment_id):
            self._problem(f"{payment_id} was paid but not SUCCESS within {self.retry_s}s")
            return
        full = len(parts) == 1
        nos = [f"drill-rf-{payment_id}-{i}" for i in range(len(parts))]
        start = threading.Barrier(len(parts))  # the partial refunds race each other
        threads = [
            threading.Thread(target=self._ask, args=(payment_id, no, part, full, start))
            for no, part in zip(nos, parts, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _wait_success(self, payment_id: str) -> bool:
        deadline = time.monotonic() + self.retry_s
        while time.monotonic() < deadline:
            try:
                got = self.client.get_payment(payment_id)
                if got.status_code == 200 and got.json()["status"] == "SUCCESS":
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)
        return False

    def _ask(
        self, payment_id: str, out_refund_no: str, amount: int, full: bool, start: threading.Barrier
    ) -> None:
        body = {
            "payment_id": payment_id,
            "out_refund_no": out_refund_no,
            "amount": amount,
            "reason": "drill",
        }
        with contextlib.suppress(threading.BrokenBarrierError):  # a sibling never started
            start.wait(self.retry_s)
        answer = self._answer(body, idempotency_key=f"key-{out_refund_no}")
        outcome, refund_id = UNANSWERED, None
        if answer is not None and answer.status_code in (200, 201):
            outcome, refund_id = ACCEPTED, str(answer.json()["refund_id"])
            shown = answer.json()
            if (shown["amount"], shown["out_refund_no"]) != (amount, out_refund_no):
                self._problem(f"refund {out_refund_no} of {amount} was answered {shown}")
        elif answer is not None:
            outcome = str(answer.json().get("code"))
        self._record(Asked(payment_id, out_refund_no, amount, full, outcome, refund_id))

    def _answer(self, body: dict[str, Any], idempotency_key: str) -> httpx.Response | None:
        """paygrid's definitive answer: 201/200, or a 4xx refusal; None if none came in time."""
        deadline = time.monotonic() + self.retry_s
        while time.monotonic() < deadline:
            try:
                answer = self.client.create_refund(body, idempotency_key=idempotency_key)
                if answer.status_code in (200, 201):
                    return answer
                refused = 400 <= answer.status_code < 500
                if refused and answer.json().get("code") not in RETRIED_CODES:
                    return answer
            except (httpx.HTTPError, ValueError):  # no answer, or not paygrid's JSON
                pass
            time.sleep(POLL_S)
        return None

    def _record(self, asked: Asked) -> None:
        with self._lock:
            self.asked.append(asked)
            self.figures.asked += 1
            self.figures.accepted += asked.outcome == ACCEPTED
            self.figures.refused += asked.outcome == EXCEEDS
        if asked.outcome == UNANSWERED:
            self._problem(f"refund {asked.out_refund_no} got no answer within {self.retry_s}s")
        elif asked.outcome not in (ACCEPTED, EXCEEDS) or (asked.full and asked.outcome != ACCEPTED):
            kind = "full" if asked.full else "partial"
            self._problem(
                f"{kind} refund {asked.out_refund_no} of {asked.amount} refused: {asked.outcome}"
            )

    def _problem(self, text: str) -> None:
        self.say(text)
        with self._lock:
            self.problems.append(text)
