"""Connecting to Ray: the local machine, or the cluster named by ``RAY_ADDRESS``."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from recognizer.errors import DigitsError


class ClusterError(DigitsError):
    """Ray could not be reached or started."""


class _AuthEnabledNotice(logging.Filter):
    """Drops Ray's start-up notice that token authentication is on (the safe state, said
    on every local start); the warning that it is off still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "authentication is enabled" not in record.getMessage()


_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> None:
    """Join the Ray cluster at address (or ``$RAY_ADDRESS``), else start a local one.

    Does nothing when Ray is already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    kwargs: dict = {"address": address, "ignore_reinit_error": True}
    if quiet:
        kwargs["logging_level"] = logging.WARNING
        kwargs["configure_logging"] = True
        auth = logging.getLogger(_AUTH_LOGGER)
        if not any(isinstance(f, _AuthEnabledNotice) for f in auth.filters):
            auth.addFilter(_AuthEnabledNotice())
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = address or "a new local Ray instance"
        raise ClusterError(
            f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]} "
            "(check RAY_ADDRESS, or unset it to run locally)"
        ) from exc


@contextmanager
def connected(address: str | None = None, num_cpus: int | None = None,
              quiet: bool = True) -> Iterator[None]:
    """:func:`connect` for a ``with`` block: a Ray started here is shut down at its end;
    one that was already running (or a cluster) is left as it was."""
    import ray

    started = not ray.is_initialized()
    connect(address, num_cpus, quiet)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address.

    Ray itself retries an unreachable GCS for a long time before it gives up.
    """
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
            "(check RAY_ADDRESS, or unset it to run locally)"
        ) from exc
