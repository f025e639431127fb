"""Helpers of the job fault tests: the S3 server seen directly (never through a fault
proxy), input shards built row by row, and exactly-once checks on outputs."""

from __future__ import annotations

import io
import json
import time
from collections import Counter

import boto3
import pyarrow as pa
import pyarrow.parquet as pq


class Bucket:
    """One test bucket on the real S3 server, read and written around any proxy."""

    def __init__(self, endpoint: str, name: str):
        self.name = name
        self.s3 = boto3.client("s3", endpoint_url=endpoint)

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.name, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        """Every key under a prefix, all pages of the listing."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def table(self, key: str) -> pa.Table:
        return pq.read_table(pa.BufferReader(self.get(key)))

    def summary(self, prefix: str = "out") -> dict:
        return json.loads(self.get(f"{prefix}/_job.json"))

    def unfinished_uploads(self, prefix: str) -> list[dict]:
        return self.s3.list_multipart_uploads(Bucket=self.name, Prefix=prefix).get("Uploads", [])

    def output_ids(self, prefix: str = "out/") -> Counter:
        """How many times each id appears across the output shards under a prefix."""
        ids: Counter = Counter()
        for key in self.keys(prefix):
            if key.endswith(".parquet"):
                ids.update(self.table(key).column("id").to_pylist())
        return ids


def parquet(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def shard(ids: list, images: list, image_type: pa.DataType | None = None, **kw) -> bytes:
    """A Parquet shard of id and image (binary unless image_type says) columns."""
    return parquet(pa.table({"id": ids, "image": pa.array(images, image_type or pa.binary())}), **kw)


def assert_exactly_once(counts: Counter, expected_ids) -> None:
    """Every expected id appears exactly once and nothing else appears."""
    expected = list(expected_ids)
    dupes = {i: n for i, n in counts.items() if n != 1}
    assert not dupes, f"ids appearing more than once: {dict(list(dupes.items())[:10])}"
    missing = set(expected) - set(counts)
    extra = set(counts) - set(expected)
    assert not missing and not extra, (sorted(missing)[:10], sorted(extra)[:10])


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """Poll predicate until it returns something true (returned), or fail after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
