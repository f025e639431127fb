"""The retry policy of storage: bounded attempts, exponential back-off with jitter, and
every retry counted by kind."""

from __future__ import annotations

import random

import pytest

from recognizer.errors import StorageError
from recognizer.runtime import retry


def test_waits_grow_exponentially_with_jitter_up_to_the_cap():
    policy = retry.RetryPolicy(attempts=8, base_s=0.25, cap_s=4.0)
    rng = random.Random(0)
    for n in range(1, 8):
        ceiling = min(4.0, 0.25 * 2 ** (n - 1))
        waits = [policy.delay(n, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not one fixed value


def test_retries_are_bounded_counted_and_the_error_says_why():
    waits: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        raise OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate.")

    before = retry.retry_counts()
    with pytest.raises(StorageError, match="reading x failed after 6 attempts: AWS Error SLOW_DOWN"):
        retry.with_retries("reading x", flaky, "read", sleep=waits.append)
    assert calls == 6 and len(waits) == 5
    policy = retry.DEFAULT_POLICY
    for n, wait in enumerate(waits, 1):  # each wait in its jittered, growing window
        ceiling = min(policy.cap_s, policy.base_s * 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert retry.counts_since(before) == {"read": 5, "list": 0, "write": 0, "other": 0}


def test_success_after_transient_errors_and_no_retry_for_permanent_ones():
    answers = iter([OSError("connection reset"), OSError("connection reset"), "ok"])

    def twice_then_ok():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    before = retry.retry_counts()
    assert retry.with_retries("listing y", twice_then_ok, "list", sleep=lambda s: None) == "ok"
    assert retry.counts_since(before)["list"] == 2

    def denied():
        raise OSError("AWS Error ACCESS_DENIED")

    with pytest.raises(StorageError, match="writing z failed: AWS Error ACCESS_DENIED"):
        retry.with_retries("writing z", denied, "write", is_transient=lambda e: False,
                           sleep=lambda s: pytest.fail("slept for a permanent error"))
    with pytest.raises(FileNotFoundError):
        retry.with_retries("reading w", lambda: (_ for _ in ()).throw(FileNotFoundError("w")))
