"""Prometheus metrics of a job, kept by the driver and served on ``--metrics-port``.

Shard tasks return their counts and per-batch model latencies with their results, so
the driver's registry holds the whole job's numbers however many nodes did the work.
On a cluster the model actors also publish ``ray.util.metrics`` through Ray's own
metrics export (see docs/jobs.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from jobs.infer import LATENCY_BUCKETS
from jobs.task import ShardResult


class JobMetrics:
    """The ``digits_`` metrics of one job, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.images = Counter("digits_images_processed", "Images processed by the job, by status",
                              ["status"], registry=self.registry)
        self.shards = Counter("digits_shards", "Input shards finished by the job, by status",
                              ["status"], registry=self.registry)
        self.latency = Histogram("digits_batch_inference_seconds",
                                 "Model time per inference batch in the job's actors",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.throughput = Gauge("digits_job_images_per_second",
                                "Images per second since the job started", registry=self.registry)
        self.shards_total = Gauge("digits_job_shards_total", "Input shards in the job",
                                  registry=self.registry)
        for status in ("ok", "error"):
            self.images.labels(status)
        for status in ("ok", "failed", "skipped"):
            self.shards.labels(status)
        self._server = None

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics on host:port until :meth:`close`."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def record(self, result: ShardResult) -> None:
        self.shards.labels(result.status).inc()
        if result.status == "skipped":  # done by an earlier run: no images processed now
            return
        self.images.labels("ok").inc(result.rows_ok)
        self.images.labels("error").inc(result.rows_failed)
        for seconds in result.batch_seconds:
            self.latency.observe(seconds)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
