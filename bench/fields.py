"""Field benchmark: whole 5-digit fields (postal codes) built from the 10,000 MNIST test
digits, read in-process with :func:`recognizer.fields.read_fields`.

Two sets of 2,000 fields, each using every test digit exactly once: digits kept apart
(uneven spacing, size, slant and baseline) and the default synthesis where 10% of
neighbouring pairs touch. Reports exact-string accuracy (target >= 95%), per-digit
accuracy (1 - edit distance / length, so a missed or extra digit costs one), how often
the number of digits read is wrong, and fields/s. The touching set is also split by
whether a field's marks are fewer than its digits (a touching pair that segmentation
must cut), which says where its errors come from.
"""

from __future__ import annotations

import time

import numpy as np

import recognizer
from recognizer import data
from recognizer.data.synth_fields import make_fields
from recognizer.fields import FieldResult, read_fields, segment
from recognizer.training.field_scores import edit_distance

LENGTH = 5
COUNT = 2000
#: Fields per read_fields call (one model batch each), as a batch job would send them.
BATCH = 200
TARGET = 0.95
SETS = {"apart": 0.0, "touching 10%": 0.1}


def measure(model: recognizer.Recognizer, fields: list[np.ndarray], texts: list[str],
            merged: list[bool], length: int | None = None) -> dict:
    """Accuracy and speed of reading the given fields against their true strings
    (``length``: the number of digits, when the reader is told it). ``merged`` marks
    the fields with fewer marks than digits (:func:`merged_marks`); their exact rate is
    reported apart."""
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(fields), BATCH):
        results.extend(read_fields(model, fields[i:i + BATCH], length=length))
    seconds = time.perf_counter() - t0
    read = [r.text if isinstance(r, FieldResult) else "" for r in results]
    digits = sum(len(t) for t in texts)
    errors = sum(edit_distance(r, t) for r, t in zip(read, texts, strict=True))
    exact = [r == t for r, t in zip(read, texts, strict=True)]
    confidences = [r.confidence for r in results if isinstance(r, FieldResult)]
    wrong = [c for c, ok in zip(confidences, exact, strict=False) if not ok]
    return {
        "fields": len(fields),
        "exact_accuracy": float(np.mean(exact)),
        "digit_accuracy": 1.0 - errors / digits,
        "wrong_length": float(np.mean([len(r) != len(t) for r, t in zip(read, texts, strict=True)])),
        "errors": sum(not isinstance(r, FieldResult) for r in results),
        "fields_per_s": len(fields) / seconds,
        "median_confidence_when_wrong": float(np.median(wrong)) if wrong else None,
        **_split(np.array(exact), np.array(merged, dtype=bool)),
    }


def _split(exact: np.ndarray, merged: np.ndarray) -> dict:
    def rate(ok: np.ndarray) -> float | None:
        return float(ok.mean()) if ok.size else None

    return {"merged_fields": int(merged.sum()), "exact_when_merged": rate(exact[merged]),
            "exact_when_separate": rate(exact[~merged])}


def merged_marks(fields: list[np.ndarray]) -> list[bool]:
    """Per field: does segmentation find fewer marks than digits (digits that touch)?"""
    return [segment(f).size < LENGTH for f in fields]


JOB_ROWS_PER_SHARD = 250


def measure_job(checkpoint: str, data_dir: str) -> dict:
    """Fields/s of ``digits job run --mode field`` over 2,000 synthesized 5-digit fields
    (the shards' default mix, some touching pairs) in Parquet shards on a local S3 server."""
    import io

    import pyarrow.parquet as pq

    from bench import local
    from jobs.run import JobConfig, run_job
    from jobs.shards import make_shards

    with local.s3_and_ray("fields") as s3:
        make_shards(data_dir, "s3://fields/in", JOB_ROWS_PER_SHARD, split="test",
                    fields=LENGTH, seed=3)
        cfg = JobConfig(input="s3://fields/in", output="s3://fields/out", checkpoint=checkpoint,
                        mode="field", progress=False)
        t = time.perf_counter()
        summary = run_job(cfg)
        seconds = time.perf_counter() - t
        truth, read = {}, {}
        for key in (o["Key"] for o in s3.list_objects_v2(Bucket="fields")["Contents"]):
            if not key.endswith(".parquet"):
                continue
            table = pq.read_table(io.BytesIO(s3.get_object(Bucket="fields", Key=key)["Body"].read()))
            target = truth if key.startswith("in/") else read
            target.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist(),
                              strict=True))
    fields = summary["rows"]["processed_this_run"]
    return {"fields": fields, "shards": summary["shards"]["total"], "seconds": round(seconds, 2),
            "fields_per_s": round(fields / seconds, 1),
            "exact_accuracy": sum(read.get(i) == t for i, t in truth.items()) / len(truth)}


def run(checkpoint: str, data_dir: str) -> dict:
    """Build the field sets from the test digits and read them; returns a JSON-able dict."""
    images, labels, _ = data.load_idx_raw(data_dir, "test")
    model = recognizer.load(checkpoint)
    out = {"checkpoint": checkpoint, "model_version": model.version,
           "model_accuracy": model.meta.get("accuracy"), "length": LENGTH, "target": TARGET,
           "splitter": model.meta.get("splitter") if model.splitter is not None else None,
           "sets": {}}
    for name, touching in SETS.items():
        fields, texts = make_fields(images, labels, LENGTH, COUNT, np.random.default_rng(0),
                                    touching_prob=touching)
        merged = merged_marks(fields)
        out["sets"][name] = {"touching_prob": touching, **measure(model, fields, texts, merged)}
        out["sets"][f"{name}, length known"] = {
            "touching_prob": touching, **measure(model, fields, texts, merged, LENGTH)}
    out["job"] = measure_job(checkpoint, data_dir)
    return out


def _splitter_line(splitter: dict | None) -> str:
    if not splitter:
        return "Checkpoint without a splitter of touching digits: geometric cuts only."
    return (f"With the checkpoint's splitter of touching digits ({splitter['examples']:,} "
            f"synthesized marks, {splitter['epochs']} epochs, {splitter['pixel_accuracy']:.2%} "
            "of held-out stroke pixels given to the right digit).")


def to_markdown(results: dict) -> str:
    """A section for bench/RESULTS.md."""
    lines = [
        "## Fields: 5-digit fields from the 10,000 test digits",
        "",
        f"Model `{results['model_version']}` (single-digit accuracy {results['model_accuracy']}); "
        f"{COUNT:,} fields per set, each test digit used once; read in-process, "
        f"{BATCH} fields per call. Target: exact string >= {results['target']:.0%}.",
        "",
        _splitter_line(results.get("splitter")),
        "",
        "| set | exact string | per digit | wrong length | errors | fields/s | "
        "exact: fields with fewer marks than digits | exact: the other fields |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    for name, s in results["sets"].items():
        lines.append(f"| {name} | {s['exact_accuracy']:.2%} | {s['digit_accuracy']:.2%} | "
                     f"{s['wrong_length']:.2%} | {s['errors']} | {s['fields_per_s']:.0f} | "
                     f"{rate(s['exact_when_merged'])} ({s['merged_fields']} fields) | "
                     f"{rate(s['exact_when_separate'])} |")
    job = results.get("job")
    if job:
        lines += ["", f"In a batch job (`digits job run --mode field`, {job['fields']:,} fields of the "
                  f"shards' default mix in {job['shards']} Parquet shards on a local S3 server, "
                  f"all cores): **{job['fields_per_s']:.0f} fields/s** end to end "
                  f"({job['seconds']} s, Ray start-up included); exact string "
                  f"{job['exact_accuracy']:.2%}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("data_dir")
    args = parser.parse_args()
    res = run(args.checkpoint, args.data_dir)
    print(json.dumps(res, indent=2))
    print(to_markdown(res))
