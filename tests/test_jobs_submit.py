"""`digits job submit|status|logs` against a real Ray head with the Jobs API.

Runs in a child process (the session's Ray is already initialised here) that starts a
one-node ``ray.cluster_utils.Cluster`` with its dashboard on a free loopback port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_submit_status_logs(s3_server, bucket, mnist_dir, trained_checkpoint):
    from jobs import shards

    inp, out = f"s3://{bucket}/in", f"s3://{bucket}/out"
    shards.make_shards(mnist_dir, inp, rows_per_shard=30, limit=60)
    env = {**os.environ, "PYTHONPATH": ROOT,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, __file__, inp, out, trained_checkpoint],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["submit_code"] == 0 and report["status"]["status"] == "SUCCEEDED", report
    assert "2 shards done" in report["logs"]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in proc.stdout and secret not in proc.stderr  # never printed
    body = boto3.client("s3").get_object(Bucket=bucket, Key="out/_job.json")["Body"].read()
    summary = json.loads(body)
    assert summary["job_id"] == "digits-submit-test" and summary["shards"]["ok"] == 2
    assert secret not in body.decode()


def _child(inp: str, out: str, ckpt: str) -> None:
    from ray.cluster_utils import Cluster

    from formdigits.cli import main

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from devstack.services import free_port

    port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": port,
        # Other Ray instances on this machine may hold the default agent port.
        "dashboard_agent_listen_port": free_port()})
    address = f"http://127.0.0.1:{port}"
    report: dict = {}
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            report["submit_code"] = main(["job", "submit", "--address", address, "--input", inp,
                                          "--output", out, "--checkpoint", ckpt, "--batch-size", "16",
                                          "--submission-id", "digits-submit-test", "--follow"])
        sys.stderr.write(buf.getvalue())  # everything submit printed, checked for secrets
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["job", "status", "digits-submit-test", "--address", address])
        report["status"] = json.loads(buf.getvalue())
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["job", "logs", "digits-submit-test", "--address", address])
        report["logs"] = buf.getvalue()
    finally:
        cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
