"""The serving benchmark's client: a bounded number of POSTs at a fixed concurrency.

One aiohttp session, ``concurrency`` workers sending back to back, a request count and
a time cap per level (the loop always ends). The same client drives every application
measured, so its own CPU cost is the same for each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Level:
    """One measured level: what was sent, what came back, and every 200's latency."""

    requests: int
    statuses: dict[int, int]
    seconds: float
    latencies_s: np.ndarray

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def summary(self) -> dict:
        """Requests, statuses, req/s (of 200s) and p50/p99 latency in ms."""
        lat = self.latencies_s * 1000 if self.ok else np.array([np.nan])
        return {"requests": self.requests, "ok": self.ok, "statuses": self.statuses,
                "seconds": round(self.seconds, 2), "rps": round(self.ok / self.seconds, 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 1),
                "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def pooled(levels: list[Level]) -> dict:
    """One summary of several runs of the same level (req/s over their summed time,
    percentiles over all their latencies)."""
    return Level(sum(x.requests for x in levels),
                 {k: sum(x.statuses.get(k, 0) for x in levels)
                  for k in {k for x in levels for k in x.statuses}},
                 sum(x.seconds for x in levels),
                 np.concatenate([x.latencies_s for x in levels])).summary()


async def _drive(url: str, bodies: list[bytes], content_type: str, concurrency: int, total: int,
                 cap_s: float, method: str = "POST") -> Level:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + cap_s
    headers = {"Content-Type": content_type}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < total and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            async with session.request(method, url, data=body or None, headers=headers) as r:
                await r.read()
                status = r.status
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Level(sent, statuses, wall, np.array(latencies))


def drive(url: str, bodies: list[bytes], content_type: str, concurrency: int, total: int,
          cap_s: float, method: str = "POST") -> Level:
    """Send ``bodies`` in turn to ``url`` (``method``; a GET sends ``[b""]``) from
    ``concurrency`` workers until ``total`` requests are sent or ``cap_s`` seconds have
    passed."""
    return asyncio.run(_drive(url, bodies, content_type, concurrency, total, cap_s, method))
