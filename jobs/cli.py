"""``digits job run|submit|status|logs`` and ``digits shards make``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from jobs.config import MODES, JobConfig, defaults
from recognizer import settings
from recognizer.checkpoint import CHECKPOINT_HELP
from recognizer.runtime import storage

#: JobConfig's defaults: the flags' defaults.
_D = defaults()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``job`` and ``shards`` commands to the root ``digits`` parser."""
    job = sub.add_parser("job", help="batch jobs: Parquet shards of images in, labels out",
                         description="Label every image in a prefix of Parquet shards on S3 with "
                                     "Ray; one output shard per input shard plus _job.json.")
    jsub = job.add_subparsers(dest="job_command", metavar="ACTION", required=True)

    run = jsub.add_parser("run", help="run a job on the current Ray (local or $RAY_ADDRESS)",
                          description="Run a job here. Rerunning skips shards already done; "
                                      "exit status 0 only when every shard succeeded.")
    _add_job_flags(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)

    sb = jsub.add_parser("submit", help="send a job to a Ray cluster (Ray Jobs API)",
                         description="Submit `digits job run ...` to a cluster. AWS_* variables "
                                     "are forwarded in the job's runtime_env, never printed.")
    _add_job_flags(sb)
    sb.add_argument("--address", help="Ray dashboard address, e.g. http://HEAD:8265 "
                                      "(default: $RAY_ADDRESS)")
    sb.add_argument("--submission-id", help="job id to use (default: digits-RANDOM)")
    sb.add_argument("--follow", action="store_true", help="print the job's logs until it ends")
    sb.set_defaults(func=_submit)

    st = jsub.add_parser("status", help="status of a submitted job")
    st.add_argument("job_id", metavar="ID")
    st.add_argument("--address", help="Ray dashboard address (default: $RAY_ADDRESS)")
    st.set_defaults(func=_status)

    lg = jsub.add_parser("logs", help="logs of a submitted job")
    lg.add_argument("job_id", metavar="ID")
    lg.add_argument("--address", help="Ray dashboard address (default: $RAY_ADDRESS)")
    lg.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    lg.set_defaults(func=_logs)

    shards = sub.add_parser("shards", help="make Parquet shards of images (demos, benchmarks)")
    ssub = shards.add_subparsers(dest="shards_command", metavar="ACTION", required=True)
    mk = ssub.add_parser("make", help="write shards from MNIST IDX files or an image folder",
                         description="Columns: id (int64), image (encoded bytes), label (true "
                                     "digit, null when unknown). Image folders: a parent folder "
                                     "named 0-9 gives the label.")
    mk.add_argument("--data", help=f"MNIST IDX folder (local or s3://) or a folder of image files "
                                   f"(default: ${settings.DATA_ENV})")
    mk.add_argument("--output", required=True, help="s3:// prefix (or local folder) for the shards")
    mk.add_argument("--rows-per-shard", type=int, required=True)
    mk.add_argument("--split", default="test", choices=["train", "test"], help="IDX split")
    mk.add_argument("--as-scans", action="store_true",
                    help="render digits as dark ink on paper, 80x80 like form crops (IDX only)")
    mk.add_argument("--fields", type=int, metavar="LENGTH",
                    help="synthesize fields of LENGTH handwritten digits in a row (postal codes, "
                         "amounts) with their true strings in a `text` column (IDX only)")
    mk.add_argument("--limit", type=int, help="use only the first N images")
    mk.add_argument("--seed", type=int, default=0, help="seed of the scan rendering")
    mk.set_defaults(func=_make)


#: (flag, dest, kwargs) of the flags shared by run and submit; submit passes them on.
_JOB_FLAGS: list[tuple[str, dict]] = [
    ("--input", {"required": True, "help": "s3:// prefix (or folder) of *.parquet input shards"}),
    ("--output", {"required": True, "help": "s3:// prefix (or folder) for output shards"}),
    ("--checkpoint", {"default": _D["checkpoint"], "help": CHECKPOINT_HELP}),
    ("--overwrite", {"action": "store_true", "help": "redo shards whose output already exists"}),
    ("--mode", {"choices": list(MODES), "default": _D["mode"],
                "help": "digit: one digit per image (label column); field: a row of digits such as "
                        "a postal code (text column)"}),
    ("--field-length", {"type": int, "default": _D["field_length"],
                        "help": "with --mode field: the number of digits every field holds, "
                                "when known (postal codes: 5)"}),
    ("--min-confidence", {"type": float, "default": _D["min_confidence"], "metavar": "C",
                          "help": "with --mode field: mark the fields read with confidence below C "
                                  "(calibrated: about the share read right) for review in a `review` "
                                  "column; no row is ever dropped"}),
    ("--field-reader", {"choices": list(settings.FIELD_READERS), "default": _D["field_reader"],
                        "help": "with --mode field: segmenting (default) or learned, the "
                                "checkpoint's learned field reader (docs/reader.md)"}),
    ("--batch-size", {"type": int, "default": _D["batch_size"], "help": "images per inference batch"}),
    ("--actors", {"type": int, "default": _D["actors"],
                  "help": "model actors (default: one per GPU, else 1)"}),
    ("--actor-cpus", {"type": float, "default": _D["actor_cpus"],
                      "help": "CPUs reserved per model actor (default %(default)s: decoding tasks get "
                              "every core)"}),
    ("--actor-threads", {"type": int, "default": _D["actor_threads"],
                         "help": "torch threads per model actor"}),
    ("--task-cpus", {"type": float, "default": _D["task_cpus"],
                     "help": "CPUs reserved per shard task (default %(default)s: two tasks per core, so "
                             "one decodes while the other waits for S3 or the model)"}),
    ("--max-in-flight", {"type": int, "default": _D["max_in_flight"],
                         "help": "shard tasks queued at once (default: 8 x the tasks that fit on the "
                                 "cluster's CPUs)"}),
    ("--id-column", {"default": _D["id_column"]}),
    ("--image-column", {"default": _D["image_column"]}),
    ("--metrics-port", {"type": int, "default": _D["metrics_port"],
                        "help": "serve Prometheus /metrics on this port while running"}),
    ("--metrics-host", {"default": _D["metrics_host"], "help": "address for --metrics-port (0.0.0.0: all)"}),
    ("--metrics-linger", {"type": float, "default": _D["metrics_linger"],
                          "help": "keep /metrics up this many seconds after the job (final scrape)"}),
    ("--job-id", {"default": _D["job_id"],
                  "help": "id recorded in _job.json (default: the Ray job id, else random)"}),
]


def _add_job_flags(p: argparse.ArgumentParser) -> None:
    for flag, kwargs in _JOB_FLAGS:
        p.add_argument(flag, **kwargs)
    p.add_argument("--workers", dest="actors", type=int, help=argparse.SUPPRESS)


def _run_argv(args: argparse.Namespace) -> list[str]:
    """The flags of `digits job run` that reproduce args (for submit)."""
    argv: list[str] = []
    for flag, kwargs in _JOB_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if kwargs.get("action") == "store_true":
            argv += [flag] if value else []
        elif value is not None and value != kwargs.get("default"):
            argv += [flag, str(value)]
    return argv + ["--no-progress"]


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The :class:`JobConfig` the ``job run`` (or ``submit``) flags describe."""
    return JobConfig(input=args.input, output=args.output, checkpoint=args.checkpoint,
                     overwrite=args.overwrite, mode=args.mode, field_length=args.field_length,
                     min_confidence=args.min_confidence, field_reader=args.field_reader,
                     batch_size=args.batch_size,
                     actors=args.actors,
                     actor_cpus=args.actor_cpus, actor_threads=args.actor_threads,
                     task_cpus=args.task_cpus, max_in_flight=args.max_in_flight, id_column=args.id_column,
                     image_column=args.image_column, metrics_port=args.metrics_port,
                     metrics_host=args.metrics_host,
                     metrics_linger=args.metrics_linger, job_id=args.job_id,
                     progress=not getattr(args, "no_progress", False))


def check_checkpoint(uri: str) -> dict:
    """The checkpoint's meta, read before Ray is imported, let alone started: a bad
    ``--checkpoint`` is one line at once rather than an error after Ray's start-up."""
    from recognizer import checkpoint

    return checkpoint.identify(uri)


def _run(args: argparse.Namespace) -> int:
    from recognizer.bundled import default_checkpoint

    cfg = config_from_args(args)
    cfg.validate()
    cfg = replace(cfg, checkpoint=default_checkpoint(cfg.checkpoint))
    check_checkpoint(cfg.checkpoint)

    from jobs.run import run_job
    from recognizer.runtime import ray_session

    ray_session.connect()
    summary = run_job(cfg)
    s, r = summary["shards"], summary["rows"]
    print(f"job {summary['job_id']}: {s['ok']} shards done, {s['skipped']} already done, "
          f"{s['failed']} failed; {r['ok']:,} rows labelled, {r['error']:,} rows with errors; "
          f"{summary['images_per_second']:,.0f} images/s")
    for f in summary["failed_shards"]:
        print(f"  failed {f['shard']}: {f['reason']}", file=sys.stderr)
    print(f"summary: {args.output.rstrip('/')}/_job.json")
    return 0 if s["failed"] == 0 else 1


def _submit(args: argparse.Namespace) -> int:
    from jobs import submit

    cfg = config_from_args(args)
    cfg.validate()
    # The job reads the checkpoint on the cluster. An s3:// one is the same object from
    # here (the job gets this shell's AWS settings), so check it before sending; a local
    # path names the cluster's disk, which this machine may not share.
    if storage.is_s3(cfg.checkpoint):
        check_checkpoint(cfg.checkpoint)
    job_id = submit.submit(_run_argv(args), args.address, args.submission_id)
    print(job_id)
    print(f"follow with: digits job logs {job_id} --follow; status: digits job status {job_id}",
          file=sys.stderr)
    if args.follow:
        submit.logs(job_id, args.address, follow=True)
        state, _ = submit.status(job_id, args.address)
        return 0 if state == "SUCCEEDED" else 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from jobs import submit

    state, message = submit.status(args.job_id, args.address)
    print(json.dumps({"job_id": args.job_id, "status": state, "message": message}))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from jobs import submit

    submit.logs(args.job_id, args.address, follow=args.follow)
    return 0


def _make(args: argparse.Namespace) -> int:
    from jobs.errors import JobError
    from jobs.shards import make_shards

    data = settings.data_dir(args.data)
    if not data:
        raise JobError(f"name the images with --data or ${settings.DATA_ENV}")
    uris = make_shards(data, args.output, args.rows_per_shard, args.split, args.as_scans,
                       args.limit, args.seed, fields=args.fields)
    print(f"wrote {len(uris)} shards under {args.output}")
    return 0
