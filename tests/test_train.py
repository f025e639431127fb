"""Ray Train: 2 CPU workers learn, checkpoints resume, and a killed worker is recovered."""

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
from recognizer.train import TrainConfig, check_resumable, run


def _cfg(mnist_dir: str, output: str, name: str, epochs: int) -> TrainConfig:
    # A few field pieces, so the workers train the not-a-digit class as the default recipe
    # does, and a token splitter, so checkpoints carry one.
    return TrainConfig(data=mnist_dir, model="best", workers=2, epochs=epochs, output=output,
                       name=name, train_limit=2000, test_limit=1000, batch_size=64,
                       field_pieces=100, splitter_examples=300, splitter_epochs=1)


def test_two_workers_learn_and_resume(ray_cluster, mnist_dir, mnist_test, tmp_path):
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
    # The splitter, trained in a Ray task before the workers, is in every checkpoint.
    assert model.splitter is not None and model.meta["splitter"]["examples"] == 300
    assert os.path.exists(os.path.join(first.checkpoint, checkpoint.SPLITTER_FILE))

    # Same output and name: Ray Train restores the run and trains only the missing epoch,
    # with the splitter the run already has (not a new one).
    second = run(_cfg(mnist_dir, out, "learn", epochs=3))
    resumed = recognizer.load(second.checkpoint)
    history = resumed.meta["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[:2] == model.meta["history"]
    assert resumed.meta[checkpoint.SPLITTER_HASH] == model.meta[checkpoint.SPLITTER_HASH]


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
