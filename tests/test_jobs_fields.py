"""Batch jobs in field mode: whole rows of digits in, digit strings out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import recognizer
from jobs import schema, shards
from jobs.errors import JobError
from jobs.run import JobConfig, run_job
from recognizer.data import synth
from recognizer.fields import read_fields
from recognizer.runtime import storage


def _table(uri: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(storage.read_bytes(uri)))


def test_field_mode_writes_strings_that_match_the_library(ray_cluster, bucket, mnist_dir,
                                                          trained_checkpoint):
    inp, out = f"s3://{bucket}/fields", f"s3://{bucket}/read"
    made = shards.make_shards(mnist_dir, inp, rows_per_shard=15, limit=5 * 30, fields=5)
    assert len(made) == 2
    # One more shard: a blank field and garbage bytes must become error rows.
    blank = synth.encode(np.full((80, 200), 240, np.uint8))
    table = pa.table({"id": pa.array([1000, 1001], pa.int64()),
                      "image": pa.array([blank, b"not an image"], pa.binary()),
                      "text": pa.array([None, None], pa.string())})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes(f"{inp}/zz-bad.parquet", buf.getvalue().to_pybytes())

    summary = run_job(JobConfig(input=inp, output=out, checkpoint=trained_checkpoint, mode="field",
                                progress=False, batch_size=8))
    assert summary["shards"] == {"total": 3, "ok": 3, "skipped": 0, "failed": 0}
    assert summary["rows"]["ok"] == 30 and summary["rows"]["error"] == 2

    model = recognizer.load(trained_checkpoint)
    right = 0
    for uri in made:
        given = _table(uri).to_pydict()
        got = _table(uri.replace("/fields/", "/read/")).to_pydict()
        assert got["id"] == given["id"]
        expected = read_fields(model, given["image"])
        assert got["text"] == [e.text for e in expected]
        assert all(len(c) == len(t) for c, t in zip(got["digit_confidences"], got["text"], strict=True))
        right += sum(g == t for g, t in zip(got["text"], given["text"], strict=True))
    assert right >= 20  # of 30 five-digit fields, with the small test checkpoint

    bad_table = _table(f"{out}/zz-bad.parquet")
    assert bad_table.schema == schema.output_schema("field", pa.int64())
    bad = bad_table.to_pydict()
    assert bad["text"] == [None, None] and bad["confidence"] == [None, None]
    assert bad["error"][0].startswith("blank_image") and bad["error"][1].startswith("not_an_image")
    assert bad["error_code"] == ["blank_image", "not_an_image"]

    # The learned reader from a checkpoint that has none: refused before any work starts.
    with pytest.raises(JobError, match="no learned field reader.*--reader-epochs"):
        run_job(JobConfig(input=inp, output=f"s3://{bucket}/never", checkpoint=trained_checkpoint,
                          mode="field", field_reader="learned", progress=False))
    assert storage.list_files(f"s3://{bucket}/never", recursive=True) == []


def test_field_mode_marks_low_confidence_rows_for_review(ray_cluster, bucket, mnist_test_raw,
                                                         trained_checkpoint):
    from recognizer.data.forms import make_form_fields

    images, labels = mnist_test_raw
    forms = make_form_fields(images, labels, 24, np.random.default_rng(5))
    lines_only = np.full((60, 220), 235, np.uint8)
    lines_only[[15, 45], :] = 40          # two ruling lines, nothing written between them
    lines_only[:, 110] = 40
    blobs = [synth.encode(f.image) for f in forms] + [synth.encode(lines_only)]
    inp, out = f"s3://{bucket}/review-in", f"s3://{bucket}/review-out"
    table = pa.table({"id": pa.array(range(len(blobs)), pa.int64()), "image": pa.array(blobs, pa.binary())})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes(f"{inp}/forms.parquet", buf.getvalue().to_pybytes())

    threshold = 0.6
    summary = run_job(JobConfig(input=inp, output=out, checkpoint=trained_checkpoint, mode="field",
                                min_confidence=threshold, progress=False))
    assert summary["shards"]["failed"] == 0
    got = _table(f"{out}/forms.parquet").to_pydict()
    assert got["id"] == list(range(len(blobs)))  # every row, none dropped for review
    for conf, review, err in zip(got["confidence"], got["review"], got["error"], strict=True):
        assert review is (True if err or conf < threshold else False)
    # Lines alone: an error row saying no digits were found, never "1" or "".
    assert got["text"][-1] is None and got["error_code"][-1] == "no_digits"
    # The raw reading is the text with separators in place, and nothing else.
    for text, raw in zip(got["text"], got["raw"], strict=True):
        if text is not None:
            assert "".join(c for c in raw if c.isdigit()) == text
    assert any(r and r != t for r, t in zip(got["raw"], got["text"], strict=True))
