"""`make demo`: the product end to end on one machine, with nothing else to start.

1. starts a local Ray, an S3 server (MinIO if installed, else moto) and, when installed,
   Prometheus scraping the job;
2. puts the bundled default model (or one given with --checkpoint, or trained now with
   Ray Train with --train) in the bucket;
3. writes the 10,000 test digits as Parquet shards of form-like scans to the bucket;
4. runs the batch job over them and prints accuracy against the known labels, images/s
   and where outputs and report are;
5. deploys the Serve application and sends it a few requests;
6. shuts everything down, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack

import pyarrow.parquet as pq

from devstack import services
from recognizer import checkpoint, data, settings
from recognizer.errors import DigitsError
from recognizer.runtime import ray_session, storage
from recognizer.training.config import TrainConfig

BUCKET = "formdigits-demo"


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _model(args: argparse.Namespace) -> str:
    """A checkpoint in the bucket: the bundled model, the one given, or one trained now."""
    from recognizer import bundled

    target = f"s3://{BUCKET}/runs/digits"
    if not args.train:
        source = checkpoint.resolve(args.checkpoint or bundled.folder())
        print(f"using {'checkpoint ' + source if args.checkpoint else bundled.describe()} "
              "(--train to train one now)")
        uri = storage.join(target, "checkpoint_given")
        for name in checkpoint.files(checkpoint.read_meta(source)):
            storage.write_bytes(storage.join(uri, name), storage.read_bytes(storage.join(source, name)))
        return uri
    from recognizer.training.ray_train import run

    print(f"training '{settings.DEFAULT_MODEL}' for {args.epochs} epochs on {args.workers} Ray Train "
          f"workers; checkpoints go to {target}")
    # The demo reads single digits: no splitter of touching digits (only whole fields
    # use it).
    result = run(TrainConfig(data=args.data, epochs=args.epochs, workers=args.workers,
                             output=f"s3://{BUCKET}/runs", name="digits", splitter_epochs=0,
                             reader_epochs=0))
    return result.checkpoint


def _accuracy(output: str, scans: str) -> tuple[float, int]:
    """Share of job outputs whose label equals the true label of the input row."""
    truth: dict[int, int] = {}
    for uri in storage.list_files(scans, ".parquet"):
        fs, path = storage.resolve(uri)
        t = pq.read_table(path, filesystem=fs, columns=["id", "label"]).to_pydict()
        truth.update(zip(t["id"], t["label"], strict=True))
    right = total = 0
    for uri in storage.list_files(output, ".parquet"):
        fs, path = storage.resolve(uri)
        t = pq.read_table(path, filesystem=fs, columns=["id", "label"]).to_pydict()
        for i, label in zip(t["id"], t["label"], strict=True):
            total += 1
            right += label is not None and label == truth[i]
    return right / max(total, 1), total


def _serve(checkpoint_uri: str, scans: str) -> None:
    import requests
    from ray import serve

    from serving.config import ServeConfig
    from serving.deploy import deploy

    port = services.free_port()
    url = deploy(ServeConfig(checkpoint=checkpoint_uri), port=port)
    print(f"Serve application at {url}")
    try:
        fs, path = storage.resolve(storage.list_files(scans, ".parquet")[0])
        rows = pq.read_table(path, filesystem=fs).slice(0, 5).to_pydict()
        for image, label in zip(rows["image"], rows["label"], strict=True):
            r = requests.post(f"{url}/predict", data=image, headers={"Content-Type": "image/png"},
                              timeout=30)
            body = r.json()
            print(f"  POST /v1/predict (true {label}) -> {r.status_code} label {body.get('label')} "
                  f"confidence {body.get('confidence', 0):.3f}")
        r = requests.post(f"{url}/predict", data=b"not an image", headers={"Content-Type": "image/png"},
                          timeout=30)
        print(f"  POST /v1/predict (garbage) -> {r.status_code} {r.json()}")
    finally:
        serve.shutdown()


def _job(ckpt: str, scans: str, output: str, metrics_port: int, prom) -> tuple[dict, float]:
    """Run the batch job over the scans; (its summary, accuracy against the true labels)."""
    from jobs.run import JobConfig, run_job

    summary = run_job(JobConfig(input=scans, output=output, checkpoint=ckpt, overwrite=True,
                                metrics_port=metrics_port, metrics_linger=3.0 if prom else 0.0))
    accuracy, rows = _accuracy(output, scans)
    print(f"{rows:,} digits recognised at {summary['images_per_second']:,.0f} images/s; "
          f"accuracy against the known labels {accuracy:.2%}")
    print(f"outputs: {output}/part-*.parquet   report: {output}/_job.json")
    if prom:
        seen = prom.query("max_over_time(digits_job_images_per_second[5m])")
        if seen:
            print(f"Prometheus saw up to {float(seen[0]['value'][1]):,.0f} images/s "
                  f"(digits_job_images_per_second)")
    local = os.path.abspath("demo-output")
    os.makedirs(local, exist_ok=True)
    with open(os.path.join(local, "_job.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"a copy of the job report: {local}/_job.json")
    return summary, accuracy


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo's steps; 0 when the job labelled every shard at over 90%."""
    import boto3

    from jobs.shards import make_shards

    started = time.time()
    if not args.data or args.data == "download":
        args.data = data.download_mnist(os.path.expanduser("~/.cache/formdigits"))
    with ExitStack() as stack:
        _step("local stack")
        s3 = stack.enter_context(services.s3_server())
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        print(f"S3 ({s3.kind}) at {s3.endpoint}, bucket {BUCKET}")
        stack.enter_context(ray_session.connected(num_cpus=os.cpu_count()))
        import ray

        print(f"Ray: {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
        metrics_port = services.free_port()
        prom = None
        if services.prometheus_binary():
            prom = stack.enter_context(services.prometheus_server([f"127.0.0.1:{metrics_port}"]))
            print(f"Prometheus at {prom.url}, scraping the job on :{metrics_port}")
        else:
            print("Prometheus not installed: skipping it (apt-get install prometheus)")

        _step("model")
        ckpt = _model(args)
        print(f"checkpoint: {ckpt}")

        _step("scans")
        scans, output = f"s3://{BUCKET}/scans", f"s3://{BUCKET}/labels"
        shards = make_shards(args.data, scans, rows_per_shard=args.rows_per_shard,
                             split="test", as_scans=True, limit=args.limit)
        print(f"wrote {len(shards)} shards of form-like scans to {scans}/")

        _step("batch job")
        summary, accuracy = _job(ckpt, scans, output, metrics_port, prom)

        _step("serving")
        _serve(ckpt, scans)

        _step("shutting down")
    print(f"done in {time.time() - started:.0f} s")
    ok = summary["shards"]["failed"] == 0 and accuracy > 0.9
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=settings.data_dir(),
                        help=f"MNIST folder (default ${settings.DATA_ENV}, else download)")
    parser.add_argument("--checkpoint", help="use this checkpoint instead of the bundled model")
    parser.add_argument("--train", action="store_true",
                        help="train a model with Ray Train now instead (see --epochs)")
    parser.add_argument("--epochs", type=int, default=8,
                        help="with --train: training epochs (8: about 99.2%% in a few minutes)")
    parser.add_argument("--workers", type=int, default=TrainConfig.workers,
                        help="with --train: Ray Train workers")
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, help="use only the first N test digits")
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except KeyboardInterrupt:
        print("\ninterrupted: everything was shut down", file=sys.stderr)
        return 130
    except DigitsError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
