"""The local stack the job benchmarks run on: an S3 server with one bucket, and Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from devstack import services
from recognizer.runtime import ray_session


@contextmanager
def s3_and_ray(bucket: str) -> Iterator:
    """An S3 server (MinIO when installed, else moto) holding an empty ``bucket``, and Ray.

    Yields a boto3 S3 client. The AWS variables point at the server for the block, and a
    Ray started here (after those variables, so its workers inherit them) stops at its end.
    """
    import boto3

    with (services.s3_server(access_key="bench", secret_key="bench-secret"),
          ray_session.connected(num_cpus=os.cpu_count())):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        yield s3
