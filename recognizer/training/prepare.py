"""What a run needs before its loop starts, the same for every way to train: the
training set (digits and the field pieces cut from them), the validation set, the
splitter of touching digits a resumed run already has, and a check that the run can be
resumed as asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recognizer import checkpoint, data, settings
from recognizer.errors import CheckpointError, ConfigError
from recognizer.training.checkpoints import RunInfo
from recognizer.training.config import TrainConfig
from recognizer.training.loop import LoopData, progress

#: Trains the run's splitter on its training digits: (weights, metrics).
SplitterTrainer = Callable[[np.ndarray, TrainConfig], tuple[bytes, dict]]


@dataclass
class RunInputs:
    """Everything the loop trains on and every checkpoint records."""

    data: LoopData
    info: RunInfo
    #: The splitter a resumed run already trained (else None: it is trained after the
    #: epochs, by recognizer.training.finish), and the digits to train one on.
    splitter: bytes | None
    train_digits: np.ndarray


def _limit(d: data.Digits, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return d.images, d.labels
    return d.images[:n], d.labels[:n]


def training_set(train_d: data.Digits, cfg: TrainConfig, progress: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(images, labels, restyled, pieces): the training digits, ``restyled`` copies of
    some of them (``cfg.style_share``), and with ``cfg.field_pieces`` the ``pieces`` cut
    from fields synthesized from them all (``cfg.classes`` classes in all)."""
    # Here, not at the top: Ray Train workers import this package, and have no use for
    # the segmenter (scipy) that field_pieces brings.
    from recognizer.data.styles import restyled_set
    from recognizer.data.synth_fields import as_digits_u8
    from recognizer.normalize import normalize_stack
    from recognizer.training import field_pieces

    x, y = _limit(train_d, cfg.train_limit)
    rng = np.random.default_rng(cfg.seed)
    raw = as_digits_u8(x)
    sx, sy = restyled_set(raw, y, cfg.style_share, rng)
    if len(sy):
        x, y = np.concatenate([x, normalize_stack(sx)[0]]), np.concatenate([y, sy])
        raw = np.concatenate([raw, sx])
    if not cfg.field_pieces:
        return x, y, len(sy), 0
    px, py = field_pieces.cut_pieces(raw, y, cfg.field_pieces, rng, form_share=cfg.form_share,
                                     progress=progress)
    return np.concatenate([x, px]), np.concatenate([y, py]), len(sy), len(py)


def train_splitter(images: np.ndarray, cfg: TrainConfig,
                   report: Callable[[str], None] | None = None) -> tuple[bytes, dict]:
    """Train the splitter of touching digits on marks synthesized from ``images`` (the
    training digits): its weights (for ``checkpoint.save``) and metrics."""
    from recognizer.predict import select_device
    from recognizer.splitter import state_bytes
    from recognizer.training.splitter import train

    net, metrics = train(images, cfg.splitter_config, select_device(cfg.use_gpu), False, report)
    return state_bytes(net), metrics


def _resumed_splitter(cfg: TrainConfig) -> tuple[bytes | None, dict | None]:
    """The splitter the run's checkpoints already hold when it resumes; (None, None)
    when it has none yet or the recipe trains none."""
    if not cfg.splitter_epochs:
        return None, None
    try:
        meta = checkpoint.identify(cfg.run_uri)
    except CheckpointError:
        return None, None
    if not meta.get(checkpoint.SPLITTER_HASH):
        return None, None
    progress(f"using the splitter of {meta['uri']}")
    return checkpoint.read_splitter(meta), meta.get("splitter")


def check_resumable(cfg: TrainConfig) -> None:
    """Refuse, before any work, to resume a run whose checkpoints have another number of
    classes than ``cfg`` trains (a run begun with or without ``field_pieces``)."""
    try:
        meta = checkpoint.read_meta(checkpoint.resolve(cfg.run_uri))
    except CheckpointError:
        return  # nothing to resume
    have, want = int(meta.get("classes", settings.DIGITS)), cfg.classes
    if have != want:
        hint = "--field-pieces 0" if have == settings.DIGITS else "--field-pieces N (N > 0)"
        raise ConfigError(f"run {cfg.run_uri} holds a {have}-class model but this recipe trains "
                          f"{want} classes: resume it with {hint}, or start a new run with another "
                          "--name")


def prepare_run(cfg: TrainConfig) -> RunInputs:
    """Validate ``cfg``, check the run can go on, and load and make its inputs."""
    cfg.validate()
    check_resumable(cfg)
    train_d = data.load(settings.data_dir(cfg.data), "train")
    test_d = data.load(settings.data_dir(cfg.data), "test")
    train_x, train_y, restyled, pieces = training_set(train_d, cfg, progress=True)
    splitter, metrics = _resumed_splitter(cfg)
    test_x, test_y = _limit(test_d, cfg.test_limit)
    info = RunInfo(train_d.source, len(train_y) - pieces - restyled, pieces, metrics,
                   checkpoint.code_version(), restyled)
    return RunInputs(LoopData(train_x, train_y, test_x, test_y), info, splitter,
                     _limit(train_d, cfg.train_limit)[0])
