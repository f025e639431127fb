"""Serving benchmark: the digits application measured against its engine.

Two applications run side by side on one Serve HTTP proxy: the digits application
(``ServeConfig`` defaults, one replica) and a no-op FastAPI ingress with the same HTTP
shape and deployment options (:mod:`bench.noop_app`). One aiohttp client drives each in
turn at concurrency 1, 16 and 64 (one PNG of an MNIST test digit per ``POST
/v1/predict``), in ``ROUNDS`` interleaved rounds so that the machine's load drifts over
both alike. The app/no-op ratios of req/s and p99 at 16 and 64 say what the
application's own work per request (decoding, preprocessing, batching, the model,
JSON) costs on top of Ray Serve's; on 2 shared cores, Serve itself is the ceiling.

``POST /v1/predict/batch`` with 32 images per request is measured in images/s against
the model alone and against the library's own path in this process (decode,
preprocess, model).

    python -m bench.serving --checkpoint PATH [--data DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import platform
import time

import numpy as np

from bench.http_load import Level, drive, pooled
from bench.serve_cpu import CpuMeter, per_request_ms, serve_processes
from devstack import services

CONCURRENCY = (1, 16, 64)
#: Requests per concurrency level and round, and the wall-clock cap per level (seconds).
REQUESTS = {1: 300, 16: 1500, 64: 3000}
TIME_CAP_S = 25.0
WARMUP = 200
#: Interleaved rounds of every level on both applications.
ROUNDS = 2
#: The levels the targets are checked at, and the targets: app/no-op ratios.
COMPARED = (16, 64)
TARGETS = {"rps_ratio_min": 0.95, "p99_ratio_max": 1.1}
#: The batch endpoint: images per request, concurrent clients, requests.
BATCH_IMAGES, BATCH_CONCURRENCY, BATCH_REQUESTS = 32, 4, 200
#: The field route: fields per run, concurrent clients, the reader; the other routes'
#: requests at concurrency 16, and their p99 target against the no-op's same route.
READ_FIELDS, READ_CONCURRENCY, READ_REQUESTS, READER = 64, 16, 600, "learned"
#: The batch field route: fields per request, concurrent clients, requests.
READ_BATCH_FIELDS, READ_BATCH_CONCURRENCY, READ_BATCH_REQUESTS = 32, 4, 100
ROUTE_REQUESTS, ROUTE_P99_MAX = 1000, 1.2
#: The field route's target: served fields/s against read_fields in one process.
READ_RATIO_MIN = 0.8
APP, NOOP = "digits-bench", "noop-bench"
TARGET_NAMES = ("app", "noop")


def _pngs(data_dir: str, n: int = 256) -> list[bytes]:
    from PIL import Image

    from recognizer import data

    images, _, _ = data.load_idx_raw(data_dir, "test")
    out = []
    for arr in images[:n]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _field_pngs(data_dir: str, n: int = READ_FIELDS) -> list[bytes]:
    """PNGs of synthesized form fields (recognizer.data.forms) of MNIST test digits."""
    from recognizer import data
    from recognizer.data.forms import make_form_fields
    from recognizer.data.synth import encode

    images, labels, _ = data.load_idx_raw(data_dir, "test")
    return [encode(f.image) for f in make_form_fields(images, labels, n, np.random.default_rng(5))]


def _batch_bodies(pngs: list[bytes], size: int = BATCH_IMAGES) -> list[bytes]:
    """JSON bodies of ``size`` base64 PNGs each, as clients send them."""
    groups = [pngs[i:i + size] for i in range(0, len(pngs) - size + 1, size)]
    return [json.dumps({"images": [base64.b64encode(p).decode() for p in g]}).encode()
            for g in groups]


def _deploy(checkpoint: str) -> dict[str, str]:
    """Deploy both applications on one proxy; their ``/v1`` base URLs."""
    from ray import serve

    from bench import noop_app
    from serving.config import ServeConfig
    from serving.deploy import deploy

    cfg = ServeConfig(checkpoint=checkpoint)
    app = deploy(cfg, port=services.free_port(), app_name=APP)
    serve.run(noop_app.build(cfg), name=NOOP, route_prefix="/noop", blocking=False)
    origin = app.removesuffix("/v1")
    return {"app": app, "noop": f"{origin}/noop/v1"}


def _metered(meter: CpuMeter, target: str, run) -> tuple[Level, dict[str, float]]:
    """Run one level; it and the CPU ms per answered request of the target's replica,
    the proxy and the client."""
    before = meter.read()
    level = run()
    cpu = per_request_ms(before, meter.read(), level.ok, (target, "proxy", "client"))
    return level, {("replica" if k == target else k): v for k, v in cpu.items()}


def measure_single(urls: dict[str, str], bodies: list[bytes], meter: CpuMeter
                   ) -> tuple[list[dict], dict]:
    """Every level on both applications, ``ROUNDS`` times interleaved; the rows, and
    per application and level the pooled summary of its rounds."""
    from ray import serve

    stats = serve.get_app_handle(APP).stats
    for target in TARGET_NAMES:
        drive(urls[target] + "/predict", bodies, "image/png", 16, WARMUP, TIME_CAP_S)
    rows, levels = [], {}
    for rnd in range(1, ROUNDS + 1):
        for c in CONCURRENCY:
            for target in TARGET_NAMES:
                before = stats.remote().result(timeout_s=30)
                level, cpu = _metered(meter, target, lambda t=target, c=c: drive(
                    urls[t] + "/predict", bodies, "image/png", c, REQUESTS[c], TIME_CAP_S))
                after = stats.remote().result(timeout_s=30)
                batches = after["batches"] - before["batches"]
                row = {"app": target, "concurrency": c, "round": rnd, **level.summary(),
                       "cpu_ms_per_request": cpu,
                       "mean_batch": round((after["batched_requests"] - before["batched_requests"])
                                           / batches, 1) if batches else None}
                rows.append(row)
                levels.setdefault(f"{target}@{c}", []).append(level)
                print(f"  round {rnd} {target:4s} c={c:3d}: {row['rps']:7.1f} req/s  "
                      f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                      f"mean batch {row['mean_batch']}  CPU ms/request {cpu}  "
                      f"statuses {row['statuses']}", flush=True)
    summaries = {key: pooled(runs) for key, runs in levels.items()}
    for key, summary in summaries.items():
        mine = [r for r in rows if f"{r['app']}@{r['concurrency']}" == key]
        summary["cpu_ms_per_request"] = {
            proc: round(sum(r["cpu_ms_per_request"][proc] * r["ok"] for r in mine)
                        / max(sum(r["ok"] for r in mine), 1), 2)
            for proc in ("replica", "proxy", "client")}
    return rows, summaries


def ratios(rows: list[dict], pooled_levels: dict) -> dict:
    """App/no-op ratios of req/s and p99 at each compared level: pooled over the
    rounds, and per round (their spread shows the noise)."""
    out = {}
    for c in COMPARED:
        app, noop = pooled_levels[f"app@{c}"], pooled_levels[f"noop@{c}"]
        per_round = []
        for rnd in range(1, ROUNDS + 1):
            a, n = ({r["app"]: r for r in rows if r["concurrency"] == c and r["round"] == rnd}[t]
                    for t in TARGET_NAMES)
            per_round.append({"rps": round(a["rps"] / n["rps"], 3),
                              "p99": round(a["p99_ms"] / n["p99_ms"], 3)})
        out[str(c)] = {"rps": round(app["rps"] / noop["rps"], 3),
                       "p99": round(app["p99_ms"] / noop["p99_ms"], 3), "per_round": per_round}
    return out


def _measure_route(urls: dict[str, str], path: str, bodies: list[bytes], media: str, per_request: int,
                   concurrency: int, requests: int, warmup: int, unit: str, meter: CpuMeter) -> dict:
    """POSTs of ``bodies`` (``media``, ``per_request`` items each) to ``path`` on both
    apps, after ``warmup`` requests; each app's summary gains ``UNIT_per_s``."""
    out = {}
    for target in TARGET_NAMES:
        url = urls[target] + path
        drive(url, bodies, media, concurrency, warmup, TIME_CAP_S)
        level, cpu = _metered(meter, target, lambda u=url: drive(
            u, bodies, media, concurrency, requests, TIME_CAP_S))
        s = {**level.summary(), "cpu_ms_per_request": cpu}
        s[f"{unit}_per_s"] = round(s["rps"] * per_request, 1)
        out[target] = s
        print(f"  {path} {target:4s}: {s[f'{unit}_per_s']:7.1f} {unit}/s  p50 {s['p50_ms']} ms  "
              f"p99 {s['p99_ms']} ms  statuses {s['statuses']}", flush=True)
    return out


def measure_batch(urls: dict[str, str], pngs: list[bytes], meter: CpuMeter) -> dict:
    """``/v1/predict/batch`` with ``BATCH_IMAGES`` images per request, on both apps."""
    return _measure_route(urls, "/predict/batch", _batch_bodies(pngs), "application/json", BATCH_IMAGES,
                          BATCH_CONCURRENCY, BATCH_REQUESTS, 20, "images", meter)


def measure_read(urls: dict[str, str], fields: list[bytes], meter: CpuMeter) -> dict:
    """``POST /v1/read?reader=learned``, one field PNG per request, on both apps."""
    return _measure_route(urls, f"/read?reader={READER}", fields, "image/png", 1,
                          READ_CONCURRENCY, READ_REQUESTS, 50, "fields", meter)


def measure_read_batch(urls: dict[str, str], fields: list[bytes], meter: CpuMeter) -> dict:
    """``POST /v1/read/batch?reader=learned``, ``READ_BATCH_FIELDS`` field PNGs per
    request, on both apps."""
    bodies = _batch_bodies(fields, READ_BATCH_FIELDS)
    return _measure_route(urls, f"/read/batch?reader={READER}", bodies, "application/json", READ_BATCH_FIELDS,
                          READ_BATCH_CONCURRENCY, READ_BATCH_REQUESTS, 10, "fields", meter)


def measure_routes(urls: dict[str, str]) -> dict:
    """``GET /v1/health`` and ``/v1/model`` at concurrency 16 on both apps, and the
    app/no-op p99 ratio of each."""
    out = {}
    for route in ("health", "model"):
        levels = {t: drive(f"{urls[t]}/{route}", [b""], "application/json", 16, ROUTE_REQUESTS,
                           TIME_CAP_S, method="GET").summary() for t in TARGET_NAMES}
        ratio = round(levels["app"]["p99_ms"] / levels["noop"]["p99_ms"], 3)
        out[route] = {**levels, "p99_ratio": ratio}
        print(f"  GET /v1/{route}: app p99 {levels['app']['p99_ms']} ms, no-op "
              f"{levels['noop']['p99_ms']} ms ({ratio}x)", flush=True)
    return out


def _rate(fn, items: int, seconds: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return round(calls * items / (time.perf_counter() - start), 1)


def in_process(checkpoint: str, pngs: list[bytes], fields: list[bytes] | None = None,
               seconds: float = 2.0) -> dict:
    """Images/s in this process with one torch thread, as in a replica: the model alone
    at batch 1 and ``BATCH_IMAGES``, and the library's whole path (decode, preprocess,
    model) for ``BATCH_IMAGES`` PNGs; and ``read_fields`` over ``fields`` (fields/s)."""
    import torch

    import recognizer
    from recognizer.preprocess import preprocess_many

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = recognizer.load(checkpoint, device="cpu")
        rng = np.random.default_rng(0)
        out = {}
        for n in (1, BATCH_IMAGES):
            x = rng.random((n, 28, 28), dtype=np.float32)
            out[f"model_batch_{n}"] = _rate(lambda x=x: model.predict_tensors(x), n, seconds)
        batch = pngs[:BATCH_IMAGES]
        out[f"library_batch_{BATCH_IMAGES}"] = _rate(
            lambda: model.predict_tensors(preprocess_many(batch)[0]), BATCH_IMAGES, seconds)
        if fields:
            from recognizer.fields import read_fields

            out["read_fields_per_s"] = _rate(lambda: read_fields(model, fields, reader=READER),
                                             len(fields), seconds)
        return out
    finally:
        torch.set_num_threads(threads)


def _start_ray() -> bool:
    """Start a local Ray for the benchmark (True) or join the one there is (False)."""
    import ray

    from recognizer.runtime import ray_session

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        ray_session.connect()
        return False
    # Ray starts worker processes at nice 15; the Serve proxy and replicas would then
    # lose the CPU to this very client (nice 0). Run them at the client's priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # address="local": never join a Ray someone else started on this machine.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    return True


def run(checkpoint: str, data_dir: str) -> dict:
    """The whole benchmark in one run; rows, pooled levels, ratios, batch and model."""
    load_before = os.getloadavg()  # other work on the machine skews every number below
    pngs, fields = _pngs(data_dir), _field_pngs(data_dir)
    alone = in_process(checkpoint, pngs, fields)
    started_ray = _start_ray()
    try:
        urls = _deploy(checkpoint)
        meter = CpuMeter(serve_processes({"app": APP, "noop": NOOP}))
        rows, pooled_levels = measure_single(urls, pngs, meter)
        batch = measure_batch(urls, pngs, meter)
        read = measure_read(urls, fields, meter)
        read_batch = measure_read_batch(urls, fields, meter)
        routes = measure_routes(urls)
    finally:
        from ray import serve

        for name in (APP, NOOP):
            serve.delete(name)
        if started_ray:
            import ray

            serve.shutdown()
            ray.shutdown()
    return {
        "rows": rows, "pooled": pooled_levels, "ratios": ratios(rows, pooled_levels),
        "targets": {**TARGETS, "batch_vs_library_min": 0.8, "read_vs_in_process_min": READ_RATIO_MIN,
                    "route_p99_ratio_max": ROUTE_P99_MAX},
        "batch": batch, "read": read, "read_batch": read_batch, "routes": routes,
        "in_process_images_per_s": alone,
        "requests_per_level": REQUESTS, "rounds": ROUNDS,
        "batch_request": {"images": BATCH_IMAGES, "concurrency": BATCH_CONCURRENCY},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
    }


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _ratio_lines(results: dict) -> list[str]:
    t = results["targets"]
    lines = ["| concurrency | app/no-op req/s | per round | app/no-op p99 | per round | targets |",
             "| ---: | ---: | --- | ---: | --- | --- |"]
    for c, r in results["ratios"].items():
        rps_ok, p99_ok = r["rps"] >= t["rps_ratio_min"], r["p99"] <= t["p99_ratio_max"]
        rounds = {k: ", ".join(f"{x[k]:.2f}" for x in r["per_round"]) for k in ("rps", "p99")}
        lines.append(
            f"| {c} | **{r['rps']:.2f}x** | {rounds['rps']} | **{r['p99']:.2f}x** | {rounds['p99']} "
            f"| req/s >= {t['rps_ratio_min']}x: {_met(rps_ok)}; p99 <= {t['p99_ratio_max']}x: "
            f"{_met(p99_ok)} |")
    return lines


def _batch_lines(results: dict) -> list[str]:
    b, alone, n = results["batch"], results["in_process_images_per_s"], results["batch_request"]
    model = alone[f"model_batch_{n['images']}"]
    library = alone[f"library_batch_{n['images']}"]
    app = b["app"]["images_per_s"]
    return [
        f"`POST /v1/predict/batch`, {n['images']} PNGs per request (JSON base64), "
        f"{n['concurrency']} concurrent clients:",
        "",
        "| path | images/s | vs the model alone |",
        "| --- | ---: | ---: |",
        f"| the model alone (one torch thread, batch {n['images']}) | {model} | 1.00x |",
        f"| the library in one process (decode, preprocess, model) | {library} | "
        f"{library / model:.2f}x |",
        f"| HTTP, the digits application | {app} | {app / model:.2f}x |",
        f"| HTTP, the no-op application | {b['noop']['images_per_s']} | — |",
        "",
        f"Batch requests: app p50 {b['app']['p50_ms']} ms, p99 {b['app']['p99_ms']} ms; "
        f"no-op p50 {b['noop']['p50_ms']} ms, p99 {b['noop']['p99_ms']} ms. "
        f"The model alone at batch 1: {alone['model_batch_1']} images/s. CPU ms per batch request "
        f"(replica, proxy, client): app {_cpu(b['app'])}; no-op {_cpu(b['noop'])}.",
    ]


def _read_lines(results: dict) -> list[str]:
    r, alone = results["read"], results["in_process_images_per_s"]
    app, local = r["app"]["rps"], alone["read_fields_per_s"]
    ratio = app / local
    lines = [
        f"`POST /v1/read?reader={READER}`, one synthesized form field (PNG) per request, "
        f"{READ_CONCURRENCY} concurrent clients, and `POST /v1/read/batch?reader={READER}`, "
        f"{READ_BATCH_FIELDS} fields per request (JSON base64), {READ_BATCH_CONCURRENCY} concurrent "
        f"clients, against `read_fields(..., reader=\"{READER}\")` "
        f"over the same {READ_FIELDS} fields in one process (one torch thread, as a replica):",
        "",
        "| path | fields/s | vs in process | p99 ms | CPU ms/request: replica, proxy, client |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| in process | {local} | 1.00x | — | — |",
        f"| HTTP `/v1/read`, the digits application | {app} | {ratio:.2f}x | {r['app']['p99_ms']} | "
        f"{_cpu(r['app'])} |",
        f"| HTTP `/v1/read`, the no-op application | {r['noop']['rps']} | {r['noop']['rps'] / local:.2f}x | "
        f"{r['noop']['p99_ms']} | {_cpu(r['noop'])} |",
    ]
    rb = results.get("read_batch")
    batch_ratio = None
    if rb:
        batch_ratio = rb["app"]["fields_per_s"] / local
        lines += [
            f"| HTTP `/v1/read/batch`, the digits application | {rb['app']['fields_per_s']} | "
            f"{batch_ratio:.2f}x | {rb['app']['p99_ms']} | {_cpu(rb['app'])} |",
            f"| HTTP `/v1/read/batch`, the no-op application | {rb['noop']['fields_per_s']} | — | "
            f"{rb['noop']['p99_ms']} | {_cpu(rb['noop'])} |",
        ]
    lines += [
        "",
        f"Served/in-process, one field per request: **{ratio:.2f}x** (target >= {READ_RATIO_MIN}x: "
        f"{_met(ratio >= READ_RATIO_MIN)}); the no-op's own rate bounds it at "
        f"{r['noop']['rps'] / local:.2f}x.",
    ]
    if batch_ratio is not None:
        lines.append(f"Served/in-process, {READ_BATCH_FIELDS} fields per request: **{batch_ratio:.2f}x** "
                     f"(target >= {READ_RATIO_MIN}x: {_met(batch_ratio >= READ_RATIO_MIN)}).")
    lines += [
        "",
        "Other routes at concurrency 16, p99 against the no-op's same route "
        f"(target <= {ROUTE_P99_MAX}x):",
        "",
        "| route | app p99 ms | no-op p99 ms | ratio | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for route, x in results["routes"].items():
        lines.append(f"| GET /v1/{route} | {x['app']['p99_ms']} | {x['noop']['p99_ms']} | "
                     f"{x['p99_ratio']:.2f}x | {_met(x['p99_ratio'] <= ROUTE_P99_MAX)} |")
    return lines


def _cpu(summary: dict) -> str:
    c = summary["cpu_ms_per_request"]
    return f"{c['replica']}, {c['proxy']}, {c['client']}"


def to_markdown(results: dict) -> str:
    """The levels (pooled over rounds), the app/no-op ratios against their targets, and
    the batch endpoint against the model alone."""
    lines = [
        "### Serving (HTTP, loopback, one replica), measured against Ray Serve itself",
        "",
        f"Machine: {results['machine']}. Client: aiohttp on the same machine. `app`: the digits "
        "application with `ServeConfig`'s defaults; `noop`: a FastAPI ingress on Ray Serve with "
        "the same HTTP shape and deployment options that answers a fixed JSON "
        "(`bench/noop_app.py`). Each request: one PNG to `POST /v1/predict`. "
        f"{results['rounds']} interleaved rounds per level, pooled below.",
        "",
        "CPU ms per request: CPU time (user + system, all threads) of the application's replica, "
        "Serve's HTTP proxy and the client process, divided by the requests answered; unlike "
        "req/s it hardly moves with the neighbours' load.",
        "",
        "| app | concurrency | requests | req/s | p50 ms | p99 ms | CPU ms/request: replica | proxy "
        "| client | statuses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, r in results["pooled"].items():
        target, c = key.split("@")
        st = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        cpu = r["cpu_ms_per_request"]
        lines.append(f"| {target} | {c} | {r['requests']} | {r['rps']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {cpu['replica']} | {cpu['proxy']} | {cpu['client']} | {st} |")
    lines += ["", *_ratio_lines(results), "", *_batch_lines(results), "", *_read_lines(results), "",
              "- Load average (1/5/15 min) before the run: "
              f"{', '.join(f'{x:.1f}' for x in results['load_average_before'])}; after: "
              f"{', '.join(f'{x:.1f}' for x in results['load_average_after'])}.",
              "- Mean dynamic batch of the app, by round and level: "
              + ", ".join(f"c={r['concurrency']}: {r['mean_batch']}" for r in results["rows"]
                          if r["app"] == "app" and r["concurrency"] > 1) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from recognizer import settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=settings.data_dir(), help="MNIST IDX folder")
    args = p.parse_args()
    print(to_markdown(run(args.checkpoint, args.data)))


if __name__ == "__main__":
    main()
