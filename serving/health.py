"""What ``/v1/health`` says: this replica's model, and the deployment's state as Serve's
controller sees it, so that a replica answering beside a dead or restarting one does not
report all is well."""

from __future__ import annotations

import asyncio
import collections
import time

#: Seconds a controller answer is reused: health checks may come many times a second.
CACHE_S = 1.0

_cache: dict = {"at": float("-inf"), "state": None, "refresh": None}


def deployment_state() -> dict:
    """``{"deployment": STATUS, "replicas": {STATE: count}}`` of the deployment this replica
    belongs to (``HEALTHY``, ``UPDATING``, ``UNHEALTHY``...; ``RUNNING``, ``STARTING``...),
    or ``{"deployment": "UNKNOWN", "replicas": {}}`` when the controller cannot be asked.
    Blocking (a call to the controller): run it off the event loop."""
    now = time.monotonic()
    if now - _cache["at"] < CACHE_S and _cache["state"] is not None:
        return _cache["state"]
    try:
        from ray import serve
        from ray.serve.context import _get_global_client

        ctx = serve.get_replica_context()
        # The controller's details as a plain dict: serve.status() builds pydantic models of
        # every application from the same details, 9.7 ms of this replica's CPU under the
        # GIL against 0.7 (docs/serving.md), stalling the requests beside it.
        details = _get_global_client().get_serve_details()
        d = details["applications"][ctx.app_name]["deployments"][ctx.deployment]
        replicas = collections.Counter(_name(r["state"]) for r in d["replicas"])
        state = {"deployment": _name(d["status"]), "replicas": dict(replicas)}
    except Exception:  # noqa: BLE001 - health must answer even when the controller does not
        state = {"deployment": "UNKNOWN", "replicas": {}}
    _cache.update(at=now, state=state)
    return state


def _name(value) -> str:
    """An enum member's value (``HEALTHY``, ``RUNNING``), or the text as it is."""
    return str(getattr(value, "value", value))


async def current_state() -> dict:
    """:func:`deployment_state` without making a health check wait on the controller: the
    last answer, refreshed in the background once it is ``CACHE_S`` old (only the
    replica's first health check waits for one)."""
    if _cache["state"] is None:
        return await asyncio.to_thread(deployment_state)
    refresh = _cache["refresh"]
    if time.monotonic() - _cache["at"] >= CACHE_S and (refresh is None or refresh.done()):
        # The task is kept so that it is not collected before it ends.
        _cache["refresh"] = asyncio.get_running_loop().create_task(asyncio.to_thread(deployment_state))
    return _cache["state"]


def summary(model_version: str, state: dict) -> dict:
    """The health answer: ``status`` is ``ok`` only when the deployment is healthy and every
    replica of it is running, else ``degraded`` (this replica still answers)."""
    replicas = state["replicas"]
    healthy = state["deployment"] == "HEALTHY" and set(replicas) <= {"RUNNING"}
    return {"status": "ok" if healthy else "degraded", "model_version": model_version, **state}
