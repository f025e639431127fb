"""The driver SIGKILLed while outputs are written, then the same command again; the S3
server restarted mid-job. Every row must appear exactly once, nothing half-written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import boto3
import psutil
import pytest
from jobs_helpers import Bucket, assert_exactly_once, wait_for
from s3faults import FaultProxy, Faults

from devstack import services
from jobs import shards
from jobs.run import JobConfig, run_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _job_command(bucket: str, ckpt: str) -> list[str]:
    return [sys.executable, "-m", "formdigits.cli", "job", "run", "--input", f"s3://{bucket}/in",
            "--output", f"s3://{bucket}/out", "--checkpoint", ckpt, "--no-progress",
            "--batch-size", "8", "--max-in-flight", "2"]


def _end_session(pid: int) -> list[tuple[int, str]]:
    """Wait for the processes of the killed command's session (its Ray) to exit; kill
    those still there after a while. Returns (pid, command) of those that had to be."""
    def members() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == pid:
                    found.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    deadline = time.time() + 30
    while members() and time.time() < deadline:
        time.sleep(0.2)
    left = members()
    named = []
    for p in left:
        try:
            named.append((p.pid, " ".join(p.cmdline())[:160]))
        except psutil.Error:
            named.append((p.pid, "?"))
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    return named


def test_driver_killed_mid_write_then_rerun_gives_every_row_once(s3_server, bucket, mnist_dir,
                                                                trained_checkpoint):
    real = Bucket(s3_server["endpoint"], bucket)
    shards.make_shards(mnist_dir, f"s3://{bucket}/in", rows_per_shard=10, as_scans=True, limit=100)
    b = re.escape(bucket)
    # The 4th output's PUT is held in the proxy: the driver dies while it is in flight,
    # and the proxy then drops it, as the network does with a dead client's request.
    faults = Faults(hold=rf"^PUT /{b}/out/part-00003\.parquet", drop_held=True)
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": ROOT}
    with FaultProxy(s3_server["endpoint"], faults) as proxy:
        env["AWS_ENDPOINT_URL"] = proxy.endpoint
        proc = subprocess.Popen(_job_command(bucket, trained_checkpoint), env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: proxy.holding.is_set() or proc.poll() is not None, 240, "an output's PUT")
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            written = [k for k in real.keys("out/") if k.endswith(".parquet")]
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            left_running = _end_session(proc.pid)
            proxy.release()
        assert proc.returncode == -signal.SIGKILL
        # The Ray the command started stopped with it: no worker writes on behind it (Ray's
        # dashboard and runtime-env agents may outlive it a while; they write nothing).
        workers = [(pid, cmd) for pid, cmd in left_running if "Agent" not in cmd]
        assert workers == [], f"processes of the killed run still running: {workers}"
        # The killed run's outputs went up in one PUT each: no multipart upload begun.
        assert not [e for e in proxy.log if e.method == "POST" and "uploads" in e.query]

    # What the user finds: whole output shards, never the one being written, no report.
    present = [k for k in real.keys("out/")]
    assert "out/part-00003.parquet" not in present and "out/_job.json" not in present
    assert set(written) <= set(present) and len(present) < 10
    for key in present:  # every visible object is a complete shard
        assert real.table(key).column("id").to_pylist() == list(range(int(key[-10:-8]) * 10,
                                                                      int(key[-10:-8]) * 10 + 10))
    # A writer of a large object killed mid-upload leaves an unfinished multipart upload.
    real.s3.create_multipart_upload(Bucket=bucket, Key="out/part-00009.parquet")
    assert len(real.unfinished_uploads("out/")) == 1

    # The same command again: the rest is done, the leftovers are cleared.
    rerun = subprocess.run(_job_command(bucket, trained_checkpoint), capture_output=True, text=True,
                           timeout=300, env={**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": ROOT})
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    summary = real.summary()
    assert summary["shards"] == {"total": 10, "ok": 10 - len(present), "skipped": len(present),
                                 "failed": 0}
    assert summary["storage"]["incomplete_uploads_removed"] == 1
    assert real.unfinished_uploads("out/") == []
    assert_exactly_once(real.output_ids(), range(100))


@pytest.fixture
def restartable_s3():
    """An S3 server of this test's own, which it restarts."""
    with services.s3_server(access_key="restart-test", secret_key="restart-secret", set_env=False) as s:
        yield s


def test_s3_server_restarted_mid_job(ray_cluster, restartable_s3, mnist_dir, trained_checkpoint,
                                     monkeypatch):
    for key, value in restartable_s3.env().items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="restart")
    real = Bucket(restartable_s3.endpoint, "restart")
    shards.make_shards(mnist_dir, "s3://restart/in", rows_per_shard=10, as_scans=True, limit=160)
    cfg = JobConfig(input="s3://restart/in", output="s3://restart/out", checkpoint=trained_checkpoint,
                    progress=False, batch_size=8, max_in_flight=2)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(summary=run_job(cfg)), daemon=True)
    thread.start()
    wait_for(lambda: any(k.endswith(".parquet") for k in real.keys("out/")) or not thread.is_alive(),
              240, "a first output")
    assert thread.is_alive(), "the job ended before the server could be restarted"
    restartable_s3.restart(down_s=1.0)
    thread.join(300)
    summary = box["summary"]
    if summary["shards"]["failed"]:
        # Outlasting the retries is allowed, with a clear reason; the rerun completes.
        assert all("cannot reach the S3 endpoint" in f["reason"] for f in summary["failed_shards"]), \
            summary["failed_shards"]
        summary = run_job(cfg)
    assert summary["shards"]["failed"] == 0
    assert_exactly_once(real.output_ids(), range(160))
