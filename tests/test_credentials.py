"""Credentials against a server that checks them (MinIO, or moto with IAM authentication
on): a wrong secret is one clear line, and the secret appears nowhere: not in the
output, not in ``_job.json``, not in the Ray dashboard's task, actor or job metadata.

The dashboard part runs as a script in a child process (the session's Ray is already
initialised here) that starts a one-node ``ray.cluster_utils.Cluster`` with its dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _aws(checking_s3: dict) -> dict[str, str]:
    return {k: v for k, v in checking_s3.items() if k.startswith("AWS_")}


def test_a_job_with_a_wrong_secret_is_one_clear_line(digits_cli, checking_s3, trained_checkpoint):
    b = checking_s3["bucket"]
    out = digits_cli("job", "run", "--input", f"s3://{b}/in", "--output", f"s3://{b}/wrong-out",
                     "--checkpoint", trained_checkpoint, "--no-progress",
                     env={**_aws(checking_s3), "AWS_SECRET_ACCESS_KEY": "wrong-secret-value",
                          "RAY_ADDRESS": "local"})
    assert out.returncode == 2, out.stdout[-1000:] + out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("digits: error: "), out.stderr
    assert "S3 refused the credentials" in lines[0] and "Traceback" not in out.stderr
    for secret in ("wrong-secret-value", checking_s3["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in out.stdout + out.stderr


def test_the_secret_is_not_in_ray_metadata_or_the_report(checking_s3, mnist_dir, trained_checkpoint):
    env = {**os.environ, **_aws(checking_s3), "PYTHONPATH": ROOT}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, __file__, checking_s3["bucket"], mnist_dir, trained_checkpoint],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["summary"]["shards"]["ok"] == 2, report["summary"]
    assert report["tasks"] > 0 and report["actors"] > 0  # the state API saw the job's work
    secret = checking_s3["AWS_SECRET_ACCESS_KEY"]
    assert secret not in proc.stdout + proc.stderr
    assert secret not in report["state"], "the secret is in the Ray dashboard's state"
    body = boto3.client("s3", endpoint_url=checking_s3["endpoint"], **{
        "aws_access_key_id": checking_s3["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": secret,
        "region_name": checking_s3["AWS_REGION"]}).get_object(
            Bucket=checking_s3["bucket"], Key="meta-out/_job.json")["Body"].read().decode()
    assert secret not in body and json.loads(body)["shards"]["ok"] == 2


def _child(bucket: str, data: str, ckpt: str) -> None:
    import logging

    import ray
    from ray.cluster_utils import Cluster
    from ray.util import state

    from devstack.services import free_port
    from jobs import shards
    from jobs.run import JobConfig, run_job

    port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": port, "dashboard_agent_listen_port": free_port()})
    try:
        ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
        shards.make_shards(data, f"s3://{bucket}/meta-in", rows_per_shard=10, as_scans=True, limit=20)
        summary = run_job(JobConfig(input=f"s3://{bucket}/meta-in", output=f"s3://{bucket}/meta-out",
                                    checkpoint=ckpt, progress=False, batch_size=8))
        address = f"http://127.0.0.1:{port}"
        tasks = state.list_tasks(address=address, detail=True, limit=10_000)
        actors = state.list_actors(address=address, detail=True, limit=10_000)
        listed = {"tasks": tasks, "actors": actors,
                  "jobs": state.list_jobs(address=address, detail=True),
                  "workers": state.list_workers(address=address, detail=True, limit=10_000)}
        dump = json.dumps(listed, default=str)
        print(json.dumps({"summary": summary, "tasks": len(tasks), "actors": len(actors), "state": dump}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    _child(*sys.argv[1:4])
