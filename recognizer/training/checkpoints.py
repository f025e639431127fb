"""The one way training writes and reads its checkpoints, whichever path trained.

Every epoch's checkpoint holds the weights users get (the moving average, when the
recipe keeps one), the full meta (:func:`checkpoint_meta`) and the state to resume from
(``train_state.pt``), plus the run's splitter of touching digits once it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from recognizer import checkpoint
from recognizer.training.config import TrainConfig
from recognizer.training.loop import EpochEnd, Resume


@dataclass
class RunInfo:
    """What preparing the run found out, recorded in each of its checkpoints: the data
    source, training digits and field pieces, the splitter's metrics (None without one),
    the code version and the restyled copies of training digits."""

    data_source: str
    train_images: int
    field_pieces: int
    splitter_metrics: dict | None
    code_version: str
    restyled_digits: int = 0


def checkpoint_name(epoch: int) -> str:
    """The folder name of epoch ``epoch``'s checkpoint within its run."""
    return f"checkpoint_epoch{epoch:04d}"


def checkpoint_meta(cfg: TrainConfig, run: RunInfo, end: EpochEnd, workers: int) -> dict:
    """The training metadata of an epoch's checkpoint (``meta.json``)."""
    return {"model": cfg.model, "data": run.data_source,
            "epochs": end.epoch, "epochs_planned": cfg.epochs,
            "accuracy": end.metrics["val_accuracy"], "loss": end.metrics["val_loss"],
            "train_images": run.train_images, "restyled_digits": run.restyled_digits,
            "field_pieces": run.field_pieces,
            "splitter": run.splitter_metrics, "workers": workers,
            "code_version": run.code_version, "history": end.history, "recipe": cfg.recipe()}


def write_checkpoint(folder: str, cfg: TrainConfig, run: RunInfo, end: EpochEnd, workers: int,
                     splitter: bytes | None) -> None:
    """Write epoch ``end``'s checkpoint to ``folder`` (local or s3://); the run's final
    one, with its splitter and calibration, is :func:`recognizer.training.finish.finish_run`'s."""
    checkpoint.save(folder, end.served, checkpoint_meta(cfg, run, end, workers), end.train_state(),
                    splitter)


def read_resume(folder: str) -> Resume:
    """The weights and training state of the checkpoint in ``folder``, to go on from."""
    restored, _ = checkpoint.load(folder)
    return Resume(restored.state_dict(), checkpoint.load_train_state(folder) or {}, folder)
