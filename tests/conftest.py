"""Shared fixtures: MNIST from $DIGITS_DATA, one Ray per session, a real S3 server,
and a small trained checkpoint.

Ray starts once per session with explicit CPUs and its logs kept out of test output.
S3 is MinIO when a ``minio`` binary is on PATH (or ``$MINIO_BIN``), else moto's
standalone server, both on 127.0.0.1 and reached through the standard AWS variables.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable

import boto3
import numpy as np
import pytest

from devstack import services
from recognizer import data, settings

RAY_CPUS = 4


@pytest.fixture(scope="session")
def digits_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run the ``digits`` command in a child process, as a user would:
    ``digits_cli(*args, env={...}, cwd=...)``; env entries are added to this one's."""

    def run(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "formdigits.cli", *args], capture_output=True,
                              text=True, timeout=300, env={**os.environ, **(env or {})}, **kw)

    return run


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    folder = settings.data_dir()
    if not folder:
        pytest.fail(f"set ${settings.DATA_ENV} to a folder of MNIST IDX files "
                    "(`make test` sets it to ../shared/data/mnist)")
    return folder


@pytest.fixture(scope="session")
def mnist_test(mnist_dir) -> data.Digits:
    return data.load(mnist_dir, "test")


@pytest.fixture(scope="session")
def mnist_test_raw(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = data.load_idx_raw(mnist_dir, "test")
    return images, labels


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on loopback; sets the standard AWS variables for this process."""
    with services.s3_server(access_key="formdigits-test", secret_key="formdigits-secret-key") as server:
        yield {"endpoint": server.endpoint, "kind": server.kind, **server.env()}


@pytest.fixture(scope="session")
def checking_s3() -> dict:
    """An S3 server that checks credentials (MinIO, or moto with IAM authentication on),
    holding a bucket ``checked``: ``{"endpoint", "kind", "bucket", AWS variables...}``.
    Nothing is exported: tests pass its variables to the processes they start."""
    with services.checking_s3_server() as server:
        boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                     aws_secret_access_key=server.secret_key,
                     region_name=server.region).create_bucket(Bucket="checked")
        yield {"endpoint": server.endpoint, "kind": server.kind, "bucket": "checked", **server.env()}


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray for the whole session (after S3 is configured, so workers see it)."""
    import ray

    from serving.proxy_errors import PROXY_ENV

    # Serve's proxy (started later, by the serving tests) answers its own errors in JSON,
    # as `digits serve` sets it up; Ray's processes take this environment at start.
    os.environ.update(PROXY_ENV)
    # address="local": never join a cluster someone started with `ray start` on this machine.
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, configure_logging=True)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - Serve may never have started
        pass
    ray.shutdown()


#: The tests' recipe: the default recipe in small, with field pieces and a splitter too,
#: so that fields are read by segmentation as without a learned reader (the reader's own
#: tests train theirs, and read with the bundled model's).
SESSION_RECIPE = dict(model="best", epochs=3, batch_size=128, lr=4e-3, test_limit=2000,
                      field_pieces=300, splitter_examples=4000, splitter_epochs=3,
                      calibration_fields=800, reader_epochs=0)


@pytest.fixture(scope="session")
def trained_checkpoint(mnist_dir, tmp_path_factory) -> str:
    """A small but competent checkpoint, made by the product's own training loop run in
    this process (one worker, no Ray) for speed: the same kind of checkpoint
    `digits train` writes."""
    from recognizer.training import local
    from recognizer.training.config import TrainConfig

    runs = str(tmp_path_factory.mktemp("ckpt"))
    result = local.run(TrainConfig(data=mnist_dir, output=runs, name="model", **SESSION_RECIPE))
    return result.checkpoint
