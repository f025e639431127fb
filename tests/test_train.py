"""Training: Ray Train's 2 CPU workers learn, checkpoints resume, a killed worker is
recovered; the same loop in this process writes the same kind of checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest

import recognizer
from recognizer import checkpoint
from recognizer.errors import ConfigError
from recognizer.training import local
from recognizer.training.config import RECIPE_KEYS, TrainConfig
from recognizer.training.prepare import check_resumable
from recognizer.training.ray_train import run


def _cfg(mnist_dir: str, output: str, name: str, epochs: int) -> TrainConfig:
    # A few field pieces, so the workers train the not-a-digit class as the default recipe
    # does, and a token splitter, so checkpoints carry one.
    return TrainConfig(data=mnist_dir, model="best", workers=2, epochs=epochs, output=output,
                       name=name, train_limit=2000, test_limit=1000, batch_size=64,
                       field_pieces=100, splitter_examples=300, splitter_epochs=1,
                       calibration_fields=800, reader_epochs=0)


def test_two_workers_learn_and_resume(ray_cluster, mnist_dir, mnist_test, tmp_path, trained_checkpoint):
    out = str(tmp_path / "runs")
    first = run(_cfg(mnist_dir, out, "learn", epochs=2))
    assert first.metrics["epoch"] == 2
    assert first.metrics["val_accuracy"] > 0.6  # chance is 0.1
    model = recognizer.load(first.checkpoint)
    acc = (model.predict_tensors(mnist_test.images[5000:6000]).argmax(1)
           == mnist_test.labels[5000:6000]).mean()
    assert acc > 0.6  # held-out images the run never scored
    assert model.meta["workers"] == 2 and len(model.meta["history"]) == 2
    assert model.classes == 11 and model.meta["train_images"] == 2000
    assert model.meta["field_pieces"] > 500  # about 15 pieces per synthesized field
    # The splitter, trained in a Ray task after the workers' epochs, and the calibration
    # are in the final checkpoint, beside the last epoch's (which holds the same weights).
    assert first.checkpoint.endswith("checkpoint_epoch0002_final")
    assert model.splitter is not None and model.meta["splitter"]["examples"] == 300
    assert os.path.exists(os.path.join(first.checkpoint, checkpoint.SPLITTER_FILE))
    assert "calibration" in model.meta
    last_epoch = recognizer.load(first.checkpoint.removesuffix("_final"))
    assert last_epoch.splitter is None and last_epoch.meta["version"] == model.meta["version"]
    # One checkpoint writer: the Ray path and the in-process path (the session's
    # checkpoint) write the same files and meta keys, and the whole recipe.
    local = recognizer.load(trained_checkpoint)
    assert set(model.meta) == set(local.meta)
    assert set(model.meta["recipe"]) == set(local.meta["recipe"]) == set(RECIPE_KEYS)
    assert set(model.meta["history"][0]) == set(local.meta["history"][0])
    assert sorted(os.listdir(first.checkpoint)) == sorted(os.listdir(trained_checkpoint))

    # Same output and name: Ray Train restores the run and trains only the missing epoch,
    # with the splitter the run already has (not a new one).
    second = run(_cfg(mnist_dir, out, "learn", epochs=3))
    resumed = recognizer.load(second.checkpoint)
    history = resumed.meta["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[:2] == model.meta["history"]
    assert resumed.meta[checkpoint.SPLITTER_HASH] == model.meta[checkpoint.SPLITTER_HASH]
    assert second.checkpoint.endswith("checkpoint_epoch0003_final")


def _train_worker_pids() -> list[int]:
    """PIDs of this session's Ray Train workers (descendants of this test process)."""
    import psutil

    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if proc.cmdline()[:1] == ["ray::RayTrainWorker"] or proc.name() == "ray::RayTrainWorker":
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_killed_worker_restarts_from_last_checkpoint(ray_cluster, mnist_dir, tmp_path):
    out = tmp_path / "runs"
    result: dict = {}
    cfg = _cfg(mnist_dir, str(out), "killed", epochs=4)
    thread = threading.Thread(target=lambda: result.update(r=run(cfg)))
    thread.start()
    deadline = time.time() + 300
    while not (out / "killed" / "checkpoint_epoch0001").exists():
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    victims = _train_worker_pids()
    assert victims
    os.kill(victims[-1], signal.SIGKILL)
    thread.join(timeout=600)
    final = result["r"]
    assert final.metrics["epoch"] == 4
    state = checkpoint.load_train_state(final.checkpoint)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    assert victims[-1] not in _train_worker_pids()


def test_a_run_is_not_resumed_with_another_number_of_classes(trained_checkpoint, tmp_path):
    # A run whose checkpoint learned the not-a-digit class (11 outputs) ...
    shutil.copytree(trained_checkpoint, tmp_path / "runs" / "old" / "checkpoint_epoch0003")
    check_resumable(TrainConfig(output=str(tmp_path / "runs"), name="old"))
    check_resumable(TrainConfig(output=str(tmp_path / "runs"), name="new", field_pieces=0))
    # ... cannot go on as a ten-digit classifier: refused before any work, with the fix.
    with pytest.raises(ConfigError, match="11-class model.*--field-pieces N"):
        check_resumable(TrainConfig(output=str(tmp_path / "runs"), name="old", field_pieces=0))


def test_in_process_training_checkpoints_the_average_and_resumes(mnist_dir, mnist_test, tmp_path):
    cfg = TrainConfig(data=mnist_dir, epochs=1, output=str(tmp_path), name="local", train_limit=600,
                      test_limit=300, batch_size=64, field_pieces=0, splitter_epochs=0, reader_epochs=0)
    first = local.run(cfg)
    assert first.checkpoint.endswith("checkpoint_epoch0001") and first.metrics["epoch"] == 1
    # model.pt holds the moving average of the weights; the raw ones are the training state's.
    model = recognizer.load(first.checkpoint)
    raw = checkpoint.load_train_state(first.checkpoint)["model"]
    averaged = model.model.state_dict()
    assert any(not (raw[k] == averaged[k]).all() for k in averaged if raw[k].is_floating_point())
    assert model.meta["workers"] == 1 and model.meta["epochs_planned"] == 1
    # Run again with more epochs: it goes on from the newest checkpoint, keeping num_to_keep.
    cfg.epochs, cfg.num_to_keep = 3, 2
    final = local.run(cfg)
    history = recognizer.load(final.checkpoint).meta["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[0] == model.meta["history"][0]
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["checkpoint_epoch0002",
                                                                      "checkpoint_epoch0003"]
