"""Serving settings in one dataclass, and how they map onto Ray Serve deployment options.

The same settings come from the ``digits serve`` flags or from the ``args`` block of a
Serve config file (``serve deploy cluster/serve_config.yaml``), so both paths build the
identical application.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from recognizer.errors import ConfigError

#: Name of the Serve application (and the key ``serve status`` shows it under).
APP_NAME = "digits"
#: Name of the one deployment in the application.
DEPLOYMENT_NAME = "DigitRecognizer"
#: Where ``digits serve`` (and :func:`serving.deploy.deploy`) starts Serve's HTTP proxy.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass
class ServeConfig:
    """Everything that shapes the served application.

    ``checkpoint``, ``max_batch_size`` and ``batch_wait_ms`` travel in Serve's
    ``user_config``: changing only them redeploys in place (the replicas reload the
    model while serving) instead of restarting replicas.
    """

    checkpoint: str = ""
    #: Fixed replica count; ignored when autoscaling (min_replicas/max_replicas) is set.
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    #: Dynamic batching: most images run through the model at once, and how long the
    #: first request of a batch waits for company.
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0
    #: Requests one replica works on at once (must be >= max_batch_size for full batches).
    max_ongoing_requests: int = 64
    #: Requests waiting at each proxy/handle beyond that; more are answered 503 at once.
    max_queued_requests: int = 128
    #: Largest request body accepted, in bytes (a batch of images counts as one body).
    max_body_bytes: int = 8 * 1024 * 1024
    #: Most images in one batch request.
    max_batch_images: int = 1024
    #: Torch intra-op threads in each replica (0: leave torch's default).
    torch_threads: int = 1
    #: CPUs reserved per replica, and one GPU per replica when ``gpu``.
    num_cpus: float = 1.0
    gpu: bool = False
    #: Seconds a Retry-After header tells rejected (503) clients to wait.
    retry_after_s: float = 1.0

    def validate(self) -> ServeConfig:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        if not self.checkpoint:
            raise ConfigError("a checkpoint is required (--checkpoint PATH or s3:// URI)")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {self.replicas}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ConfigError("autoscaling needs both min_replicas and max_replicas")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas >= 1:
            raise ConfigError(f"autoscaling range {self.min_replicas}:{self.max_replicas} must be "
                              "MIN:MAX with 0 <= MIN <= MAX and MAX >= 1")
        if not 1 <= self.max_batch_size <= 4096:
            raise ConfigError(f"max_batch_size must be in 1..4096, got {self.max_batch_size}")
        if not 0 <= self.batch_wait_ms <= 10_000:
            raise ConfigError(f"batch_wait_ms must be in 0..10000, got {self.batch_wait_ms}")
        if self.max_ongoing_requests < 1:
            raise ConfigError(f"max_ongoing_requests must be >= 1, got {self.max_ongoing_requests}")
        if self.max_queued_requests < -1 or self.max_queued_requests == 0:
            raise ConfigError("max_queued_requests must be -1 (no limit) or >= 1, "
                              f"got {self.max_queued_requests}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0, got {self.torch_threads}")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None

    def user_config(self) -> dict:
        """The part Serve can change in place through ``reconfigure``."""
        return {"checkpoint": self.checkpoint, "max_batch_size": self.max_batch_size,
                "batch_wait_ms": self.batch_wait_ms}

    def replica_settings(self) -> dict:
        """Constructor arguments of each replica (changing them restarts replicas)."""
        return {"max_body_bytes": self.max_body_bytes, "max_batch_images": self.max_batch_images,
                "torch_threads": self.torch_threads, "use_gpu": self.gpu}

    def deployment_options(self) -> dict:
        """Keyword arguments for ``Deployment.options``."""
        opts: dict = {
            "name": DEPLOYMENT_NAME,
            "user_config": self.user_config(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": 1 if self.gpu else 0},
            # Replacements start before old replicas stop, so restarting rollouts
            # (new code or replica settings) keep serving throughout.
            "max_surge_percent": 100,
            "health_check_period_s": 5,
        }
        if self.autoscaling:
            opts["num_replicas"] = None
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "target_ongoing_requests": max(self.max_batch_size, 2),
            }
        else:
            opts["num_replicas"] = self.replicas
        return opts

    def to_args(self) -> dict:
        """Plain values, as in a Serve config file's ``args`` block."""
        return asdict(self)

    @classmethod
    def from_args(cls, args: dict | None) -> ServeConfig:
        """Build from an ``args`` dict; unknown keys are an error (typos must not pass)."""
        args = dict(args or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(f"unknown serving setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        cfg = cls(**args)
        for f in fields(cls):
            value = getattr(cfg, f.name)
            # Config files give strings for numbers sometimes ("5"); coerce where typed.
            kind = str(f.type).split(" ")[0]
            if isinstance(value, str) and kind in ("int", "float"):
                try:
                    setattr(cfg, f.name, int(value) if kind == "int" else float(value))
                except ValueError as exc:
                    raise ConfigError(f"{f.name} must be a number, got {value!r}") from exc
        return cfg.validate()


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` -> (min, max)."""
    try:
        lo, hi = (int(part) for part in text.split(":"))
    except ValueError as exc:
        raise ConfigError(f"--autoscale takes MIN:MAX (e.g. 1:4), got {text!r}") from exc
    return lo, hi
