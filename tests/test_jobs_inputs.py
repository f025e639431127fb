"""Inputs wrong in shape: image columns of the wrong type or with nulls, duplicate ids,
nested prefixes, and more shards under one prefix than one listing page holds."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from jobs_helpers import Bucket, assert_exactly_once, shard

from jobs import sink, source
from jobs.run import JobConfig, run_job
from recognizer.data import synth
from recognizer.errors import ConfigError


@pytest.fixture
def real(s3_server, bucket) -> Bucket:
    return Bucket(s3_server["endpoint"], bucket)


@pytest.fixture(scope="module")
def pngs(mnist_test_raw) -> list[bytes]:
    digits, _ = mnist_test_raw
    return [synth.encode((255 - digits[i]).astype(np.uint8)) for i in range(12)]


def _cfg(bucket: str, ckpt: str, **kw) -> JobConfig:
    return JobConfig(input=f"s3://{bucket}/in", output=f"s3://{bucket}/out", checkpoint=ckpt,
                     progress=False, batch_size=8, **kw)


def test_wrong_image_types_nulls_duplicates_and_nested_prefixes(ray_cluster, real, pngs,
                                                                 trained_checkpoint):
    p = pngs
    real.put("in/a-strings.parquet", shard([1, 2], ["not", "bytes"], pa.string()))
    real.put("in/b-integers.parquet", shard([3, 4], [7, 8], pa.int64()))
    real.put("in/c-nulls.parquet", shard([5, 6, 7], [p[0], None, p[1]]))
    # Duplicate ids: 9 twice within this shard, 10 again in a nested shard.
    real.put("in/d-duplicates.parquet", shard([8, 9, 9, 10], p[2:6]))
    real.put("in/2024/e.parquet", shard([10, 11], p[6:8]))
    real.put("in/2024/05/f.parquet", shard([12, 13], p[8:10]))
    real.put("in/_staging/g.parquet", shard([14], p[10:11]))  # "_" and "." names are not shards
    real.put("in/2024/.h.parquet", shard([15], p[11:12]))

    summary = run_job(_cfg(real.name, trained_checkpoint))
    assert summary["shards"] == {"total": 6, "ok": 4, "skipped": 0, "failed": 2}
    reasons = {f["shard"]: f["reason"] for f in summary["failed_shards"]}
    assert "column 'image' holds string values" in reasons["a-strings.parquet"]
    assert "column 'image' holds int64 values" in reasons["b-integers.parquet"]
    assert "encoded bytes" in reasons["a-strings.parquet"]

    # Nested shards keep their path below the output prefix; nothing else was read.
    assert [k for k in real.keys("out/") if k.endswith(".parquet")] == [
        "out/2024/05/f.parquet", "out/2024/e.parquet", "out/c-nulls.parquet", "out/d-duplicates.parquet"]
    # A null image is its row's error, the other rows are labelled.
    nulls = real.table("out/c-nulls.parquet").to_pylist()
    assert [r["id"] for r in nulls] == [5, 6, 7]
    assert [r["error_code"] for r in nulls] == [None, "empty_image", None]
    assert nulls[1]["label"] is None and nulls[0]["label"] is not None
    # Duplicate ids are kept: one output row per input row, in the input's order.
    assert real.table("out/d-duplicates.parquet").column("id").to_pylist() == [8, 9, 9, 10]
    assert summary["rows"]["duplicate_ids"] == 1  # within a shard; across shards not counted
    assert real.output_ids() == Counter({5: 1, 6: 1, 7: 1, 8: 1, 9: 2, 10: 2, 11: 1, 12: 1, 13: 1})
    assert summary["rows"]["ok"] + summary["rows"]["error"] == 11

    # A rerun finds the nested outputs done.
    again = run_job(_cfg(real.name, trained_checkpoint))
    assert again["shards"] == {"total": 6, "ok": 0, "skipped": 4, "failed": 2}


def test_an_output_prefix_inside_the_input_is_refused():
    for inp, out in (("s3://b/in", "s3://b/in/out"), ("s3://b/data/in", "s3://b/data")):
        with pytest.raises(ConfigError, match="must not lie one inside the other"):
            JobConfig(input=inp, output=out, checkpoint="c").validate()


def test_more_shards_than_one_listing_page(ray_cluster, real, pngs, trained_checkpoint):
    n = 1500  # S3 lists 1,000 keys a page
    for i in range(n):
        real.put(f"in/s-{i:05d}.parquet", shard([i], [pngs[i % len(pngs)]]))
    assert len(source.list_shards(f"s3://{real.name}/in")) == n
    summary = run_job(_cfg(real.name, trained_checkpoint))
    assert summary["shards"] == {"total": n, "ok": n, "skipped": 0, "failed": 0}
    assert summary["tasks"]["peak_in_flight"] <= summary["tasks"]["max_in_flight"]
    assert_exactly_once(real.output_ids(), range(n))
    assert len(sink.completed_outputs(f"s3://{real.name}/out")) == n
