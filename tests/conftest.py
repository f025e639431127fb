"""Shared fixtures: MNIST from $DIGITS_DATA, one Ray per session, a real S3 server,
and a small trained checkpoint.

Ray starts once per session with explicit CPUs and its logs kept out of test output.
S3 is MinIO when a ``minio`` binary is on PATH (or ``$MINIO_BIN``), else moto's
standalone server, both on 127.0.0.1 and reached through the standard AWS variables.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import boto3
import numpy as np
import pytest

from recognizer import data, settings

RAY_CPUS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


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
    port = free_port()
    minio = os.environ.get("MINIO_BIN") or shutil.which("minio")
    env = {"AWS_ACCESS_KEY_ID": "formdigits-test", "AWS_SECRET_ACCESS_KEY": "formdigits-secret-key",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    proc, moto_server, workdir = None, None, None
    if minio:
        workdir = tempfile.mkdtemp(prefix="minio-")
        proc = subprocess.Popen(
            [minio, "server", workdir, "--address", f"127.0.0.1:{port}", "--quiet"],
            env={**os.environ, "MINIO_ROOT_USER": env["AWS_ACCESS_KEY_ID"],
                 "MINIO_ROOT_PASSWORD": env["AWS_SECRET_ACCESS_KEY"]},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kind = "minio"
    else:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto_server.start()
        kind = "moto"
    wait_for_port(port)
    yield {"endpoint": env["AWS_ENDPOINT_URL"], "kind": kind, **env}
    if proc:
        proc.terminate()
        proc.wait(10)
    if moto_server:
        moto_server.stop()
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, configure_logging=True)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - Serve may never have started
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def trained_checkpoint(mnist_dir, tmp_path_factory) -> str:
    """A small but competent checkpoint trained in-process (no Ray) for speed."""
    from recognizer.train import TrainConfig, fit_in_process

    folder = str(tmp_path_factory.mktemp("ckpt") / "model")
    train = data.load(mnist_dir, "train")
    test = data.load(mnist_dir, "test")
    cfg = TrainConfig(model="best", epochs=3, batch_size=128, lr=4e-3)
    fit_in_process(cfg, train, data.Digits(test.images[:2000], test.labels[:2000], test.source),
                   folder)
    return folder
