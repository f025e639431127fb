"""``digits serve``: deploy the recognizer as an HTTP service on Ray Serve."""

from __future__ import annotations

import argparse
import os
import sys

from recognizer.bundled import default_checkpoint
from recognizer.checkpoint import CHECKPOINT_HELP
from serving.config import APP_NAME, DEFAULT_HOST, DEFAULT_PORT, ServeConfig, parse_autoscale


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to the root ``digits`` parser."""
    d = ServeConfig()
    p = sub.add_parser(
        "serve", help="serve the model over HTTP with Ray Serve (dynamic batching)",
        description="Deploy the recognizer on the current Ray (local, or the cluster named by "
                    "RAY_ADDRESS) and print its URL. Runs until Ctrl-C unless --detach. "
                    "Running it again with a new --checkpoint rolls the model out without "
                    "dropping requests.")
    p.add_argument("--checkpoint", default=ServeConfig.checkpoint, help=CHECKPOINT_HELP)
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=d.replicas, help="fixed number of replicas")
    scale.add_argument("--autoscale", metavar="MIN:MAX",
                       help="autoscale between MIN and MAX replicas on queue length")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="most single-image requests run through the model together")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long a request waits for others to fill its batch")
    p.add_argument("--max-ongoing-requests", type=int, default=d.max_ongoing_requests,
                   help="requests in progress per replica")
    p.add_argument("--max-queued-requests", type=int, default=d.max_queued_requests,
                   help="requests queued beyond that before answering 503 (-1: no limit)")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20,
                   help="largest request body in MiB (larger: 413)")
    p.add_argument("--torch-threads", type=int, default=d.torch_threads,
                   help="torch threads per replica (0: torch's default)")
    p.add_argument("--gpu", action="store_true", help="one GPU per replica")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="HTTP bind address (0.0.0.0 to accept outside connections)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port")
    p.add_argument("--name", default=APP_NAME, help="Serve application name")
    p.add_argument("--detach", action="store_true",
                   help="return after deploying, leaving the service running on Ray")
    p.set_defaults(func=_serve)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The validated :class:`ServeConfig` the flags describe."""
    lo = hi = None
    if args.autoscale:
        lo, hi = parse_autoscale(args.autoscale)
    return ServeConfig(
        checkpoint=default_checkpoint(args.checkpoint), replicas=args.replicas, min_replicas=lo,
        max_replicas=hi,
        max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
        max_ongoing_requests=max(args.max_ongoing_requests, args.max_batch_size),
        max_queued_requests=args.max_queued_requests,
        max_body_bytes=int(args.max_body_mb * 2**20), torch_threads=args.torch_threads,
        gpu=args.gpu,
    ).validate()


def _serve(args: argparse.Namespace) -> int:
    from recognizer.runtime import ray_session
    from serving.deploy import check_checkpoint, deploy, wait_forever
    from serving.proxy_errors import PROXY_ENV

    cfg = config_from_args(args)
    meta = check_checkpoint(cfg.checkpoint)
    # A Ray started here passes this environment to Serve's proxy (JSON proxy errors); a
    # cluster's nodes must carry it themselves (cluster/k8s/rayservice.yaml).
    for key, value in PROXY_ENV.items():
        os.environ.setdefault(key, value)
    ray_session.connect()
    url = deploy(cfg, host=args.host, port=args.port, app_name=args.name)
    acc = meta.get("accuracy")
    print(f"serving {meta['model']} model"
          f"{f' (accuracy {acc:.2%})' if isinstance(acc, float) else ''} at {url}", flush=True)
    print(f"  try: curl -s -H 'Content-Type: image/png' --data-binary @digit.png {url}/predict",
          flush=True)
    if args.detach:
        print(f"detached; stop it with `serve delete {args.name}`")
        if not os.environ.get("RAY_ADDRESS"):
            print("note: without RAY_ADDRESS the service lives only as long as the Ray instance "
                  "it was deployed on; for a lasting local service run `ray start --head` first",
                  file=sys.stderr)
        return 0
    print("press Ctrl-C to stop", flush=True)
    wait_forever(args.name)
    return 0
