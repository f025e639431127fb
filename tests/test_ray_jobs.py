"""Ray Jobs, for real: a batch job submitted to a separately started Ray head.

This is the cluster workflow of cluster/README.md on one machine: `ray start --head`
(its own temp dir and ports, so it never meets another Ray on the machine), then
`digits job submit --address http://127.0.0.1:PORT --follow` from a separate process,
S3 for the checkpoint, inputs and outputs, and `digits job status/logs` afterwards.
The head uses Ray's token authentication (Ray 2.60 enables it whenever a token is set up),
so the client side authenticates exactly as a user's shell must: RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN. The head is stopped by terminating exactly the processes it started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devstack.services import free_port, wait_for_port

BIN = Path(sys.executable).parent
SHARDS, ROWS_PER_SHARD = 2, 40


def _session_processes(root: psutil.Process, temp_dir: str) -> list[psutil.Process]:
    """The `ray start --block` process, everything below it, and any process (e.g. one
    reparented after its parent died) whose command line names this head's temp dir."""
    procs = {root.pid: root}
    try:
        procs.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid not in procs and any(temp_dir in part for part in p.info["cmdline"] or []):
                procs[p.pid] = p
                procs.update({c.pid: c for c in p.children(recursive=True)})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    procs.pop(os.getpid(), None)
    return list(procs.values())


def _stop(proc: subprocess.Popen, temp_dir: str) -> None:
    """Terminate this head's processes only (never `ray stop`: others share the machine)."""
    procs = _session_processes(psutil.Process(proc.pid), temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)


@pytest.fixture
def ray_head(s3_server):
    """A Ray head started like on a cluster node; yields its Jobs API address."""
    # Short path: Ray's Unix sockets live under it and must stay below ~100 characters.
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")
    gcs, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    # Job drivers run `digits` from the head's PATH, as in the image.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # The token the head enforces and clients send; nothing from ~/.ray is used.
    env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"] = "token", secrets.token_hex(32)
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
           "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}",
           # Every port that has a fixed default gets a free one, so a second Ray on this
           # machine (another test session, a developer's head) cannot collide with it.
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", "--disable-usage-stats"]
    log = open(os.path.join(temp_dir, "ray-start.log"), "wb")  # noqa: SIM115 - closed below
    # The head knows nothing of S3, like a shared cluster: a job reaches the bucket only
    # with the settings `digits job submit` forwards from the submitting shell.
    head_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(cmd, env=head_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        try:
            wait_for_port(dashboard, timeout=120)
            _wait_for_jobs_api(f"http://127.0.0.1:{dashboard}", env["RAY_AUTH_TOKEN"], timeout=120)
        except TimeoutError:
            log.flush()
            tail = Path(temp_dir, "ray-start.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the Ray head did not come up:\n{tail}")
        yield {"address": f"http://127.0.0.1:{dashboard}", "env": env, "temp_dir": temp_dir}
    finally:
        _stop(proc, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(address: str, token: str, timeout: float) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            reply = requests.get(f"{address}/api/version", timeout=5,
                                 headers={"Authorization": f"Bearer {token}"})
            if reply.ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no Jobs API at {address}")


def _upload_folder(folder: str, bucket: str, prefix: str) -> str:
    s3 = boto3.client("s3")
    for path in Path(folder).iterdir():
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def _digits(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `digits` command as a user would."""
    return subprocess.run([str(BIN / "digits"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_submitted_batch_job_labels_every_shard_on_s3(ray_head, bucket, trained_checkpoint, mnist_dir):
    env = {k: v for k, v in ray_head["env"].items() if k != "RAY_ADDRESS"}
    address = ray_head["address"]
    checkpoint = _upload_folder(trained_checkpoint, bucket, "runs/model")
    inputs, outputs = f"s3://{bucket}/forms", f"s3://{bucket}/results"

    made = _digits("shards", "make", "--data", mnist_dir, "--output", inputs,
                   "--rows-per-shard", str(ROWS_PER_SHARD), "--limit", str(SHARDS * ROWS_PER_SHARD),
                   "--as-scans", env=env)
    assert made.returncode == 0, made.stderr

    submission_id = f"formdigits-{uuid.uuid4().hex[:8]}"
    sent = _digits("job", "submit", "--address", address, "--submission-id", submission_id,
                   "--input", inputs, "--output", outputs, "--checkpoint", checkpoint,
                   "--follow", env=env)
    assert sent.returncode == 0, f"job failed:\n{sent.stdout[-3000:]}\n{sent.stderr[-3000:]}"
    assert submission_id in sent.stdout

    # The outputs are on S3: one labelled shard per input shard, and the job's summary.
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results/")["Contents"])
    assert keys == ["results/_job.json"] + [f"results/part-{i:05d}.parquet" for i in range(SHARDS)]
    summary = json.loads(s3.get_object(Bucket=bucket, Key="results/_job.json")["Body"].read())
    assert summary["job_id"] == submission_id
    assert summary["shards"] == {"total": SHARDS, "ok": SHARDS, "skipped": 0, "failed": 0}
    assert summary["rows"]["ok"] + summary["rows"]["error"] == SHARDS * ROWS_PER_SHARD

    correct = total = 0
    for i in range(SHARDS):
        name = f"part-{i:05d}.parquet"
        body = s3.get_object(Bucket=bucket, Key=f"forms/{name}")["Body"].read()
        truth = pq.read_table(pa.BufferReader(body), columns=["id", "label"]).to_pydict()
        body = s3.get_object(Bucket=bucket, Key=f"results/{name}")["Body"].read()
        out = pq.read_table(pa.BufferReader(body)).to_pydict()
        assert out["id"] == truth["id"]
        correct += sum(p == t for p, t in zip(out["label"], truth["label"], strict=True))
        total += len(truth["id"])
    # A competent model on synthesized scans: far above chance (10%).
    assert correct / total >= 0.8, f"only {correct}/{total} scans labelled correctly"

    # The job is still known to the cluster afterwards.
    status = _digits("job", "status", submission_id, "--address", address, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "SUCCEEDED"
    logs = _digits("job", "logs", submission_id, "--address", address, env=env, timeout=60)
    assert logs.returncode == 0, logs.stderr
    assert f"{SHARDS} shards done" in logs.stdout
