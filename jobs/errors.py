"""Errors of batch jobs: a whole job that cannot run, or one input shard that cannot be read."""

from __future__ import annotations

from recognizer.errors import DigitsError


class JobError(DigitsError):
    """A batch job cannot start or finish (bad flags, unreachable input, no shards)."""


class ShardError(JobError):
    """One input shard cannot be processed (not Parquet, missing columns).

    The job reports it in ``_job.json`` and carries on with the other shards.
    """
