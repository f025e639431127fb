"""What a training run is: :class:`TrainConfig` (the recipe and where the run lives, its
defaults the recommended recipe) and :class:`TrainResult`."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from recognizer import settings
from recognizer.errors import ConfigError
from recognizer.models import MODELS
from recognizer.reader.model import DEFAULT_READER, READERS
from recognizer.runtime import storage
from recognizer.training.augment import AugmentConfig
from recognizer.training.splitter import SplitterConfig

#: The TrainConfig fields that make the recipe, recorded in every checkpoint's meta.
RECIPE_KEYS = ("model", "epochs", "batch_size", "lr", "weight_decay", "label_smoothing",
               "ema_decay", "augment", "seed", "field_pieces", "form_share", "style_share",
               "calibration_fields", "splitter_examples", "splitter_epochs", "reader", "reader_epochs",
               "reader_fields", "reader_val_fields", "reader_batch_size", "reader_lr")

#: The settings of a fine-tuning run (``digits train --fields``), recorded in its meta.
FINE_TUNE_KEYS = ("fields", "start", "val_fields", "val_fraction", "fields_limit", "fine_tune_epochs",
                  "fine_tune_lr", "fine_tune_min_epoch", "synth_mix", "reader_batch_size", "seed")


@dataclass(frozen=True)
class Hyper:
    """The training loop's numbers for one task (recognizer.training.loop.Task): epochs,
    batch size (the whole world's), peak learning rate, weight decay, moving-average
    decay (0: none) and seed."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    ema_decay: float
    seed: int


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults are the recommended recipe."""

    data: str | None = None
    model: str = settings.DEFAULT_MODEL
    workers: int = 1
    use_gpu: bool = False
    epochs: int = 12
    batch_size: int = 128
    lr: float = 4e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    #: Decay of the exponential moving average of the weights that is evaluated and
    #: checkpointed (0 turns it off); it smooths out the noise of high learning rates.
    ema_decay: float = 0.995
    augment: bool = True
    output: str = "runs"
    name: str = "digits"
    seed: int = 0
    max_failures: int = 3
    num_to_keep: int = 2
    train_limit: int | None = None
    test_limit: int | None = None
    #: Fields synthesized from the training digits and cut by the segmenter; their pieces
    #: join the training data, the ones that are not one digit as an eleventh class
    #: (recognizer.training.field_pieces), so that field reading can tell cuts from
    #: digits. 0 trains a plain ten-digit classifier.
    field_pieces: int = 1000
    #: The share of those fields synthesized as real forms (recognizer.data.forms: lines,
    #: boxes, backgrounds, separators, underlines, masks), cut after form cleaning.
    form_share: float = 0.5
    #: Restyled copies of this share of the training 1s, 3s and 7s (recognizer.data.styles:
    #: the continental 1 with its flag, the flat-topped 3, the crossed or hooked 7) join
    #: the training digits.
    style_share: float = 0.5
    #: The splitter of touching digits (recognizer.training.splitter) trained with the
    #: model and saved in its checkpoints: marks synthesized from the training digits,
    #: and epochs. 0 epochs trains none; fields are then cut by geometry alone.
    splitter_examples: int = SplitterConfig.examples
    splitter_epochs: int = SplitterConfig.epochs
    #: Fields synthesized from the validation digits that the run's last checkpoint reads
    #: to calibrate its field confidences (recognizer.fields.calibrate); 0: raw ones.
    calibration_fields: int = 1600
    #: The learned field reader (recognizer.reader) trained after the digit model, through
    #: the same loop: its architecture, epochs, the form fields synthesized for it from
    #: the training digits (and, for validation and calibration, from the validation
    #: digits), batch size and peak learning rate. 0 epochs trains none: fields are then
    #: read by segmentation.
    reader: str = DEFAULT_READER
    reader_epochs: int = 2
    reader_fields: int = 30_000
    reader_val_fields: int = 2_000
    reader_batch_size: int = 64
    reader_lr: float = 3e-3
    #: Fine-tuning the learned reader on a user's labelled fields (``digits train --fields``)
    #: instead of training from the digits: the Parquet prefix of fields (``image``,
    #: ``text``), the checkpoint it starts from (None: the bundled model), its validation
    #: fields (a prefix; else ``val_fraction`` of the rows, chosen by a hash of each id),
    #: at most this many rows (None: all), epochs, peak learning rate, labelled fields per
    #: epoch at least (a small set is repeated), and synthesized fields mixed in per
    #: labelled one so that other forms are not forgotten.
    fields: str | None = None
    start: str | None = None
    val_fields: str | None = None
    val_fraction: float = 0.1
    fields_limit: int | None = None
    fine_tune_epochs: int = 6
    fine_tune_lr: float = 1e-3
    fine_tune_min_epoch: int = 2_000
    synth_mix: float = 1.0
    #: Torch threads of each Ray Train worker on CPUs; None: the cluster's CPUs shared
    #: out among the workers (one worker with every core of a small machine trains
    #: several times faster than two that all-reduce every step).
    threads_per_worker: int | None = None
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name in ("workers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < self.workers:
            raise ConfigError("batch_size must be at least the number of workers")
        for name in ("form_share", "style_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.calibration_fields < 0:
            raise ConfigError(f"calibration_fields must not be negative, got {self.calibration_fields}")
        if self.field_pieces < 0:
            raise ConfigError(f"field_pieces must not be negative, got {self.field_pieces}")
        if self.splitter_epochs < 0:
            raise ConfigError(f"splitter_epochs must not be negative, got {self.splitter_epochs}")
        if self.reader not in READERS:
            raise ConfigError(f"unknown reader {self.reader!r}; choose one of: {', '.join(READERS)}")
        if self.reader_epochs < 0:
            raise ConfigError(f"reader_epochs must not be negative, got {self.reader_epochs}")
        if self.reader_epochs and (self.reader_fields < self.reader_batch_size or self.reader_val_fields < 1
                                   or self.reader_batch_size < self.workers):
            raise ConfigError("a reader needs reader_fields of at least one batch (reader_batch_size, "
                              "itself at least the number of workers) and at least one validation "
                              f"field; got {self.reader_fields}, {self.reader_batch_size} and "
                              f"{self.reader_val_fields} (--reader-epochs 0 trains none)")
        if self.fields is not None:
            self._validate_fine_tune()
        if self.splitter_epochs and self.splitter_examples < 1:
            raise ConfigError("splitter_examples must be at least 1 when a splitter is trained "
                              f"(got {self.splitter_examples}; --splitter-epochs 0 trains none)")

    def _validate_fine_tune(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.fine_tune_epochs < 1:
            raise ConfigError(f"fine_tune_epochs must be at least 1, got {self.fine_tune_epochs}")
        if self.synth_mix < 0:
            raise ConfigError(f"synth_mix must not be negative, got {self.synth_mix}")
        if self.fields_limit is not None and self.fields_limit < 1:
            raise ConfigError(f"fields_limit must be at least 1, got {self.fields_limit}")

    @property
    def splitter_config(self) -> SplitterConfig:
        return SplitterConfig(examples=self.splitter_examples, epochs=self.splitter_epochs,
                              seed=self.seed)

    @property
    def reader_hyper(self) -> Hyper:
        """The loop's numbers for the reader."""
        return Hyper(self.reader_epochs, self.reader_batch_size, self.reader_lr, 1e-4, 0.999, self.seed)

    @property
    def fine_tune_hyper(self) -> Hyper:
        """The loop's numbers for fine-tuning the reader: a shorter moving average, for
        runs of a few hundred steps."""
        return Hyper(self.fine_tune_epochs, self.reader_batch_size, self.fine_tune_lr, 1e-4, 0.99, self.seed)

    def fine_tune_recipe(self) -> dict:
        """The settings a fine-tuning run may not change when it resumes."""
        return {k: getattr(self, k) for k in FINE_TUNE_KEYS}

    @property
    def reader_uri(self) -> str:
        """Where the reader's epochs write their checkpoints: ``reader/`` in the run."""
        return storage.join(self.run_uri, "reader")

    @property
    def classes(self) -> int:
        """10 digits, or 11 with the not-a-digit class when field pieces are learned."""
        return settings.DIGITS + 1 if self.field_pieces else settings.DIGITS

    @property
    def output_root(self) -> str:
        """Where runs live: an s3:// prefix as given, a local folder made absolute (Ray
        Train wants absolute paths, and a run must resume from any working directory)."""
        return self.output if storage.is_s3(self.output) else os.path.abspath(self.output)

    @property
    def run_uri(self) -> str:
        """The run's folder: its checkpoints are ``checkpoint_epochNNNN`` below it."""
        return storage.join(self.output_root, self.name)

    def recipe(self) -> dict:
        """The settings that make the recipe (:data:`RECIPE_KEYS`)."""
        values = asdict(self)
        return {k: values[k] for k in RECIPE_KEYS}


@dataclass
class TrainResult:
    """The run's last checkpoint (folder or s3:// URI) and its final epoch's metrics."""

    checkpoint: str
    metrics: dict
