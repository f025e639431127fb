"""`make demo` end to end, in its own process with its own Ray, S3 server and Prometheus."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_the_whole_stack_and_cleans_up(mnist_dir, tmp_path):
    # The embedded defaults: the bundled model, nothing trained.
    out = subprocess.run(
        [sys.executable, "-m", "devstack.demo", "--data", mnist_dir, "--limit", "400",
         "--rows-per-shard", "200"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        # The dev stack is not installed: it runs from the repository, as `make demo` runs it.
        env={**os.environ, "RAY_ADDRESS": "", "AWS_ENDPOINT_URL": "", "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "using the bundled model" in text
    assert "400 digits recognised" in text
    accuracy = float(text.split("accuracy against the known labels ")[1].split("%")[0])
    assert accuracy > 90
    assert text.count("POST /v1/predict (true") == 5
    assert "(garbage) -> 422" in text
    assert (tmp_path / "demo-output" / "_job.json").exists()
    assert "done in" in text
