"""Unfinished S3 multipart uploads: finding and aborting those a killed writer left.

pyarrow has no call for them, so this goes through boto3, configured by the same
standard AWS variables as everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from recognizer.errors import StorageError


def _client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 6, "mode": "standard"},
                                            connect_timeout=10, read_timeout=30))


def unfinished(bucket: str, prefix: str) -> list[dict]:
    """The multipart uploads begun and never completed or aborted under a prefix
    (``Key``, ``UploadId``, ``Initiated``), every page of the listing."""
    client = _client()
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    return [upload for page in pages for upload in page.get("Uploads", [])]


def abort_stale(bucket: str, prefix: str, started_before: datetime,
                describe: Callable[[BaseException], str] = str) -> int:
    """Abort the unfinished uploads under a prefix begun before ``started_before``;
    returns how many. ``describe`` turns an error into a line without secrets."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stale = [u for u in unfinished(bucket, prefix) if u["Initiated"] < started_before]
        client = _client()
        for upload in stale:
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"aborting unfinished uploads under s3://{bucket}/{prefix} failed: "
                           f"{describe(exc)}") from exc
    return len(stale)
