"""One input shard, start to finish, in one Ray task: read, preprocess, infer, write.

Keeping a shard inside one task gives exactly one output object per shard, written
once at the end; a retried task simply writes the same object again.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray

from jobs import sink, source
from jobs.errors import ShardError
from recognizer import storage
from recognizer.errors import DigitsError, ImageError
from recognizer.preprocess import preprocess
from recognizer.settings import IMAGE_SIZE

#: Batches sent to actors but not yet collected, per task: enough to keep the actor
#: busy while this task preprocesses the next batch, few enough to bound memory.
PIPELINE_DEPTH = 2


@dataclass
class ShardSettings:
    id_column: str = "id"
    image_column: str = "image"
    batch_size: int = 512
    model_version: str = ""


@dataclass
class ShardResult:
    """What happened to one shard. status is ok, failed or skipped."""

    shard: str
    status: str
    rows_ok: int = 0
    rows_failed: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)


def _prepare(images: list) -> tuple[np.ndarray, list[str | None]]:
    x = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    errors: list[str | None] = [None] * len(images)
    for i, image in enumerate(images):
        try:
            x[i] = preprocess(image)
        except ImageError as exc:
            errors[i] = f"{exc.code}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bad row must never sink its shard
            errors[i] = f"internal_error: {type(exc).__name__}: {storage.describe_os_error(exc)}"
    return x, errors


def process_shard(shard_uri: str, out_uri: str, actors: list, first_actor: int,
                  cfg: ShardSettings) -> ShardResult:
    """Label every row of one shard and write its output shard. Never raises for bad
    rows or a bad shard; those come back in the result."""
    start = time.perf_counter()
    name = source.shard_name(shard_uri)
    try:
        pf = source.open_shard(shard_uri, cfg.id_column, cfg.image_column)
    except (ShardError, DigitsError) as exc:
        return ShardResult(name, "failed", reason=str(exc), seconds=time.perf_counter() - start)

    id_parts: list[pa.Array] = []
    labels: list[np.ndarray] = []
    confs: list[np.ndarray] = []
    errors: list[str | None] = []
    batch_seconds: list[float] = []
    pending: deque = deque()
    turn = first_actor

    def collect() -> None:
        ids, errs, ok, ref = pending.popleft()
        lab = np.zeros(len(errs), np.int8)
        conf = np.zeros(len(errs), np.float32)
        if ref is not None:
            lab[ok], conf[ok], seconds = ray.get(ref)
            batch_seconds.append(seconds)
        id_parts.append(ids)
        labels.append(lab)
        confs.append(conf)
        errors.extend(errs)

    for ids, images in source.iter_batches(pf, cfg.id_column, cfg.image_column, cfg.batch_size):
        x, errs = _prepare(images)
        ok = np.array([e is None for e in errs], dtype=bool)
        ref = None
        if ok.any():
            ref = actors[turn % len(actors)].predict.remote(x[ok])
            turn += 1
        pending.append((ids, errs, ok, ref))
        if len(pending) > PIPELINE_DEPTH:
            collect()
    while pending:
        collect()

    id_type = pf.schema_arrow.field(cfg.id_column).type
    all_ids = pa.concat_arrays([a.cast(id_type) for a in id_parts]) if id_parts else pa.array([], id_type)
    table = sink.build_table(
        all_ids, np.concatenate(labels) if labels else np.zeros(0, np.int8),
        np.concatenate(confs) if confs else np.zeros(0, np.float32), errors, cfg.model_version)
    sink.write_table(out_uri, table)
    codes = Counter(e.split(":", 1)[0] for e in errors if e is not None)
    failed = sum(codes.values())
    return ShardResult(name, "ok", rows_ok=len(errors) - failed, rows_failed=failed,
                       error_codes=dict(codes), seconds=time.perf_counter() - start,
                       batch_seconds=batch_seconds)


def describe_failure(exc: BaseException) -> str:
    """One line for a shard task that failed for good (after Ray's retries)."""
    cause = getattr(exc, "cause", None) or exc
    last = traceback.format_exception_only(type(cause), cause)[-1].strip()
    return storage.describe_os_error(Exception(last))
