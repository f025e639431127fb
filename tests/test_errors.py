"""Ergonomics: each common mistake is one clear line on stderr, no traceback."""

from __future__ import annotations

import subprocess

from devstack import services


def _one_line(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout[-500:], out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_checkpoint(digits_cli, tmp_path):
    _one_line(digits_cli("predict", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "none")),
                 "no checkpoint")


def test_unreachable_s3_endpoint(digits_cli, mnist_dir):
    port = services.free_port()
    line = _one_line(digits_cli("shards", "make", "--data", mnist_dir, "--output", "s3://forms/in",
                                "--rows-per-shard", "5", "--limit", "5",
                                env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}),
                     f"127.0.0.1:{port}")
    assert "formdigits-secret" not in line


def test_missing_bucket(digits_cli, s3_server, mnist_dir):
    _one_line(digits_cli("shards", "make", "--data", mnist_dir, "--output", "s3://no-such-bucket/in",
                         "--rows-per-shard", "5", "--limit", "5"),
              "no-such-bucket", "does not exist")


def test_missing_bucket_for_a_checkpoint(digits_cli, s3_server):
    _one_line(digits_cli("evaluate", "--checkpoint", "s3://no-such-bucket/runs/digits"),
                 "no-such-bucket")


def test_wrong_credentials(digits_cli, checking_s3, mnist_dir):
    # A server that checks them: MinIO, or moto with its IAM authentication on.
    env = {k: v for k, v in checking_s3.items() if k.startswith("AWS_")}
    line = _one_line(digits_cli("shards", "make", "--data", mnist_dir,
                                "--output", f"s3://{checking_s3['bucket']}/in", "--rows-per-shard", "5",
                                "--limit", "5", env={**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}),
                     "credentials")
    assert "wrong-secret-value" not in line and checking_s3["AWS_SECRET_ACCESS_KEY"] not in line
    # The right ones work against the same server (the refusal was about the secret).
    ok = digits_cli("shards", "make", "--data", mnist_dir, "--output", f"s3://{checking_s3['bucket']}/in",
                    "--rows-per-shard", "5", "--limit", "5", env=env)
    assert ok.returncode == 0, ok.stderr


def test_unreachable_ray_address(digits_cli, trained_checkpoint):
    port = services.free_port()
    # A real checkpoint: job run reads it before it reaches for Ray.
    _one_line(digits_cli("job", "run", "--input", "s3://forms/in", "--output", "s3://forms/out",
                         "--checkpoint", trained_checkpoint, env={"RAY_ADDRESS": f"127.0.0.1:{port}"}),
              "cannot reach the Ray cluster", f"127.0.0.1:{port}")
