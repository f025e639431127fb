"""Deploying the application on the current Ray (local or ``$RAY_ADDRESS``)."""

from __future__ import annotations

import time

from recognizer import checkpoint
from recognizer.errors import DigitsError
from serving.config import APP_NAME, DEFAULT_HOST, DEFAULT_PORT, ServeConfig

#: No request waits longer than this at the proxy (e.g. for a replacement replica when
#: the only one died); it is then answered 504 with a JSON error (serving.proxy_errors).
REQUEST_TIMEOUT_S = 60.0


class DeployError(DigitsError):
    """Serve could not start or the application did not become healthy."""


def check_checkpoint(uri: str) -> dict:
    """Fail fast, before any replica starts, when the checkpoint cannot be used."""
    return checkpoint.read_meta(checkpoint.resolve(uri))


def deploy(cfg: ServeConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           app_name: str = APP_NAME) -> str:
    """Start Serve's HTTP proxy on host:port (if Serve is not running yet) and deploy.

    Deploying again with the same app name is a rolling update: a new checkpoint (or
    batching setting) is loaded by the running replicas without dropping requests.
    Returns the service URL.
    """
    from ray import serve

    from serving.app import build

    cfg.validate()
    try:
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": REQUEST_TIMEOUT_S})
        serve.run(build(cfg), name=app_name, route_prefix="/", blocking=False)
    except RuntimeError as exc:
        raise DeployError(f"deploying {app_name!r} failed: {str(exc).splitlines()[-1]}") from exc
    host, port = _actual_address(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/v1"


def _actual_address(host: str, port: int) -> tuple[str, int]:
    # A Serve already running keeps its HTTP options (Serve logs a warning); report the
    # address it really listens on. Serve has no public getter for it.
    try:
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config
        return http.host or host, http.port
    except Exception:  # noqa: BLE001 - best effort: fall back to what was asked for
        return host, port


def wait_forever(app_name: str = APP_NAME) -> None:
    """Block until Ctrl-C, then delete the application (leaving Serve for others)."""
    from ray import serve

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the application ...", flush=True)
        serve.delete(app_name)
        raise
