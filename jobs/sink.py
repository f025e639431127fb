"""Where results leave a job: one output shard per input shard (the rows and their
schema are :mod:`jobs.schema`), and ``_job.json``.

Every object is serialised in memory and written with one atomic PUT (or a rename on
local disk), so an output is either complete or absent: that is what makes resuming
and retrying shards safe.
"""

from __future__ import annotations

import io
import json
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from recognizer.runtime import storage

SUMMARY_NAME = "_job.json"


def output_uri(output_prefix: str, shard_name: str) -> str:
    """Where the output of input shard ``shard_name`` goes: the same path below the
    output prefix as the shard's below the input prefix."""
    return storage.join(output_prefix, *shard_name.split("/"))


def completed_outputs(output_prefix: str) -> set[str]:
    """Paths (below the prefix) of the output shards already present, at any depth; each
    is complete, since writes are atomic."""
    return {storage.relative(output_prefix, u)
            for u in storage.list_files(output_prefix, ".parquet", recursive=True)}


def remove_incomplete(output_prefix: str, started_before: datetime) -> int:
    """Clear what a run killed mid-write left under the output prefix (local temporary
    files, unfinished S3 multipart uploads) before this run writes; returns the count."""
    return storage.remove_incomplete(output_prefix, started_before)


def write_table(uri: str, table: pa.Table) -> None:
    """Serialise a table to Parquet in memory and put it in one piece."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(uri, buf.getvalue())


def count_output_rows(uri: str) -> tuple[int, int]:
    """(ok rows, failed rows) of an existing output shard (for skipped shards on resume)."""
    table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)), columns=["error"])
    ok = table.column("error").null_count  # error is null exactly on rows that succeeded
    return ok, table.num_rows - ok


def write_summary(output_prefix: str, summary: dict) -> str:
    """Write the job's summary as ``OUTPUT/_job.json``; returns its URI."""
    uri = storage.join(output_prefix, SUMMARY_NAME)
    storage.write_bytes(uri, json.dumps(summary, indent=2, sort_keys=True).encode())
    return uri
