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

from jobs import schema, sink, source
from jobs.config import JobConfig
from jobs.errors import ShardError
from recognizer import settings
from recognizer.errors import DigitsError, ImageError
from recognizer.preprocess import preprocess_many
from recognizer.results import FieldResult, Predictions
from recognizer.runtime import retry, storage

#: Batches sent to actors but not yet collected, per task: enough to keep the actor
#: busy while this task preprocesses the next batch, few enough to bound memory.
PIPELINE_DEPTH = 2


@dataclass
class ShardSettings:
    """What every shard task of a job needs to know, from its :class:`JobConfig`."""

    id_column: str = JobConfig.id_column
    image_column: str = JobConfig.image_column
    batch_size: int = JobConfig.batch_size
    model_version: str = ""
    mode: str = JobConfig.mode
    field_length: int | None = JobConfig.field_length
    min_confidence: float | None = JobConfig.min_confidence
    #: Field mode: the checkpoint's confidence calibration (its meta entry), if any.
    calibration: dict | None = None
    #: The driver's S3 settings (storage.aws_settings); kept out of every repr and log.
    aws: dict[str, str] = field(default_factory=dict, repr=False)
    #: Field mode: an object ref to the checkpoint's splitter weights, put once by the
    #: driver (segmentation runs in the shard tasks), or None when it has no splitter.
    splitter: object = None
    #: Field mode: the checkpoint has a learned reader; fields are fitted here and read
    #: whole by the actors instead of segmented.
    learned: bool = False


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
    #: Rows whose id repeats an earlier row's id in the same shard (kept, not dropped).
    duplicate_ids: int = 0
    #: Storage retries this shard's task made, by kind (recognizer.runtime.retry.KINDS).
    retries: dict[str, int] = field(default_factory=dict)


class _Digits:
    """Digit mode: one label per image, from the actors' digit probabilities."""

    def __init__(self) -> None:
        self.parts: list[Predictions] = []

    def submit(self, images: list, actor) -> tuple:
        x, errors = preprocess_many(images)
        ok = np.array([e is None for e in errors], dtype=bool)
        return errors, ok, (actor.probabilities.remote(x[ok]) if ok.any() else None)

    def collect(self, item: tuple) -> float | None:
        errors, ok, ref = item
        probs = np.zeros((len(errors), settings.DIGITS), np.float32)
        seconds = None
        if ref is not None:
            probs[ok], seconds = ray.get(ref)
        self.parts.append(Predictions.from_probabilities(probs, errors))
        return seconds

    @property
    def errors(self) -> list[ImageError | None]:
        return [e for p in self.parts for e in p.errors]

    def table(self, ids: pa.Array, model_version: str) -> pa.Table:
        return schema.digit_table(ids, Predictions.concat(self.parts), model_version)


class _Fields:
    """Field mode: each image is a row of digits; segmentation runs here, the pieces'
    probabilities come from the actors, and the cutting is chosen back here."""

    def __init__(self, length: int | None = None, splitter: bytes | None = None,
                 min_confidence: float | None = None, calibration: dict | None = None,
                 learned: bool = False) -> None:
        from recognizer.fields.calibrate import Calibration

        self.learned = learned
        self.length = length
        self.min_confidence = min_confidence
        self.calibration = Calibration(**calibration) if calibration else None
        self.split = None
        if splitter is not None:
            # torch: imported by field jobs whose checkpoint has a splitter only.
            from recognizer.checkpoint import SPLITTER_FILE, state_dict
            from recognizer.splitter import from_state

            self.split = from_state(state_dict(splitter, SPLITTER_FILE))
        self.results: list[FieldResult | ImageError] = []

    def submit(self, images: list, actor) -> tuple:
        from recognizer.fields import prepare_fields  # scipy: imported by field jobs only

        plan = prepare_fields(images, length=self.length, split=self.split, learned=self.learned)
        if not len(plan.inputs):
            return plan, None
        if self.learned:
            return plan, actor.read.remote(plan.inputs)
        return plan, actor.probabilities.remote(plan.inputs, True)

    def collect(self, item: tuple) -> float | None:
        from recognizer.fields import assemble_fields
        from recognizer.reader.read import Outputs

        plan, ref = item
        if ref is None and plan.learned:  # no field decoded: every one of the batch failed
            outputs, seconds = Outputs.empty(), None
        elif ref is None:  # no piece to read: every field of the batch failed
            outputs, seconds = np.zeros((0, settings.DIGITS + 1), np.float32), None
        else:
            # The learned reader's Outputs, or the segmenting reader's piece probabilities.
            outputs, seconds = ray.get(ref)
        self.results.extend(assemble_fields(plan, outputs, calibration=self.calibration))
        return seconds

    @property
    def errors(self) -> list[ImageError | None]:
        return [r if isinstance(r, ImageError) else None for r in self.results]

    def table(self, ids: pa.Array, model_version: str) -> pa.Table:
        return schema.field_table(ids, self.results, model_version, self.min_confidence)


def process_shard(shard_uri: str, out_uri: str, name: str, actors: list, first_actor: int,
                  cfg: ShardSettings) -> ShardResult:
    """Label every row of one shard and write its output shard. Never raises for bad
    rows, a bad shard or storage that keeps failing; those come back in the result
    (``name``: the shard's path below the input prefix, as reported)."""
    start = time.perf_counter()
    storage.use_aws_settings(cfg.aws)
    retries_before = retry.retry_counts()
    try:
        result = _label_shard(shard_uri, out_uri, actors, first_actor, cfg, name)
    except (ShardError, DigitsError) as exc:
        # Nothing was written: the output appears whole, at the very end, or not at all.
        result = ShardResult(name, "failed", reason=str(exc))
    result.seconds = time.perf_counter() - start
    result.retries = retry.counts_since(retries_before)
    return result


def _label_shard(shard_uri: str, out_uri: str, actors: list, first_actor: int,
                 cfg: ShardSettings, name: str) -> ShardResult:
    reader = source.ShardReader(shard_uri, cfg.id_column, cfg.image_column)
    if cfg.mode == "field":
        mode = _Fields(cfg.field_length, ray.get(cfg.splitter) if cfg.splitter is not None else None,
                       cfg.min_confidence, cfg.calibration, cfg.learned)
    else:
        mode = _Digits()
    id_parts: list[pa.Array] = []
    batch_seconds: list[float] = []
    pending: deque = deque()

    def collect() -> None:
        ids, item = pending.popleft()
        seconds = mode.collect(item)
        if seconds is not None:
            batch_seconds.append(seconds)
        id_parts.append(ids)

    turn = first_actor
    try:
        for ids, images in reader.batches(cfg.batch_size):
            pending.append((ids, mode.submit(images, actors[turn % len(actors)])))
            turn += 1
            if len(pending) > PIPELINE_DEPTH:
                collect()
        while pending:
            collect()
    finally:
        reader.close()

    id_type = reader.id_type
    all_ids = pa.concat_arrays([a.cast(id_type) for a in id_parts]) if id_parts else pa.array([], id_type)
    sink.write_table(out_uri, mode.table(all_ids, cfg.model_version))
    errors = mode.errors
    codes = Counter(e.code for e in errors if e is not None)
    failed = sum(codes.values())
    return ShardResult(name, "ok", rows_ok=len(errors) - failed, rows_failed=failed,
                       error_codes=dict(codes), batch_seconds=batch_seconds,
                       duplicate_ids=source.duplicate_ids(all_ids))


def describe_failure(exc: BaseException) -> str:
    """One line for a shard task that failed for good (after Ray's retries)."""
    cause = getattr(exc, "cause", None) or exc
    last = traceback.format_exception_only(type(cause), cause)[-1].strip()
    return storage.describe_os_error(Exception(last))
