"""Application metrics of the serving replicas, exported through Ray's metrics pipeline.

Ray adds its ``ray_`` namespace and Serve's ``deployment``/``replica``/``application``
tags, so Prometheus sees e.g. ``ray_digits_requests_total{endpoint="predict",status="200"}``
beside Serve's own ``ray_serve_*`` series.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ray.serve.metrics import Counter, Histogram

#: Images per model call (dynamic batching at work when above 1).
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
#: Milliseconds.
LATENCY_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


@dataclass(frozen=True)
class AppMetrics:
    requests: Counter
    errors: Counter
    images: Counter
    batch_size: Histogram
    request_latency_ms: Histogram
    inference_latency_ms: Histogram


@cache
def app_metrics() -> AppMetrics:
    """The metric objects of this process (created once, inside the replica)."""
    return AppMetrics(
        requests=Counter("digits_requests", "HTTP requests answered, by endpoint and status",
                         tag_keys=("endpoint", "status")),
        errors=Counter("digits_errors", "Errors returned (whole requests and batch entries), "
                       "by endpoint and error code", tag_keys=("endpoint", "code")),
        images=Counter("digits_images", "Images recognised", tag_keys=("endpoint",)),
        batch_size=Histogram("digits_batch_size", "Images per model call",
                             boundaries=BATCH_SIZE_BOUNDARIES, tag_keys=("path",)),
        request_latency_ms=Histogram("digits_request_latency_ms",
                                     "Time in the replica per HTTP request, milliseconds",
                                     boundaries=LATENCY_BOUNDARIES, tag_keys=("endpoint",)),
        inference_latency_ms=Histogram("digits_inference_latency_ms",
                                       "Model forward time per batch, milliseconds",
                                       boundaries=LATENCY_BOUNDARIES, tag_keys=("path",)),
    )
