"""Where the model runs: Ray actors that each hold the model and label whole batches.

Shard tasks preprocess images themselves (that is the CPU-heavy part and scales with
tasks) and send (N, 28, 28) tensors here, so the model is loaded once per actor, not
once per shard, and batches are large enough to use the CPU or GPU well.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING

import numpy as np
import ray

if TYPE_CHECKING:
    from recognizer.reader.read import Outputs

#: Latency buckets (seconds) of batch inference, shared by driver and actor metrics.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ModelActor:
    """Holds one loaded checkpoint; ``probabilities`` runs a batch of preprocessed inputs."""

    def __init__(self, checkpoint: str, threads: int = 1, use_gpu: bool = False,
                 expected_version: str | None = None, aws: dict[str, str] | None = None):
        import torch

        from recognizer.errors import CheckpointError
        from recognizer.predict import load
        from recognizer.runtime import storage

        storage.use_aws_settings(aws or {})
        # Decoding tasks share the CPUs with this actor: cap torch's threads so the
        # two do not oversubscribe the cores.
        torch.set_num_threads(max(1, threads))
        self.model = load(checkpoint, device="cuda" if use_gpu else "cpu")
        if expected_version and self.model.version != expected_version:
            # Rows are labelled with the version the driver read; an actor (re)started
            # after the folder was rewritten must not label them with other weights.
            raise CheckpointError(
                f"{checkpoint} now holds model {self.model.version}, but this job labels its "
                f"rows {expected_version}: do not rewrite a checkpoint folder while a job uses it")
        self._latency = self._images = None
        try:
            from ray.util import metrics

            # Exported by Ray's metrics agent on every node (cluster-wide scraping).
            self._latency = metrics.Histogram(
                "digits_actor_batch_inference_seconds", "Model time per batch in a job actor",
                boundaries=list(LATENCY_BUCKETS))
            self._images = metrics.Counter("digits_actor_images_total",
                                           "Images labelled by job model actors")
        except Exception:  # noqa: BLE001 - metrics are optional; never fail inference for them
            pass

    def info(self) -> dict:
        """Model name, version, checkpoint folder and recorded accuracy."""
        meta = self.model.meta
        return {"model": meta.get("model"), "version": meta.get("version"),
                "uri": meta.get("uri"), "accuracy": meta.get("accuracy")}

    def pid(self) -> int:
        """This actor's process id (for tests that stop it)."""
        return os.getpid()

    def probabilities(self, x: np.ndarray, not_a_digit: bool = False) -> tuple[np.ndarray, float]:
        """(class probabilities, seconds) for an (N, 28, 28) float32 batch: (N, 10), or
        with ``not_a_digit`` (N, 11) as field reading wants (``Recognizer.predict_tensors``)."""
        start = time.perf_counter()
        probs = self.model.predict_tensors(x, not_a_digit)
        seconds = time.perf_counter() - start
        if self._latency is not None and len(x):
            self._latency.observe(seconds)
            self._images.inc(len(x))
        return probs, seconds

    def read(self, canvas: np.ndarray) -> tuple[Outputs, float]:
        """(outputs, seconds) of the learned field reader on fitted uint8 canvases
        (``Recognizer.read_tensors``)."""
        start = time.perf_counter()
        outputs = self.model.read_tensors(canvas)
        seconds = time.perf_counter() - start
        if self._latency is not None and len(canvas):
            self._latency.observe(seconds)
            self._images.inc(len(canvas))
        return outputs, seconds


def actor_name(job_id: str, index: int) -> str:
    """Model actors are named so operators (and tests) can find them with `ray list actors`;
    the random tail keeps a quick rerun of the same job id from clashing with the last run."""
    return f"digits-{job_id}-model-{index}-{uuid.uuid4().hex[:6]}"


def start_actors(checkpoint: str, count: int, num_cpus: float, num_gpus: float,
                 threads: int, job_id: str, expected_version: str | None = None,
                 aws: dict[str, str] | None = None) -> list:
    """Start count model actors that Ray restarts (and whose calls it retries) on failure.

    ``checkpoint`` should be a resolved checkpoint folder (``identify(uri)["uri"]``), not a
    run folder: an actor restarted mid-job must load the same checkpoint, not a newer one.
    ``aws``: the S3 settings to read it with (the driver's).
    """
    cls = ray.remote(ModelActor)
    return [cls.options(name=actor_name(job_id, i), num_cpus=num_cpus, num_gpus=num_gpus,
                        max_restarts=-1, max_task_retries=-1, max_concurrency=1)
            .remote(checkpoint, threads, num_gpus > 0, expected_version, aws)
            for i in range(count)]
