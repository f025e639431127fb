"""A Serve replica killed under load, over real HTTP: requests in flight fail with a JSON
5xx (none hangs), Serve replaces the replica, later requests succeed, and /v1/health says
the deployment is degraded until the replacement runs."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import numpy as np
import pytest
import requests
from PIL import Image

from devstack.services import free_port
from serving.config import ServeConfig
from serving.deploy import deploy

APP = "digits-faults"
#: A request that takes this long counts as hung (far above any answer's time here).
HANG_S = 90


@pytest.fixture(scope="module")
def two_replicas(ray_cluster, trained_checkpoint):
    from ray import serve

    url = deploy(ServeConfig(checkpoint=trained_checkpoint, replicas=2, num_cpus=0.5, max_batch_size=8,
                             max_ongoing_requests=16, max_queued_requests=64), port=free_port(), app_name=APP)
    yield url
    serve.delete(APP)
    serve.shutdown()


def _png(mnist_test_raw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mnist_test_raw[0][0].astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _replicas(ray) -> list[dict]:
    return [a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{APP}#")]


async def _load(url: str, body: bytes, answers: list, stop: asyncio.Event, limit: int = 4000) -> None:
    timeout = aiohttp.ClientTimeout(total=HANG_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def client() -> None:
            while not stop.is_set() and len(answers) < limit:
                try:
                    async with session.post(f"{url}/predict", data=body,
                                            headers={"Content-Type": "image/png"}) as r:
                        answers.append((r.status, r.content_type, await r.read()))
                except (TimeoutError, aiohttp.ClientError) as exc:
                    answers.append(("exception", type(exc).__name__, b""))
        await asyncio.gather(*(client() for _ in range(8)))


async def _health_until(url: str, wanted, deadline: float) -> list[dict]:
    """Poll /v1/health until wanted(answer); every answer seen."""
    seen = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG_S)) as session:
        while time.time() < deadline:
            async with session.get(f"{url}/health") as r:
                seen.append({"http": r.status, **(await r.json())})
            if wanted(seen[-1]):
                return seen
            await asyncio.sleep(0.2)
    raise AssertionError(f"/v1/health never answered as wanted: {seen[-5:]}")


def test_a_replica_killed_under_load(two_replicas, ray_cluster, mnist_test_raw):
    url, ray, body = two_replicas, ray_cluster, _png(mnist_test_raw)
    health = requests.get(f"{url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["replicas"] == {"RUNNING": 2}, health
    before = {a["name"] for a in _replicas(ray)}
    assert len(before) == 2
    victim = sorted(before)[0]

    async def scenario() -> tuple[list, list]:
        answers: list = []
        stop = asyncio.Event()
        load = asyncio.create_task(_load(url, body, answers, stop))
        while len(answers) < 50:  # under load
            await asyncio.sleep(0.05)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = time.time() + 240
        seen = await _health_until(url, lambda h: h["status"] == "degraded", deadline)
        seen += await _health_until(url, lambda h: h["status"] == "ok", deadline)
        stop.set()
        await load
        return answers, seen

    answers, seen = asyncio.run(scenario())
    statuses = [a[0] for a in answers]
    assert "exception" not in statuses, [a for a in answers if a[0] == "exception"][:5]  # none hung
    failed = [a for a in answers if a[0] != 200]
    for status, kind, text in failed:  # in flight on the dead replica: a JSON 5xx
        assert 500 <= status < 600 and kind == "application/json", (status, kind, text[:200])
        assert b'"code"' in text
    assert statuses.count(200) > len(failed)
    # Health told the truth: degraded while the replacement started, then ok again.
    degraded = [h for h in seen if h["status"] == "degraded"]
    assert degraded and all(h["replicas"] != {"RUNNING": 2} or h["deployment"] != "HEALTHY"
                            for h in degraded)
    assert seen[-1]["replicas"] == {"RUNNING": 2} and seen[-1]["deployment"] == "HEALTHY"
    after = {a["name"] for a in _replicas(ray)}
    assert victim not in after and len(after) == 2  # replaced
    for _ in range(10):
        r = requests.post(f"{url}/predict", data=body, headers={"Content-Type": "image/png"}, timeout=30)
        assert r.status_code == 200 and "label" in r.json()
