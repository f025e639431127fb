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
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from recognizer.errors import DigitsError


class ServiceError(DigitsError):
    """A local server could not be started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a child process, and kill it if it has not exited within timeout."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


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
    #: The running server, for :meth:`restart` (not part of the server's identity).
    process: _S3Process | None = field(default=None, compare=False, repr=False)

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3, pyarrow and Ray workers here."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region}

    def restart(self, down_s: float = 1.0) -> None:
        """Stop the server, leave the port closed for down_s seconds, start it again on
        the same port with the same data (MinIO's folder; moto's in-process state)."""
        self.process.stop()
        time.sleep(down_s)
        self.process.start()


def minio_binary() -> str | None:
    return os.environ.get("MINIO_BIN") or shutil.which("minio")


class _S3Process:
    """MinIO (a child process over a data folder) or moto (a thread of this process,
    whose buckets live in this process's memory), on one loopback port."""

    def __init__(self, kind: str, port: int, access_key: str, secret_key: str,
                 separate_process: bool = False):
        self.kind, self.port, self.separate_process = kind, port, separate_process
        self.access_key, self.secret_key = access_key, secret_key
        self.workdir = tempfile.mkdtemp(prefix="formdigits-minio-") if kind == "minio" else None
        self._proc: subprocess.Popen | None = None
        self._moto = None

    def start(self) -> None:
        if self.kind == "minio":
            self._proc = subprocess.Popen(
                [minio_binary(), "server", self.workdir, "--address", f"127.0.0.1:{self.port}", "--quiet"],
                env={**os.environ, "MINIO_ROOT_USER": self.access_key,
                     "MINIO_ROOT_PASSWORD": self.secret_key},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(self.port, proc=self._proc)
            return
        if self.separate_process:
            # Objects above 256 kB spill to disk, so a big benchmark's data does not
            # sit in the server's memory (moto's default keeps up to 5 MB per object).
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env={**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(256 * 1024)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(self.port, proc=self._proc)
            return
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._moto.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if self._moto is not None:
            self._moto.stop()
            # ThreadedMotoServer.stop leaves its socket listening: close it, so that the
            # port refuses connections as a stopped server's does.
            self._moto._server.server_close()
            self._moto = None

    @property
    def pid(self) -> int | None:
        """The server's process id when it runs as a child process, else None."""
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        self.stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def s3_server(access_key: str = "formdigits", secret_key: str = "formdigits-secret",
              set_env: bool = True, separate_process: bool = False) -> Iterator[S3Server]:
    """Run an S3 server on a free loopback port; optionally export the AWS variables.

    moto runs in this process unless ``separate_process`` (benchmarks that measure this
    process's memory); MinIO always runs as a child process.
    """
    port = free_port()
    kind = "minio" if minio_binary() else "moto"
    process = _S3Process(kind, port, access_key, secret_key, separate_process)
    server = S3Server(f"http://127.0.0.1:{port}", kind, access_key, secret_key, process=process)
    saved = {k: os.environ.get(k) for k in server.env()}
    try:
        process.start()
        if set_env:
            os.environ.update(server.env())
        yield server
    finally:
        process.close()
        if set_env:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextmanager
def checking_s3_server() -> Iterator[S3Server]:
    """An S3 server that checks credentials and signatures (nothing exported).

    MinIO always checks them. Otherwise moto's standalone server runs in a child process
    (its authentication switch is process-wide) with an IAM user allowed everything;
    once that user's access key exists, moto's IAM authentication is switched on
    (``/moto-api/reset-auth`` to 0: no more unauthenticated actions, as
    ``INITIAL_NO_AUTH_ACTION_COUNT`` says), so a wrong key or secret is refused with 403.
    """
    if minio_binary():
        with s3_server("formdigits-iam", "formdigits-iam-secret", set_env=False) as server:
            yield server
        return
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="formdigits")
        iam.put_user_policy(UserName="formdigits", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="formdigits")["AccessKey"]
        switch_on = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0",
                                           headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(switch_on, timeout=10).close()
        yield S3Server(endpoint, "moto-iam", key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        stop_process(proc)


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


def _wait_until_ready(url: str, timeout: float, proc: subprocess.Popen) -> None:
    """Block until ``url`` answers 200: Prometheus listens before its storage is open and
    answers every query 503 until then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{proc.args[0]} exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:  # urllib's HTTPError (503 while starting) and refused connections
            pass
        time.sleep(0.2)
    raise ServiceError(f"{url} did not answer 200 within {timeout:.0f} s")


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
        url = f"http://127.0.0.1:{port}"
        _wait_until_ready(f"{url}/-/ready", timeout=60, proc=proc)
        yield Prometheus(url, config)
    finally:
        stop_process(proc, 15)
        shutil.rmtree(workdir, ignore_errors=True)
