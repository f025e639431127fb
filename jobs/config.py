"""What a batch job is: :class:`JobConfig`, whose defaults the ``digits job`` flags take."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from recognizer import settings
from recognizer.errors import ConfigError

#: Modes of a job: one digit per image, or a field of digits per image.
MODES = ("digit", "field")


@dataclass
class JobConfig:
    """Everything a job needs; the CLI fills it from flags."""

    input: str
    output: str
    #: A checkpoint folder, run or training output (local or s3://); "": the bundled model.
    checkpoint: str = ""
    overwrite: bool = False
    mode: str = "digit"  # or "field": whole rows of digits, output column `text`
    field_length: int | None = None  # digits per field, when known
    #: Field mode: rows whose confidence is below this are marked for review (never dropped).
    min_confidence: float | None = None
    #: Field mode: "segmenting" or "learned" (the checkpoint's learned field reader).
    field_reader: str = settings.DEFAULT_FIELD_READER
    batch_size: int = settings.PREDICT_BATCH_SIZE
    actors: int | None = None  # default: one per GPU, else 1
    actor_cpus: float = 0.0
    actor_threads: int = 1
    gpus_per_actor: float | None = None  # default: 1 when the cluster has GPUs
    task_cpus: float = 0.5  # CPUs Ray reserves per shard task; below 1, tasks overlap I/O waits
    max_in_flight: int | None = None  # default: QUEUE_PER_SLOT x the shard tasks that fit at once
    id_column: str = "id"
    image_column: str = "image"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_linger: float = 0.0  # keep /metrics up this long after the end (final scrape)
    job_id: str | None = None
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting (as its flag) that cannot work."""
        for name in ("batch_size", "actors", "max_in_flight", "actor_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not 0 < self.task_cpus <= 64:
            raise ConfigError(f"--task-cpus must be above 0 (and at most 64), got {self.task_cpus}")
        if self.actor_cpus < 0:
            raise ConfigError(f"--actor-cpus must not be negative, got {self.actor_cpus}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be 'digit' or 'field', got {self.mode!r}")
        if self.field_length is not None and (self.mode != "field" or self.field_length < 1):
            raise ConfigError("--field-length needs --mode field and must be at least 1")
        if self.field_reader not in settings.FIELD_READERS:
            raise ConfigError(f"--field-reader must be one of {', '.join(settings.FIELD_READERS)}, "
                              f"got {self.field_reader!r}")
        if self.min_confidence is not None and (self.mode != "field"
                                                or not 0 <= self.min_confidence <= 1):
            raise ConfigError("--min-confidence needs --mode field and must be between 0 and 1, "
                              f"got {self.min_confidence}")
        inp, out = self.input.rstrip("/") + "/", self.output.rstrip("/") + "/"
        if inp == out:
            raise ConfigError("--output must differ from --input: outputs would be read as inputs")
        if out.startswith(inp) or inp.startswith(out):
            # Shards are found at any depth: one prefix inside the other would mix them up.
            raise ConfigError(f"--output {self.output} and --input {self.input} must not lie one "
                              "inside the other: shards are read from every level below --input")


def defaults() -> dict:
    """Every :class:`JobConfig` field that has a default, with it."""
    return {f.name: f.default for f in fields(JobConfig) if f.default is not MISSING}
