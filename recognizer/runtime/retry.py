"""Retrying transient storage errors: a bounded number of attempts, exponential back-off
with jitter, and a count of every retry by kind of operation.

The counts are per process (a Ray worker's shard task reads them before and after its
shard), so a job can report how many retries its reads, listings and writes needed.
The S3 client's own retries are turned off (``storage.s3_filesystem``): every retry is
made and counted here.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from recognizer.errors import StorageError

T = TypeVar("T")

#: Kinds of storage operation that retries are counted under.
KINDS = ("read", "list", "write", "other")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient error is retried.

    The n-th retry waits a random time between half and all of
    ``min(cap_s, base_s * 2 ** (n - 1))`` ("equal jitter"): the waits grow exponentially
    and many clients retrying at once spread out instead of hitting the server together.
    With the defaults, an operation gives up after 6 attempts and about 4-8 s of waiting,
    long enough to ride out a restarting S3 server or a burst of 503 SlowDown answers.
    """

    attempts: int = 6
    base_s: float = 0.25
    cap_s: float = 4.0

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (retry - 1))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


#: The policy storage operations use unless told otherwise.
DEFAULT_POLICY = RetryPolicy()

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def retry_counts() -> dict[str, int]:
    """Retries made in this process so far, by kind (``read``, ``list``, ``write``, ``other``)."""
    with _lock:
        return {kind: _counts[kind] for kind in KINDS}


def counts_since(before: dict[str, int]) -> dict[str, int]:
    """Retries made since ``before`` (an earlier :func:`retry_counts`), by kind."""
    now = retry_counts()
    return {kind: now[kind] - before.get(kind, 0) for kind in KINDS}


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """``total`` plus ``more``, kind by kind (for summing retries across shards)."""
    return {kind: total.get(kind, 0) + more.get(kind, 0) for kind in KINDS}


def with_retries(what: str, fn: Callable[[], T], kind: str = "other",
                 is_transient: Callable[[OSError], bool] = lambda exc: True,
                 describe: Callable[[BaseException], str] = str,
                 policy: RetryPolicy = DEFAULT_POLICY,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``fn``, retrying transient ``OSError``s as ``policy`` says; each retry is
    counted under ``kind``.

    Missing files are not transient and are raised at once; any other error that
    persists (or is not transient) becomes a :class:`StorageError` saying what failed,
    after how many attempts, and why (``describe``, which must keep secrets out).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if not is_transient(exc):
                raise StorageError(f"{what} failed: {describe(exc)}") from exc
            if attempt == policy.attempts:
                raise StorageError(f"{what} failed after {attempt} attempts: {describe(exc)}") from exc
            with _lock:
                _counts[kind] += 1
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable")
