"""Checkpoints round-trip exactly, live on local disk or S3, and never run code on load."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch

import recognizer
from recognizer import checkpoint
from recognizer.errors import CheckpointError
from recognizer.preprocess import preprocess_many
from recognizer.runtime import storage


class Payload:
    """Stands for anything a malicious checkpoint might smuggle in."""

    def __reduce__(self):
        return (os.system, ("echo owned > /tmp/formdigits-owned",))


def test_round_trip_gives_identical_predictions(trained_checkpoint, mnist_test_raw, tmp_path):
    images, _ = mnist_test_raw
    original = recognizer.load(trained_checkpoint)
    copy = str(tmp_path / "copy")
    checkpoint.save(copy, original.model, {k: v for k, v in original.meta.items()
                                           if k not in ("uri", "version")})
    again = recognizer.load(copy)
    a, b = original.predict(images[:300]), again.predict(images[:300])
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.probabilities, b.probabilities)
    assert again.version == original.version


def test_meta_holds_training_metadata(trained_checkpoint):
    meta = recognizer.load(trained_checkpoint).meta
    for key in ("model", "preprocess_version", "data", "epochs", "accuracy", "code_version",
                "history"):
        assert key in meta, key
    assert meta["model"] == "best" and 0.9 < meta["accuracy"] <= 1.0


def test_checkpoint_with_an_object_is_refused(trained_checkpoint, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained_checkpoint, bad)
    state = torch.load(bad / checkpoint.MODEL_FILE, weights_only=True)
    state["extra"] = Payload()
    torch.save(state, bad / checkpoint.MODEL_FILE)
    with pytest.raises(CheckpointError, match="refusing"):
        recognizer.load(str(bad))
    assert not os.path.exists("/tmp/formdigits-owned")


def test_incomplete_or_foreign_checkpoints_are_refused(trained_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        recognizer.load(str(tmp_path / "missing"))
    foreign = tmp_path / "foreign"
    shutil.copytree(trained_checkpoint, foreign)
    meta = json.loads((foreign / checkpoint.META_FILE).read_text())
    (foreign / checkpoint.META_FILE).write_text(json.dumps({**meta, "model": "resnet-9000"}))
    with pytest.raises(CheckpointError, match="unknown model"):
        recognizer.load(str(foreign))
    (foreign / checkpoint.META_FILE).write_text(json.dumps({**meta, "preprocess_version": 0}))
    with pytest.raises(CheckpointError, match="preprocessing"):
        recognizer.load(str(foreign))


def test_run_folder_resolves_to_newest_checkpoint(trained_checkpoint, tmp_path):
    run = tmp_path / "run"
    for name in ("checkpoint_epoch0001", "checkpoint_epoch0002"):
        shutil.copytree(trained_checkpoint, run / name)
    assert checkpoint.resolve(str(run)).endswith("checkpoint_epoch0002")


def test_checkpoint_on_s3(trained_checkpoint, bucket, mnist_test_raw):
    images, _ = mnist_test_raw
    local = recognizer.load(trained_checkpoint)
    uri = f"s3://{bucket}/models/run1/checkpoint_epoch0003"
    _copy_checkpoint(trained_checkpoint, uri)
    remote = recognizer.load(f"s3://{bucket}/models/run1")
    assert remote.meta["uri"] == uri
    assert np.array_equal(remote.predict(images[:50]).probabilities,
                          local.predict(images[:50]).probabilities)


def test_tensor_file_helper_rejects_non_tensors():
    buf = io.BytesIO()
    torch.save({"w": [1, 2, 3]}, buf)
    state = checkpoint._safe_load(buf.getvalue(), "x")
    assert state == {"w": [1, 2, 3]}  # plain containers load, but load() demands tensors


def test_identify_names_the_loaded_version_with_or_without_a_recorded_hash(trained_checkpoint,
                                                                          tmp_path):
    version = recognizer.load(trained_checkpoint).version
    assert checkpoint.identify(trained_checkpoint)["version"] == version
    # A checkpoint written before meta.json recorded the weights' hash.
    old = tmp_path / "old"
    shutil.copytree(trained_checkpoint, old)
    meta = json.loads((old / checkpoint.META_FILE).read_text())
    del meta[checkpoint.WEIGHTS_HASH]
    (old / checkpoint.META_FILE).write_text(json.dumps(meta))
    assert checkpoint.identify(str(old))["version"] == version


def test_checkpoints_record_their_classes_and_older_ones_have_ten(trained_checkpoint, tmp_path,
                                                                   mnist_test):
    from recognizer.models import build

    assert checkpoint.read_meta(trained_checkpoint)["classes"] == 11
    # A ten-class model, saved as before the not-a-digit class existed (no "classes").
    old = tmp_path / "ten"
    checkpoint.save(str(old), build("best"), {"model": "best"})
    meta = json.loads((old / checkpoint.META_FILE).read_text())
    assert meta.pop("classes") == 10
    (old / checkpoint.META_FILE).write_text(json.dumps(meta))
    model = recognizer.load(str(old))
    assert model.classes == 10
    probs = model.predict_tensors(mnist_test.images[:8], not_a_digit=True)
    assert probs.shape == (8, 11) and not probs[:, 10].any()
    assert np.allclose(probs[:, :10].sum(1), 1.0, atol=1e-5)
    # A count that is no digit model's is refused with what is wrong.
    meta["classes"] = 12
    (old / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="12 classes"):
        recognizer.load(str(old))


def test_inference_folds_batch_norm_into_the_convolutions_without_changing_outputs(
        trained_checkpoint, mnist_test_raw):
    loaded = recognizer.load(trained_checkpoint)
    images, _ = mnist_test_raw
    x = torch.from_numpy(preprocess_many(list(images[:200]))[0])[:, None]
    fused = loaded._net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    # The model as loaded (what gets saved) keeps its batch norms.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.model.modules())
    with torch.inference_mode():
        assert torch.allclose(fused(x), loaded.model(x), atol=1e-4)


def _copy_checkpoint(source: str, uri: str) -> None:
    """Copy a checkpoint folder's files to a local folder or s3:// prefix."""
    for name in os.listdir(source):
        with open(os.path.join(source, name), "rb") as f:
            storage.write_bytes(storage.join(uri, name), f.read())


@pytest.fixture(params=["local", "s3"])
def output_root(request, tmp_path) -> str:
    """An empty output root of `digits train --output`, on local disk or on S3."""
    if request.param == "local":
        return str(tmp_path / "runs")
    return f"s3://{request.getfixturevalue('bucket')}/runs"


def test_an_output_root_with_one_run_is_that_runs_newest_checkpoint(trained_checkpoint, output_root):
    for epoch in ("checkpoint_epoch0001", "checkpoint_epoch0002"):
        _copy_checkpoint(trained_checkpoint, storage.join(output_root, "digits", epoch))
    # An unfinished checkpoint (no meta.json yet) is neither used nor taken for a run.
    storage.write_bytes(storage.join(output_root, "digits", "checkpoint_epoch0003", "model.pt"), b"")
    newest = storage.join(output_root, "digits", "checkpoint_epoch0002")
    assert checkpoint.resolve(output_root) == newest
    assert recognizer.load(output_root).meta["uri"] == newest


def test_an_output_root_with_several_runs_is_an_error_naming_them(trained_checkpoint, output_root):
    for run in ("alpha", "beta"):
        _copy_checkpoint(trained_checkpoint, storage.join(output_root, run, "checkpoint_epoch0001"))
    with pytest.raises(CheckpointError, match="holds 2 training runs") as err:
        recognizer.load(output_root)
    assert "alpha, beta" in str(err.value)
    assert storage.join(output_root, "alpha") in str(err.value)  # what to pass instead
    # Naming one of them works.
    assert checkpoint.resolve(storage.join(output_root, "beta")).endswith("beta/checkpoint_epoch0001")


def test_loading_a_model_while_another_one_runs_breaks_no_forward():
    # A Serve replica loads its next checkpoint in a thread while its current model
    # answers requests in another: loading must not disturb a running forward.
    import threading

    serving = recognizer.load()
    x = np.random.default_rng(0).random((8, 28, 28), dtype=np.float32)
    failures: list[BaseException] = []
    stop = threading.Event()

    def forwards() -> None:
        while not stop.is_set():
            try:
                serving.predict_tensors(x)
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)
                return

    worker = threading.Thread(target=forwards)
    worker.start()
    try:
        for _ in range(30):
            recognizer.load()
    finally:
        stop.set()
        worker.join(30)
    assert not failures, repr(failures[0])
