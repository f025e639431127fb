"""Scale benchmark: a 1,000,000-scan job beside a 100,000-scan one, and 10,000 small shards.

* **100k and 1M**: ``run_job`` over 100 and 1,000 shards of 1,000 synthesized 80x80 PNG
  scans; the shards are server-side copies of 20 distinct ones. Images/s, and the peak
  memory of the driver and of every process of this Ray node (the S3 server, a separate
  moto process spilling objects to disk, is left out): it must not grow with the job.
* **10,000 small shards** of 100 rows (server-side copies of 100 distinct ones): the
  cost per shard beyond its images, and whether the driver's queue of shard tasks and
  its memory stay bounded.

    python -m bench.run --only scale [--checkpoint PATH]
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

BUCKET = "scale"
DISTINCT_BIG, BIG_ROWS = 20, 1000
DISTINCT_SMALL, SMALL_ROWS = 100, 100
SMALL_SHARDS = 10_000
JOBS = (("100k", 100), ("1m", 1000))


def _copy_all(s3, sources: list[str], prefix: str, count: int) -> None:
    """count server-side copies of the source keys (cycled) under prefix."""
    def copy(i: int) -> None:
        src = sources[i % len(sources)]
        s3.copy_object(Bucket=BUCKET, Key=f"{prefix}/c{i:05d}-{src.rsplit('/', 1)[-1]}",
                       CopySource={"Bucket": BUCKET, "Key": src})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(copy, range(count)))


def _measure(checkpoint: str, prefix: str, s3_pid: int | None) -> dict:
    from bench.jobs import _Sampler
    from jobs.run import JobConfig, run_job

    cfg = JobConfig(input=f"s3://{BUCKET}/{prefix}", output=f"s3://{BUCKET}/{prefix}-out",
                    checkpoint=checkpoint, progress=False)
    with _Sampler(interval=1.0, exclude=(s3_pid,) if s3_pid else ()) as mem:
        t = time.perf_counter()
        summary = run_job(cfg)
        seconds = time.perf_counter() - t
    images = summary["rows"]["processed_this_run"]
    return {"shards": summary["shards"]["total"], "failed_shards": summary["shards"]["failed"],
            "images": images, "seconds": round(seconds, 1),
            "images_per_s": round(images / seconds, 1),
            "peak_rss_mib": round(mem.peak / 2**20), "baseline_rss_mib": round(mem.baseline / 2**20),
            "driver_peak_rss_mib": round(mem.driver_peak / 2**20),
            "max_in_flight": summary["tasks"]["max_in_flight"],
            "peak_in_flight": summary["tasks"]["peak_in_flight"],
            "storage_retries": summary["storage"]["retries"]["total"]}


def run(checkpoint: str, data_dir: str) -> dict:
    """Make the shards, run the three jobs, return their numbers."""
    import ray

    from devstack import services
    from jobs.shards import make_shards
    from recognizer.runtime import ray_session

    load_before = os.getloadavg()
    with (services.s3_server(access_key="bench", secret_key="bench-secret",
                             separate_process=True) as server,
          ray_session.connected(num_cpus=os.cpu_count())):
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        pid = server.process.pid
        t = time.perf_counter()
        big = make_shards(data_dir, f"s3://{BUCKET}/distinct", BIG_ROWS, as_scans=True,
                          limit=DISTINCT_BIG * BIG_ROWS)
        small = make_shards(data_dir, f"s3://{BUCKET}/distinct-small", SMALL_ROWS, as_scans=True,
                            limit=DISTINCT_SMALL * SMALL_ROWS, seed=1)
        keys = [u.split("/", 3)[3] for u in big]
        for name, count in JOBS:
            _copy_all(s3, keys, name, count)
        _copy_all(s3, [u.split("/", 3)[3] for u in small], "small", SMALL_SHARDS)
        setup_s = time.perf_counter() - t
        results = {name: _measure(checkpoint, name, pid) for name, _ in JOBS}
        results["small"] = _measure(checkpoint, "small", pid)
        results.update(machine=f"{platform.machine()}, {os.cpu_count()} cores",
                       ray_cpus=int(ray.cluster_resources().get("CPU", 0)),
                       setup_seconds=round(setup_s, 1), s3=server.kind + " (separate process)",
                       load_before=[round(x, 2) for x in load_before],
                       load_after=[round(x, 2) for x in os.getloadavg()])
    big_rate = results["1m"]["images_per_s"]
    small = results["small"]
    # What a small shard costs beyond its images, at the big shards' rate per image.
    per_shard_s = (small["seconds"] - small["images"] / big_rate) / small["shards"]
    results["small_overhead_ms_per_shard"] = round(per_shard_s * 1000, 1)
    growth = results["1m"]["peak_rss_mib"] / results["100k"]["peak_rss_mib"]
    results["peak_growth_1m_vs_100k"] = round(growth, 3)
    return results


def _overhead_line(r: dict) -> str:
    overhead = r["small_overhead_ms_per_shard"]
    what = ("(the 10,000-shard job's time less its images at the 1M job's rate, per shard: a "
            "task's start, its listing entry, open, footer read and output PUT, and the driver's "
            "bookkeeping)")
    if overhead > 0:
        return f"Per-shard overhead of 100-row shards beyond their images: **{overhead} ms/shard** {what}."
    return (f"Per-shard overhead of 100-row shards: **not measurable in this run** ({overhead} ms "
            f"per shard {what}): the two jobs ran under different loads from other work on the "
            "machine, and the 1M job's rate per image was the lower one.")


def to_markdown(r: dict) -> str:
    """The scale section of bench/RESULTS.md."""
    rows = [("100,000 scans, 100 shards of 1,000", r["100k"]), ("1,000,000 scans, 1,000 shards of 1,000",
                                                               r["1m"]),
            ("1,000,000 scans, 10,000 shards of 100", r["small"])]
    lines = ["## Scale: a million scans, and ten thousand small shards", "",
             f"`run_job` on {r['machine']} (Ray with {r['ray_cpus']} CPUs), all default settings, "
             f"S3 {r['s3']}; the shards are server-side copies of {DISTINCT_BIG} distinct shards of "
             f"1,000 scans (and {DISTINCT_SMALL} of 100). Peak memory: the sum of the RSS of the "
             "driver and every process of this Ray node, sampled each second (the S3 server left out).",
             "", "| job | seconds | images/s | peak RSS, all (MiB) | driver peak RSS (MiB) "
             "| tasks in flight, peak / limit | failed shards | storage retries |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, j in rows:
        lines.append(f"| {label} | {j['seconds']:,} | {j['images_per_s']:,.0f} | {j['peak_rss_mib']:,} "
                     f"| {j['driver_peak_rss_mib']:,} | {j['peak_in_flight']} / {j['max_in_flight']} "
                     f"| {j['failed_shards']} | {j['storage_retries']} |")
    growth = r["peak_growth_1m_vs_100k"]
    lines += ["", f"Peak memory of the 1M job / the 100k job: **{growth:.2f}x** "
              f"({'does not grow' if growth < 1.1 else 'GROWS'} with the job's size: the driver keeps at "
              "most the limit of shard tasks in flight and one small result per finished shard; each "
              "task holds one row group of its shard).", "",
              _overhead_line(r), "",
              f"Load average (1/5/15 min) before: {', '.join(map(str, r['load_before']))}; after: "
              f"{', '.join(map(str, r['load_after']))}. Setup (shards, copies) {r['setup_seconds']} s."
              + (f" {r['note']}" if r.get("note") else ""), ""]
    return "\n".join(lines)
