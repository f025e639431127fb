"""S3 failing during a job, through a fault-injecting proxy in front of the real S3 server:
503 SlowDown, 500 InternalError, connections reset before and after the server acted,
delayed answers, on reads, listings and writes. Every row must appear exactly once."""

from __future__ import annotations

import re

import pytest
from jobs_helpers import Bucket, assert_exactly_once, shard
from s3faults import FAULTS, FaultProxy, Faults

from formdigits.cli import main
from jobs import shards


@pytest.fixture
def real(s3_server, bucket) -> Bucket:
    return Bucket(s3_server["endpoint"], bucket)


@pytest.fixture
def proxied(s3_server, monkeypatch):
    """A fault proxy in front of the S3 server, which the job (driver, shard tasks and
    model actors: they get the driver's AWS settings) reaches instead of the server."""
    with FaultProxy(s3_server["endpoint"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        yield proxy


def _run(bucket: str, ckpt: str, *extra: str) -> int:
    return main(["job", "run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
                 "--checkpoint", ckpt, "--no-progress", "--batch-size", "16", *extra])


def test_s3_errors_at_a_set_rate_are_retried_and_every_row_appears_once(
        ray_cluster, real, proxied, mnist_dir, trained_checkpoint):
    shards.make_shards(mnist_dir, f"s3://{real.name}/in", rows_per_shard=20, as_scans=True, limit=120)
    proxied.set_faults(Faults(rate=0.25, first_of_each_kind=True, delay_rate=0.1, delay_s=0.3, seed=7))
    assert _run(real.name, trained_checkpoint) == 0
    summary = real.summary()
    assert summary["shards"] == {"total": 6, "ok": 6, "skipped": 0, "failed": 0}
    assert_exactly_once(real.output_ids(), range(120))
    assert summary["rows"]["ok"] == 120 and summary["rows"]["error"] == 0

    faulted = [e for e in proxied.log if e.action in FAULTS]
    assert {e.action for e in faulted} == set(FAULTS), proxied.injected
    assert {e.kind for e in faulted} == {"read", "list", "write"}
    assert proxied.injected["delay"] > 0
    retries = summary["storage"]["retries"]
    # Every kind was retried, and never without a fault to retry (bounded: no storms).
    assert retries["read"] > 0 and retries["write"] > 0 and retries["list"] > 0, retries
    assert retries["total"] <= len(faulted), (retries, proxied.injected)
    assert summary["storage"]["retry_policy"]["jitter"] == "equal"
    assert real.unfinished_uploads("out/") == []


def test_a_shard_failing_beyond_the_retries_fails_alone_with_its_reason(
        ray_cluster, real, proxied, mnist_dir, trained_checkpoint):
    shards.make_shards(mnist_dir, f"s3://{real.name}/in", rows_per_shard=10, as_scans=True, limit=40)
    b = re.escape(real.name)
    # Reading shard 1 and writing shard 2's output answer 503 SlowDown every time.
    proxied.set_faults(Faults(always=rf"^(HEAD|GET) /{b}/in/part-00001\.parquet|^PUT /{b}/out/part-00002"))
    assert _run(real.name, trained_checkpoint) == 1
    summary = real.summary()
    assert summary["shards"] == {"total": 4, "ok": 2, "skipped": 0, "failed": 2}
    reasons = {f["shard"]: f["reason"] for f in summary["failed_shards"]}
    assert reasons["part-00001.parquet"].startswith(f"reading s3://{real.name}/in/part-00001.parquet "
                                                    "failed after 6 attempts"), reasons
    assert reasons["part-00002.parquet"].startswith(f"writing s3://{real.name}/out/part-00002.parquet "
                                                    "failed after 6 attempts"), reasons
    assert all("S3 is throttling or unavailable (503)" in r for r in reasons.values()), reasons
    # Nothing partial is visible; the other shards are complete.
    outputs = real.keys("out/")
    assert outputs == ["out/_job.json", "out/part-00000.parquet", "out/part-00003.parquet"]
    assert_exactly_once(real.output_ids(), [*range(0, 10), *range(30, 40)])
    assert real.unfinished_uploads("out/") == []
    # Each failing operation was tried 6 times (5 retries) and no more.
    assert summary["storage"]["retries"]["read"] >= 5 and summary["storage"]["retries"]["write"] >= 5
    for name in ("in/part-00001", "out/part-00002"):
        attempts = [e for e in proxied.log if name in e.path and e.action == "slowdown"]
        assert len(attempts) == 6, (name, len(attempts))

    # Once S3 behaves, the same command completes the two shards and skips the others.
    proxied.set_faults(Faults())
    assert _run(real.name, trained_checkpoint) == 0
    assert real.summary()["shards"] == {"total": 4, "ok": 2, "skipped": 2, "failed": 0}
    assert_exactly_once(real.output_ids(), range(40))


def test_a_shard_of_many_row_groups_is_read_one_row_group_at_a_time(
        ray_cluster, real, proxied, mnist_dir, trained_checkpoint):
    images = [image for image, _ in shards.rows(mnist_dir, as_scans=True, limit=400)]
    data = shard(list(range(400)), images, row_group_size=20)  # 20 row groups of scans
    real.put("in/big.parquet", data)
    # Reads fail now and then, mid-shard: a row group is re-read, not the file.
    proxied.set_faults(Faults(rate=0.15, kinds=("read",), seed=3))
    assert _run(real.name, trained_checkpoint) == 0
    assert_exactly_once(real.output_ids(), range(400))
    reads = [e for e in proxied.log if e.path.endswith("/in/big.parquet") and e.method == "GET"
             and e.action == "forward"]
    assert len(reads) >= 20  # one ranged GET per row group at least (plus the footer)
    # No single read fetched more than a small part of the file: memory follows the
    # row group, not the file.
    assert max(e.response_bytes for e in reads) < len(data) / 5, (max(e.response_bytes for e in reads),
                                                                  len(data))
