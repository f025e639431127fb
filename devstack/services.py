"""The local single-node stack's servers: an S3 endpoint and Prometheus, on loopback.

S3 is MinIO when a ``minio`` binary is on PATH (or ``$MINIO_BIN`` names one), otherwise
moto's standalone S3 server: a real HTTP endpoint that boto3 and pyarrow reach exactly as
they reach MinIO or AWS. Prometheus is Debian's ``prometheus`` binary. Used by the demo,
the tests and the benchmarks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from recognizer.errors import DigitsError


class ServiceError(DigitsError):
    """A local server could not be started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{proc.args[0]} exited with code {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    kind: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3, pyarrow and Ray workers here."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region}


def minio_binary() -> str | None:
    return os.environ.get("MINIO_BIN") or shutil.which("minio")


@contextmanager
def s3_server(access_key: str = "formdigits", secret_key: str = "formdigits-secret",
              set_env: bool = True) -> Iterator[S3Server]:
    """Run an S3 server on a free loopback port; optionally export the AWS variables."""
    port = free_port()
    server = S3Server(f"http://127.0.0.1:{port}", "minio" if minio_binary() else "moto",
                      access_key, secret_key)
    saved = {k: os.environ.get(k) for k in server.env()}
    proc, moto, workdir = None, None, None
    try:
        if server.kind == "minio":
            workdir = tempfile.mkdtemp(prefix="formdigits-minio-")
            proc = subprocess.Popen(
                [minio_binary(), "server", workdir, "--address", f"127.0.0.1:{port}", "--quiet"],
                env={**os.environ, "MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(port, proc=proc)
        else:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            wait_for_port(port)
        if set_env:
            os.environ.update(server.env())
        yield server
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if moto is not None:
            moto.stop()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if set_env:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


@dataclass(frozen=True)
class Prometheus:
    url: str
    config_path: str

    def query(self, expr: str) -> list[dict]:
        """Run an instant PromQL query through the HTTP API; returns the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise ServiceError(f"Prometheus query {expr!r} failed: {body}")
        return body["data"]["result"]

    def targets_up(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            active = json.load(resp)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@contextmanager
def prometheus_server(targets: list[str], scrape_interval: str = "1s") -> Iterator[Prometheus]:
    """Run Prometheus on a free loopback port scraping targets (``host:port`` strings)."""
    binary = prometheus_binary()
    if not binary:
        raise ServiceError("prometheus is not installed (Debian: apt-get install prometheus)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="formdigits-prometheus-")
    config = os.path.join(workdir, "prometheus.yml")
    with open(config, "w") as f:
        json.dump({"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                   "scrape_configs": [{"job_name": "formdigits",
                                       "static_configs": [{"targets": targets}]}]}, f)
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield Prometheus(f"http://127.0.0.1:{port}", config)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
