"""`make bench`: run the benchmarks and write bench/RESULTS.md.

Each section's numbers are saved as bench/results/SECTION.json; RESULTS.md is rebuilt
from every saved section, so one section can be re-measured alone
(``python -m bench.run --only serving``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys

from recognizer import settings
from recognizer.runtime import ray_session

SECTIONS = {"training": "bench.training", "serving": "bench.serving", "jobs": "bench.jobs",
            "fields": "bench.fields", "forms": "bench.forms", "devsets": "bench.devsets",
            "fine_tune": "bench.fine_tune", "scale": "bench.scale"}
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
WORK_DIR = os.path.join(HERE, ".work")


def _checkpoint(explicit: str | None) -> str:
    if explicit:
        return explicit
    path = os.path.join(RESULTS_DIR, "training.json")
    if os.path.exists(path):
        with open(path) as f:
            ckpt = json.load(f)["default"]["checkpoint"]
        if os.path.exists(ckpt):
            return ckpt
    sys.exit("no trained checkpoint: run the training section first or pass --checkpoint")


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the machine so far, from /proc/stat (Linux); else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


#: /proc/cpuinfo flags of the vector units torch's CPU kernels use, widest first.
VECTOR_UNITS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))


def cpu_description() -> str | None:
    """The CPU's model, clock and widest vector unit, from /proc/cpuinfo (Linux): the same
    '2 cores' train and read at rates up to three times apart across hosts."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = next((name for flag, name in VECTOR_UNITS if flag in flags), "no AVX")
    mhz = fields.get("cpu MHz")
    clock = f", {float(mhz) / 1000:.1f} GHz" if mhz else ""
    return f"{fields.get('model name', 'unknown CPU')}{clock}, {vector}"


def _conditions(before: tuple[int, int] | None) -> dict:
    """When a section was measured, on which CPU, and how much CPU the hypervisor took
    meanwhile: on a shared VM, stolen time slows every number of the section, and it
    varies by the hour."""
    out = {"measured_at": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
           "cpu": cpu_description()}
    after = _cpu_ticks()
    if before and after and after[1] > before[1]:
        out["cpu_steal_percent"] = round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)
    return out


def _conditions_line(results: dict) -> str:
    c = results.get("conditions")
    if not c:
        return ""
    steal = c.get("cpu_steal_percent")
    stolen = "" if steal is None else (
        f"; CPU time taken by the hypervisor (steal) during the section: **{steal}%**"
        + (" — every figure above is slowed by it" if steal >= 5 else ""))
    cpu = f" on {c['cpu']}" if c.get("cpu") else ""
    return f"_Measured {c['measured_at']}{cpu}{stolen}._\n"


def _run_section(name: str, data_dir: str, checkpoint: str | None) -> dict:
    module = importlib.import_module(SECTIONS[name])
    if name == "training":
        ray_session.connect()
        return module.run_bench(data_dir, WORK_DIR)
    return module.run(_checkpoint(checkpoint), data_dir)


def write_markdown(path: str) -> None:
    parts = ["# Benchmark results", "",
             f"Measured with `make bench` on {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"Python {platform.python_version()}; updated "
             f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
             "Each section says what it measured.", ""]
    for name, module_name in SECTIONS.items():
        path_json = os.path.join(RESULTS_DIR, f"{name}.json")
        if not os.path.exists(path_json):
            continue
        with open(path_json) as f:
            results = json.load(f)
        module = importlib.import_module(module_name)
        parts.append(module.to_markdown(results))
        parts.append(_conditions_line(results))
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--only", help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--checkpoint", help="checkpoint for serving/jobs/fields "
                                             "(default: the training section's)")
    parser.add_argument("--data", help=f"MNIST folder (default ${settings.DATA_ENV})")
    args = parser.parse_args()
    data_dir = settings.data_dir(args.data)
    if not data_dir:
        sys.exit(f"set ${settings.DATA_ENV} or pass --data")
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    for name in chosen:
        try:
            importlib.import_module(SECTIONS[name])
        except ModuleNotFoundError:
            print(f"skipping {name}: bench module not present")
            continue
        print(f"== {name}", flush=True)
        ticks = _cpu_ticks()
        results = _run_section(name, data_dir, args.checkpoint)
        results["conditions"] = _conditions(ticks)
        with open(os.path.join(RESULTS_DIR, f"{name}.json"), "w") as f:
            json.dump(results, f, indent=2)
    write_markdown(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
