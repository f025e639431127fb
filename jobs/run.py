"""Orchestration of a batch job on the current Ray: which shards to do, in what order,
how many at once, and the job's summary (``_job.json``).

Design: one Ray task per input shard (read -> preprocess -> infer via model actors ->
write one output object) and a small pool of model actors. The driver keeps at most
``max_in_flight`` shard tasks running, so memory is bounded whatever the shard count.
See docs/jobs.md for why this beats a Ray Data pipeline for this contract.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime

import ray

from jobs import infer, sink, source
from jobs.config import JobConfig
from jobs.errors import JobError
from jobs.metrics import JobMetrics
from jobs.task import ShardResult, ShardSettings, describe_failure, process_shard
from recognizer import checkpoint
from recognizer.bundled import default_checkpoint
from recognizer.errors import CheckpointError, StorageError
from recognizer.runtime import retry, storage

__all__ = ["JobConfig", "run_job"]

#: Shard tasks queued per task that can run at once (default of --max-in-flight).
QUEUE_PER_SLOT = 8

#: Ray retries a shard task this many times when its worker or node dies.
TASK_RETRIES = 5


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="shard", disable=not enabled, dynamic_ncols=True)


def _skipped(name: str, output: str) -> ShardResult:
    try:
        ok, failed = sink.count_output_rows(sink.output_uri(output, name))
    except Exception:  # noqa: BLE001 - counts are informative only; the output is complete
        ok, failed = 0, 0
    return ShardResult(name, "skipped", rows_ok=ok, rows_failed=failed)


def _resources() -> tuple[int, int]:
    res = ray.cluster_resources()
    return max(1, int(res.get("CPU", 1))), int(res.get("GPU", 0))


def _with_checkpoint(cfg: JobConfig) -> tuple[JobConfig, dict]:
    """``cfg`` naming its checkpoint (the bundled model when none is given), and the
    checkpoint's meta; refused before anything starts when the job asks for a learned
    field reader the checkpoint does not have."""
    cfg = replace(cfg, checkpoint=default_checkpoint(cfg.checkpoint))
    try:
        meta = checkpoint.identify(cfg.checkpoint)
    except CheckpointError as exc:
        raise JobError(f"cannot use checkpoint: {exc}") from exc
    if cfg.mode == "field" and cfg.field_reader == "learned" and not meta.get(checkpoint.READER_HASH):
        raise JobError(f"--field-reader learned: checkpoint {meta['uri']} has no learned field reader "
                       "(train one with `digits train --reader-epochs N`)")
    return cfg, meta


def run_job(cfg: JobConfig) -> dict:
    """Run a job to the end on the connected Ray and return its summary (also written to
    ``OUTPUT/_job.json``). Shards that fail are in the summary, never raised; with no
    ``cfg.checkpoint``, the bundled model reads them."""
    cfg.validate()
    cfg, meta = _with_checkpoint(cfg)
    started_at = datetime.now(UTC)
    started, t0 = started_at.isoformat(timespec="seconds"), time.perf_counter()
    retries_before = retry.retry_counts()
    job_id = cfg.job_id or f"job-{uuid.uuid4().hex[:12]}"
    shards = source.list_shards(cfg.input)
    try:
        # A run killed mid-write (this job's last run, most likely) leaves no visible
        # object, but may leave unfinished multipart uploads or temporary files.
        incomplete = sink.remove_incomplete(cfg.output, started_at)
        done = set() if cfg.overwrite else sink.completed_outputs(cfg.output)
    except StorageError as exc:
        raise JobError(f"cannot prepare the output prefix: {exc}") from exc

    cpus, gpus = _resources()
    gpus_per_actor = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    n_actors = cfg.actors or (max(1, int(gpus / gpus_per_actor)) if gpus_per_actor else 1)
    # A deep queue keeps every worker leased to this job from one shard to the next (a
    # worker left idle is stopped by Ray and a new one pays the imports again); queued
    # tasks cost the driver little, running ones are bounded by the CPUs.
    max_in_flight = cfg.max_in_flight or QUEUE_PER_SLOT * max(1, int(cpus / cfg.task_cpus))

    metrics = JobMetrics()
    metrics.shards_total.set(len(shards))
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port, cfg.metrics_host)
    results: list[ShardResult] = []
    bar = _progress_bar(len(shards), cfg.progress)
    try:
        todo = []
        for uri in shards:
            name = source.shard_name(cfg.input, uri)
            if name in done:
                results.append(_skipped(name, cfg.output))
                metrics.record(results[-1])
                bar.update()
            else:
                todo.append(uri)
        run = _ShardRun(cfg, meta, metrics, bar, t0)
        if todo:
            results += run.process(todo, max_in_flight, job_id, n_actors, gpus_per_actor)
        summary = _summary(cfg, job_id, meta, shards, results, started, time.perf_counter() - t0)
        summary["storage"] = _storage_report(results, retry.counts_since(retries_before), incomplete)
        summary["tasks"] = {"max_in_flight": max_in_flight, "peak_in_flight": run.peak_in_flight,
                            "task_retries_on_worker_loss": TASK_RETRIES}
        metrics.throughput.set(summary["images_per_second"])
        sink.write_summary(cfg.output, summary)
        return summary
    finally:
        bar.close()
        if cfg.metrics_port and cfg.metrics_linger > 0:
            time.sleep(cfg.metrics_linger)
        metrics.close()


class _ShardRun:
    """The shards still to do: model actors, shard tasks kept in flight, results in."""

    def __init__(self, cfg: JobConfig, meta: dict, metrics: JobMetrics, bar, t0: float):
        self.cfg, self.meta, self.metrics, self.bar, self.t0 = cfg, meta, metrics, bar, t0
        # The driver's S3 settings go with every task and actor as an argument: workers
        # of a remote cluster (RAY_ADDRESS) do not inherit this process's environment.
        # Not a runtime_env: workers with their own runtime_env cannot be taken from the
        # idle ones Ray keeps started, so each job would boot (and import) all of its own,
        # and runtime_env env_vars are shown to anyone who can read the cluster's state.
        self.aws = storage.aws_settings()
        self.actors: list = []
        self.images = 0
        self.peak_in_flight = 0  # the most shard tasks the driver held at once

    def process(self, todo: list[str], max_in_flight: int, job_id: str, n_actors: int,
                gpus_per_actor: float) -> list[ShardResult]:
        """Start the model actors, run a task per shard (at most max_in_flight at once) and
        stop the actors; results in finishing order."""
        cfg = self.cfg
        # The folder the driver identified (not a run folder that may gain a newer
        # checkpoint mid-job), checked against the version the rows are labelled with.
        self.actors = infer.start_actors(self.meta["uri"], n_actors, cfg.actor_cpus, gpus_per_actor,
                                         cfg.actor_threads, job_id, self.meta["version"], self.aws)
        try:
            return self._run_tasks(todo, max_in_flight)
        finally:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)

    def _splitter(self):
        """Field mode: the checkpoint's splitter weights in the object store, for the shard
        tasks that segment the fields (None without a splitter, or in digit mode)."""
        if self.cfg.mode != "field" or self._learned():
            return None
        try:
            raw = checkpoint.read_splitter(self.meta)
        except CheckpointError as exc:
            raise JobError(f"cannot use checkpoint: {exc}") from exc
        return ray.put(raw) if raw is not None else None

    def _learned(self) -> bool:
        """Field mode with the learned reader (the checkpoint's was checked before the run)."""
        return self.cfg.mode == "field" and self.cfg.field_reader == "learned"

    def _calibration(self) -> dict | None:
        """Field mode: the checkpoint's confidence calibration (its learned reader's, when
        it has one), for the shard tasks."""
        if self.cfg.mode != "field":
            return None
        if self._learned():
            return (self.meta.get("reader") or {}).get("calibration")
        from recognizer.fields.calibrate import META_KEY  # scipy: field jobs only

        return self.meta.get(META_KEY)

    def _run_tasks(self, todo: list[str], max_in_flight: int) -> list[ShardResult]:
        cfg = self.cfg
        loading = self.actors[0].info.remote()
        settings = ShardSettings(cfg.id_column, cfg.image_column, cfg.batch_size,
                                 self.meta["version"], cfg.mode, cfg.field_length,
                                 cfg.min_confidence, self._calibration(), self.aws,
                                 self._splitter(), self._learned())
        task = ray.remote(process_shard).options(num_cpus=cfg.task_cpus, max_retries=TASK_RETRIES,
                                                 retry_exceptions=False)
        pending: dict = {}
        queue = deque(enumerate(todo))

        def submit() -> None:
            while queue and len(pending) < max_in_flight:
                i, uri = queue.popleft()
                name = source.shard_name(cfg.input, uri)
                out = sink.output_uri(cfg.output, name)
                pending[task.remote(uri, out, name, self.actors, i, settings)] = name
            self.peak_in_flight = max(self.peak_in_flight, len(pending))

        # Shard tasks start (workers, S3 reads, decoding) while the actors load the model.
        submit()
        try:
            ray.get(loading)  # only to fail fast: meta already names the same weights
        except ray.exceptions.RayError as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise JobError(f"the model actors could not load {cfg.checkpoint} "
                           f"(is it readable from every node?): {describe_failure(exc)}") from exc
        results = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - retries exhausted: report, carry on
                result = ShardResult(name, "failed", reason=describe_failure(exc))
            results.append(result)
            self._record(result)
            submit()
        return results

    def _record(self, result: ShardResult) -> None:
        self.metrics.record(result)
        self.images += result.rows_ok + result.rows_failed
        rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
        self.metrics.throughput.set(rate)
        self.bar.set_postfix(images=f"{self.images:,}", rate=f"{rate:,.0f} img/s", refresh=False)
        self.bar.update()


def _storage_report(results: list[ShardResult], driver_retries: dict[str, int],
                    incomplete: int) -> dict:
    """Retries of this run by kind (the driver's listings and writes, every shard task's
    reads and writes) and leftovers of killed runs removed."""
    shard_retries = dict.fromkeys(retry.KINDS, 0)
    for r in results:
        shard_retries = retry.add_counts(shard_retries, r.retries)
    total = retry.add_counts(shard_retries, driver_retries)
    return {"retries": {**total, "total": sum(total.values())},
            "retry_policy": {"attempts": retry.DEFAULT_POLICY.attempts,
                             "base_seconds": retry.DEFAULT_POLICY.base_s,
                             "cap_seconds": retry.DEFAULT_POLICY.cap_s, "jitter": "equal"},
            "incomplete_uploads_removed": incomplete}


def _summary(cfg: JobConfig, job_id: str, meta: dict, shards: list[str], results: list[ShardResult],
             started: str, seconds: float) -> dict:
    by_status = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    processed = [r for r in results if r.status == "ok"]
    codes: dict[str, int] = {}
    for r in processed:
        for code, n in r.error_codes.items():
            codes[code] = codes.get(code, 0) + n
    images = sum(r.rows_ok + r.rows_failed for r in processed)
    return {
        "job_id": job_id,
        "input": cfg.input,
        "output": cfg.output,
        "model": {k: meta.get(k) for k in ("model", "version", "uri", "accuracy")},
        "shards": {"total": len(shards), **by_status},
        "rows": {
            "ok": sum(r.rows_ok for r in results if r.status != "failed"),
            "error": sum(r.rows_failed for r in results if r.status != "failed"),
            "processed_this_run": images,
            "errors_by_code": codes,
            "duplicate_ids": sum(r.duplicate_ids for r in processed),
        },
        "failed_shards": [{"shard": r.shard, "reason": r.reason} for r in results if r.status == "failed"],
        "started_at": started,
        "finished_at": _now(),
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 1) if seconds > 0 else 0.0,
        "settings": {"batch_size": cfg.batch_size, "overwrite": cfg.overwrite,
                     "task_cpus": cfg.task_cpus,
                     "id_column": cfg.id_column, "image_column": cfg.image_column},
    }
