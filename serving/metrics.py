"""Application metrics of the serving replicas, exported through Ray's metrics pipeline.

:class:`MetricsMiddleware` counts and times every HTTP answer. Ray adds its ``ray_``
namespace and Serve's ``deployment``/``replica``/``application`` tags, so Prometheus sees
e.g. ``ray_digits_requests_total{endpoint="predict",status="200"}`` beside Serve's own ``ray_serve_*`` series.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import Any

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


def endpoint_of(path: str) -> str:
    """A bounded metric tag for a request path."""
    known = {"/v1/predict": "predict", "/v1/predict/batch": "predict_batch",
             "/v1/read": "read", "/v1/read/batch": "read_batch", "/v1/health": "health", "/v1/model": "model"}
    return known.get(path.rstrip("/") or "/", "other")


class MetricsMiddleware:
    """Counts every HTTP answer by endpoint and status and times it (pure ASGI, cheap)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint = endpoint_of(scope.get("path", ""))
            m = app_metrics()
            m.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
            m.request_latency_ms.observe((time.perf_counter() - start) * 1000,
                                         tags={"endpoint": endpoint})
