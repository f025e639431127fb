"""Sending a job to a Ray cluster through the Ray Jobs API, and watching it.

The entrypoint is the same ``digits job run ...`` command; S3 settings travel in the
job's ``runtime_env`` environment variables and are never printed.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import uuid

from jobs.errors import JobError
from recognizer.runtime import storage

#: How long to wait for a new cluster's job agents to come up before giving up.
AGENT_WAIT_S = 60.0


def client(address: str | None):
    """A JobSubmissionClient for address (default ``$RAY_ADDRESS``)."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobError("no Ray cluster named: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise JobError(f"cannot reach the Ray Jobs API at {address}: {str(exc).splitlines()[0]} "
                       "(is the dashboard running on the head node, port 8265?)") from exc


def submit(run_argv: list[str], address: str | None, submission_id: str | None = None,
           extra_env: dict[str, str] | None = None) -> str:
    """Submit ``digits job run RUN_ARGV`` and return the job's submission id.

    The id is chosen here (unless given) and passed as ``--job-id`` so that ``_job.json``
    and the Ray Jobs API name the job alike.
    """
    submission_id = submission_id or f"digits-{uuid.uuid4().hex[:12]}"
    if "--job-id" not in run_argv:
        run_argv = [*run_argv, "--job-id", submission_id]
    entrypoint = shlex.join(["digits", "job", "run", *run_argv])
    env = {**storage.aws_settings(), **(extra_env or {})}
    c = client(address)
    delay = 0.5
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return c.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                runtime_env={"env_vars": env})
        except (RuntimeError, ValueError) as exc:
            # A freshly started cluster answers "No available agent" until its job agents
            # are up: wait for them rather than fail.
            if "no available agent" in str(exc).lower() and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            raise JobError(f"the cluster refused the job: {str(exc).splitlines()[0]}") from exc


def status(job_id: str, address: str | None) -> tuple[str, str]:
    """(status, message) of a submitted job."""
    try:
        info = client(address).get_job_info(job_id)
    except RuntimeError as exc:
        raise JobError(f"no job {job_id!r}: {str(exc).splitlines()[0]}") from exc
    return str(info.status.value if hasattr(info.status, "value") else info.status), info.message or ""


def logs(job_id: str, address: str | None, follow: bool = False) -> None:
    """Print a job's logs; with follow, keep printing until the job ends."""
    c = client(address)
    try:
        if not follow:
            sys.stdout.write(c.get_job_logs(job_id))
            return

        async def tail() -> None:
            async for chunk in c.tail_job_logs(job_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()

        asyncio.run(tail())
    except RuntimeError as exc:
        raise JobError(f"cannot read logs of {job_id!r}: {str(exc).splitlines()[0]}") from exc
