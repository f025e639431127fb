"""A worker node removed mid-job: the job completes and every row appears exactly once.

The session's Ray is already initialised in the test process, so this test runs itself
as a script in a child process that builds its own two-node ``ray.cluster_utils.Cluster``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_worker_node_removed_mid_job(s3_server, bucket, mnist_dir, trained_checkpoint):
    from jobs import shards

    inp, out = f"s3://{bucket}/in", f"s3://{bucket}/out"
    shards.make_shards(mnist_dir, inp, rows_per_shard=40, as_scans=True, limit=400)
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, __file__, inp, out, trained_checkpoint, bucket],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["removed_while_running"], report
    summary = report["summary"]
    assert summary["shards"]["ok"] == 10 and summary["shards"]["failed"] == 0, summary

    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    ids = []
    for key in sorted(k for k in keys if k.endswith(".parquet")):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        table = pq.read_table(pa.BufferReader(body))
        assert table.column("error").null_count == len(table)
        ids += table.column("id").to_pylist()
    assert sorted(ids) == list(range(400))  # exactly once


def _child(inp: str, out: str, ckpt: str, bucket: str) -> None:
    import logging

    import ray
    from ray.cluster_utils import Cluster

    from jobs.run import JobConfig, run_job

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    box: dict = {}

    def target() -> None:
        box["summary"] = run_job(JobConfig(input=inp, output=out, checkpoint=ckpt, progress=False,
                                           batch_size=8, max_in_flight=3))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    s3 = boto3.client("s3")
    deadline = time.time() + 300
    while time.time() < deadline and thread.is_alive():
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
        if any(o["Key"].endswith(".parquet") for o in listing):
            break
        time.sleep(0.05)
    removed_while_running = thread.is_alive()
    cluster.remove_node(worker)
    thread.join(300)
    print(json.dumps({"removed_while_running": removed_while_running, "summary": box.get("summary")}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    _child(*sys.argv[1:5])
