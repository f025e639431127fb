"""Batch jobs end to end: real S3 server, real Ray, a trained checkpoint."""

from __future__ import annotations

import io
import json
import os
import threading

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobs_helpers import wait_for
from PIL import Image

import recognizer
from devstack import services
from formdigits.cli import main
from jobs import infer, schema, shards
from jobs.run import JobConfig, run_job
from jobs.task import ShardSettings
from recognizer import checkpoint
from recognizer.data import synth
from recognizer.errors import CheckpointError


def _put(uri: str, data: bytes) -> None:
    bucket, key = uri[5:].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _read(uri: str) -> pa.Table:
    bucket, key = uri[5:].split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(pa.BufferReader(body))


def _keys(bucket: str, prefix: str) -> dict[str, str]:
    """key -> ETag under a prefix."""
    resp = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"] for o in resp.get("Contents", [])}


def _inputs(uri: str) -> pa.Table:
    bucket, prefix = uri[5:].split("/", 1)
    tables = [_read(f"s3://{bucket}/{k}") for k in sorted(_keys(bucket, prefix + "/"))]
    return pa.concat_tables(tables)


def _outputs(bucket: str, prefix: str = "out") -> pa.Table:
    keys = sorted(k for k in _keys(bucket, prefix + "/") if k.endswith(".parquet"))
    return pa.concat_tables([_read(f"s3://{bucket}/{k}") for k in keys])


def _summary(bucket: str, prefix: str = "out") -> dict:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/_job.json")["Body"].read()
    return json.loads(body)


@pytest.fixture
def scans(bucket, mnist_dir) -> str:
    """4 shards of 60 synthesized scans each."""
    uri = f"s3://{bucket}/in"
    shards.make_shards(mnist_dir, uri, rows_per_shard=60, as_scans=True, limit=240)
    return uri


def _cfg(inp: str, bucket: str, ckpt: str, **kw) -> JobConfig:
    return JobConfig(input=inp, output=f"s3://{bucket}/out", checkpoint=ckpt, progress=False,
                     batch_size=kw.pop("batch_size", 32), **kw)


def test_end_to_end_matches_predict(ray_cluster, scans, bucket, trained_checkpoint):
    summary = run_job(_cfg(scans, bucket, trained_checkpoint))
    inputs = _inputs(scans)
    out = _outputs(bucket)
    assert len(_keys(bucket, "out/")) == 5  # 4 shards + _job.json
    assert sorted(out.column("id").to_pylist()) == sorted(inputs.column("id").to_pylist())
    by_id = dict(zip(out.column("id").to_pylist(), out.column("label").to_pylist(), strict=True))
    model = recognizer.load(trained_checkpoint)
    expected = model.predict(inputs.column("image").to_pylist())
    got = np.array([by_id[i] for i in inputs.column("id").to_pylist()])
    np.testing.assert_array_equal(got, expected.labels)
    assert (got == inputs.column("label").to_numpy()).mean() > 0.8  # the model is competent
    # The declared schema, column for column (the id keeps the input's type).
    assert out.schema == schema.output_schema("digit", inputs.schema.field("id").type)
    assert out.schema.field("label").type == pa.int8()
    assert out.schema.field("confidence").type == pa.float32()
    assert out.column("error_code").null_count == len(out)
    assert set(out.column("model_version").to_pylist()) == {model.version}
    assert out.column("error").null_count == len(out)

    stored = _summary(bucket)
    assert stored == summary
    assert stored["shards"] == {"total": 4, "ok": 4, "skipped": 0, "failed": 0}
    assert stored["rows"]["ok"] == 240 and stored["rows"]["error"] == 0
    assert stored["model"]["version"] == model.version
    assert stored["images_per_second"] > 0 and stored["failed_shards"] == []


def test_resume_skips_done_shards_and_overwrite_redoes_them(ray_cluster, scans, bucket,
                                                            trained_checkpoint):
    run_job(_cfg(scans, bucket, trained_checkpoint))
    first = _keys(bucket, "out/")
    # An interrupted run: two outputs never written.
    s3 = boto3.client("s3")
    for key in ("out/part-00001.parquet", "out/part-00003.parquet"):
        s3.delete_object(Bucket=bucket, Key=key)
    summary = run_job(_cfg(scans, bucket, trained_checkpoint))
    assert summary["shards"] == {"total": 4, "ok": 2, "skipped": 2, "failed": 0}
    assert summary["rows"]["processed_this_run"] == 120 and summary["rows"]["ok"] == 240
    again = _keys(bucket, "out/")
    for key in ("out/part-00000.parquet", "out/part-00002.parquet"):
        assert again[key] == first[key]  # untouched
    assert len(_outputs(bucket)) == 240

    summary = run_job(_cfg(scans, bucket, trained_checkpoint, overwrite=True))
    assert summary["shards"] == {"total": 4, "ok": 4, "skipped": 0, "failed": 0}
    assert sorted(_outputs(bucket).column("id").to_pylist()) == list(range(240))


def _png(arr: np.ndarray) -> bytes:
    return synth.encode(arr.astype(np.uint8))


def _bad_rows(digit: np.ndarray) -> dict[str, bytes | None]:
    good = _png(255 - digit)
    huge = io.BytesIO()
    Image.new("L", (7000, 7000), 255).save(huge, format="PNG")  # 49 Mpx > the 40 Mpx guard
    gif = io.BytesIO()
    Image.fromarray(digit).save(gif, format="GIF")
    return {
        "good": good,
        "not_an_image": b"definitely not an image",
        "truncated_image": good[: len(good) // 2],
        "blank_image": _png(np.full((40, 40), 230)),
        "image_too_large": huge.getvalue(),
        "empty_image": b"",
        "unsupported_format": gif.getvalue(),
    }


def test_bad_rows_and_bad_shards_are_reported_not_fatal(ray_cluster, bucket, mnist_test_raw,
                                                        trained_checkpoint):
    digits, _ = mnist_test_raw
    rows = _bad_rows(digits[0])
    ids = [f"row-{k}" for k in rows]  # string ids are kept as they are
    _put(f"s3://{bucket}/in/a-mixed.parquet", _parquet(pa.table(
        {"id": ids, "image": pa.array(list(rows.values()), pa.binary()), "other": list(range(len(ids)))})))
    _put(f"s3://{bucket}/in/b-not-parquet.parquet", b"PAR1 this is not parquet at all")
    _put(f"s3://{bucket}/in/c-no-image.parquet", _parquet(pa.table({"id": [1, 2], "picture": [b"x", b"y"]})))
    _put(f"s3://{bucket}/in/d-empty.parquet", _parquet(pa.table(
        {"id": pa.array([], pa.int64()), "image": pa.array([], pa.binary())})))

    summary = run_job(_cfg(f"s3://{bucket}/in", bucket, trained_checkpoint))
    assert summary["shards"] == {"total": 4, "ok": 2, "skipped": 0, "failed": 2}
    reasons = {f["shard"]: f["reason"] for f in summary["failed_shards"]}
    assert "not a Parquet file" in reasons["b-not-parquet.parquet"]
    assert "missing column(s) 'image'" in reasons["c-no-image.parquet"]
    assert summary["rows"]["ok"] == 1 and summary["rows"]["error"] == len(rows) - 1
    assert summary["rows"]["errors_by_code"] == {k: 1 for k in rows if k != "good"}

    outs = _keys(bucket, "out/")
    assert "out/b-not-parquet.parquet" not in outs and "out/c-no-image.parquet" not in outs
    assert len(_read(f"s3://{bucket}/out/d-empty.parquet")) == 0
    mixed = _read(f"s3://{bucket}/out/a-mixed.parquet").to_pylist()
    assert [r["id"] for r in mixed] == ids
    for row, kind in zip(mixed, rows, strict=True):
        if kind == "good":
            assert row["error"] is None and row["label"] == recognizer.load(
                trained_checkpoint).predict([rows["good"]]).labels[0]
        else:
            assert row["label"] is None and row["error"].startswith(kind + ": "), row
            assert row["error_code"] == kind  # the code as structure, not parsed from text
    # The summary's counts agree with the error codes the output shards carry.
    assert schema.error_codes(_read(f"s3://{bucket}/out/a-mixed.parquet")) == \
        summary["rows"]["errors_by_code"]
    # A failed shard makes the command exit 1; credentials are never in any output.
    code = main(["job", "run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
                 "--checkpoint", trained_checkpoint, "--no-progress"])
    assert code == 1
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in json.dumps(_summary(bucket))


def test_cli_shards_make_and_run(ray_cluster, bucket, mnist_dir, trained_checkpoint, capsys):
    assert main(["shards", "make", "--data", mnist_dir, "--output", f"s3://{bucket}/in",
                 "--rows-per-shard", "25", "--limit", "50"]) == 0
    table = _inputs(f"s3://{bucket}/in")
    assert table.column_names == ["id", "image", "label"] and len(table) == 50
    assert main(["job", "run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
                 "--checkpoint", trained_checkpoint, "--no-progress", "--batch-size", "16"]) == 0
    out = capsys.readouterr()
    assert "2 shards done" in out.out
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in out.out + out.err


def _run_in_thread(cfg: JobConfig) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        try:
            box["summary"] = run_job(cfg)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_model_actor_killed_mid_job_still_exactly_once(ray_cluster, bucket, mnist_dir,
                                                       trained_checkpoint):
    inp = f"s3://{bucket}/in"
    shards.make_shards(mnist_dir, inp, rows_per_shard=50, as_scans=True, limit=600)
    cfg = _cfg(inp, bucket, trained_checkpoint, batch_size=16, max_in_flight=2, job_id="killtest")
    thread, box = _run_in_thread(cfg)

    def actor():
        names = [n for n in ray_cluster.util.list_named_actors() if n.startswith("digits-killtest-model-")]
        return names[0] if names else None

    name = wait_for(actor, what="the model actor")
    wait_for(lambda: any(k.endswith(".parquet") for k in _keys(bucket, "out/")), what="a first output")
    assert thread.is_alive(), "the job finished before the actor could be killed"
    ray_cluster.kill(ray_cluster.get_actor(name), no_restart=False)
    thread.join(300)
    assert "error" not in box, box.get("error")
    summary = box["summary"]
    assert summary["shards"]["ok"] == 12 and summary["shards"]["failed"] == 0
    out = _outputs(bucket)
    assert sorted(out.column("id").to_pylist()) == list(range(600))  # every row exactly once
    assert out.column("error").null_count == 600


def test_prometheus_scrapes_job_throughput(ray_cluster, bucket, mnist_dir, trained_checkpoint):
    if services.prometheus_binary() is None:
        pytest.skip("the prometheus binary is absent (Debian package 'prometheus'; `make setup`)")
    inp = f"s3://{bucket}/in"
    shards.make_shards(mnist_dir, inp, rows_per_shard=50, as_scans=True, limit=200)
    metrics_port = services.free_port()
    with services.prometheus_server([f"127.0.0.1:{metrics_port}"]) as prom:
        # Linger keeps /metrics up after the (short) job so Prometheus scrapes final values.
        cfg = _cfg(inp, bucket, trained_checkpoint, metrics_port=metrics_port, metrics_linger=8.0)
        thread, box = _run_in_thread(cfg)

        def value(query: str) -> float | None:
            result = prom.query(query)
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: (value("digits_images_processed_total{status='ok'}") or 0) >= 200,
                  timeout=180, what="Prometheus to see all 200 images")
        assert value("digits_job_images_per_second") > 0
        assert value("digits_shards_total{status='ok'}") == 4
        assert value("digits_batch_inference_seconds_count") > 0
        thread.join(120)
        assert "error" not in box, box.get("error")


def test_model_actor_refuses_weights_other_than_the_jobs(trained_checkpoint):
    # An actor restarted after its checkpoint folder was rewritten must not label rows
    # that carry the driver's model_version with other weights.
    meta = checkpoint.identify(trained_checkpoint)
    assert infer.ModelActor(meta["uri"], expected_version=meta["version"]).model.version == meta["version"]
    with pytest.raises(CheckpointError, match="do not rewrite a checkpoint folder"):
        infer.ModelActor(meta["uri"], expected_version="best-000000000000")


def test_shard_settings_never_show_the_s3_secret():
    settings = ShardSettings(aws={"AWS_SECRET_ACCESS_KEY": "never-shown-secret"})
    assert "never-shown-secret" not in repr(settings) and "never-shown-secret" not in str(settings)
