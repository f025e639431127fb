"""CPU time per request of each process that serves it: the replicas, Serve's HTTP
proxy and the benchmark's client.

On a shared machine throughput swings with the neighbours' load; the CPU time a
process spends per request swings far less, so it is what tells where an
application's cost over the engine's goes.
"""

from __future__ import annotations

import psutil


def serve_processes(apps: dict[str, str]) -> dict[str, psutil.Process]:
    """This Ray's Serve HTTP proxy (``proxy``) and, per key of ``apps``, the one replica
    of that Serve application."""
    # No public API gives an actor's pid; the GCS actor table (a debugging API) does.
    from ray._private import state

    found: dict[str, psutil.Process] = {}
    for actor in state.actors(actor_state_name="ALIVE").values():
        name = actor["ActorClassName"]
        if name == "ProxyActor":
            found["proxy"] = psutil.Process(actor["Pid"])
        for key, app in apps.items():
            if name.startswith(f"ServeReplica:{app}:"):
                found[key] = psutil.Process(actor["Pid"])
    missing = sorted({"proxy", *apps} - set(found))
    if missing:
        raise RuntimeError(f"no live Serve process for {', '.join(missing)}")
    return found


class CpuMeter:
    """Reads the CPU seconds (user + system, all threads) of named processes, and of
    this one as ``client``."""

    def __init__(self, processes: dict[str, psutil.Process]):
        self.processes = {**processes, "client": psutil.Process()}

    def read(self) -> dict[str, float]:
        out = {}
        for key, proc in self.processes.items():
            t = proc.cpu_times()
            out[key] = t.user + t.system
        return out


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int,
                   keys: tuple[str, ...]) -> dict[str, float]:
    """Milliseconds of CPU per request of each of ``keys`` between two readings."""
    return {k: round(1000 * (after[k] - before[k]) / max(requests, 1), 2) for k in keys}
