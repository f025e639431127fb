"""Checkpoints: weights, model name, preprocessing version and training metadata.

A checkpoint is a folder (local or ``s3://``) with

* ``model.pt``: the model's ``state_dict`` (tensors only),
* ``meta.json``: model name, preprocessing version, training metadata,
* ``train_state.pt`` (optional): optimizer and schedule state for resuming,
* ``splitter.pt`` (optional): the splitter of touching digits that field reading uses
  (:mod:`recognizer.splitter`), trained in the same run,
* ``reader.pt`` (optional): the learned field reader (:mod:`recognizer.reader`), its
  architecture, metrics and calibration under ``meta["reader"]``.

Tensors are read with ``torch.load(weights_only=True)``, which refuses to unpickle
anything but tensors and plain containers, so a checkpoint cannot run code on load.
A training run also counts as a checkpoint (its newest ``checkpoint_*`` folder is used),
and so does the folder given to ``digits train --output`` while it holds one run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
from typing import Any

import torch
from torch import nn

from recognizer import settings
from recognizer.errors import CheckpointError, StorageError
from recognizer.models import MODELS, build
from recognizer.runtime import storage

FORMAT = "formdigits-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, META_FILE, STATE_FILE = "model.pt", "meta.json", "train_state.pt"
SPLITTER_FILE = "splitter.pt"
READER_FILE = "reader.pt"
#: What a checkpoint URI may name (:func:`resolve`), for the commands' --checkpoint help.
CHECKPOINT_HELP = ("checkpoint folder, training run, or the folder given to `digits train "
                   "--output` when it holds one run (local or s3://); default: the model "
                   "bundled with the package")
#: meta.json key holding the sha256 of model.pt (checkpoints written since it was added).
WEIGHTS_HASH = "weights_sha256"
#: meta.json key holding the sha256 of splitter.pt, in checkpoints that have one.
SPLITTER_HASH = "splitter_sha256"
#: meta.json key holding the sha256 of reader.pt, in checkpoints that have one.
READER_HASH = "reader_sha256"


def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("formdigits")
    except PackageNotFoundError:
        ver = "0+unknown"
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        # Uncommitted changes to tracked files: the commit alone does not say what ran.
        dirty = sha and subprocess.run(["git", "-C", here, "status", "--porcelain", "-uno"],
                                       capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{ver}+g{sha}{'.dirty' if dirty else ''}" if sha else ver


def tensor_bytes(obj: Any) -> bytes:
    """``obj`` (tensors in plain containers) as the bytes of a ``.pt`` file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(folder: str, model: nn.Module, meta: dict, train_state: dict | None = None,
         splitter: bytes | None = None, reader: bytes | None = None) -> None:
    """Write a checkpoint folder (local path or s3:// URI); ``splitter``: the splitter's
    weights (``recognizer.splitter.state_bytes``), if the run trained one; ``reader``: the
    field reader's (:func:`tensor_bytes` of its state dict), described by ``meta["reader"]``."""
    if meta.get("model") not in MODELS:
        raise CheckpointError(f"meta['model'] must name a registered model, got {meta.get('model')!r}")
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    weights = tensor_bytes(state)
    # The weights' hash in meta.json lets identify() name the version without reading
    # the weights; loading always hashes the weights themselves.
    # A splitter hash in meta (from a loaded checkpoint) describes this folder only when
    # the splitter is written with it.
    meta = {k: v for k, v in meta.items() if k not in (SPLITTER_HASH, READER_HASH)}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "preprocess_version": settings.PREPROCESS_VERSION, **meta,
            "classes": _classes(model), WEIGHTS_HASH: hashlib.sha256(weights).hexdigest()}
    storage.write_bytes(storage.join(folder, MODEL_FILE), weights)
    if splitter is not None:
        full[SPLITTER_HASH] = hashlib.sha256(splitter).hexdigest()
        storage.write_bytes(storage.join(folder, SPLITTER_FILE), splitter)
    if reader is not None:
        if not isinstance(meta.get("reader"), dict) or "name" not in meta["reader"]:
            raise CheckpointError("a checkpoint with reader weights needs meta['reader']['name']")
        full[READER_HASH] = hashlib.sha256(reader).hexdigest()
        storage.write_bytes(storage.join(folder, READER_FILE), reader)
    if train_state is not None:
        storage.write_bytes(storage.join(folder, STATE_FILE), tensor_bytes(train_state))
    # meta.json last: its presence marks the checkpoint complete.
    storage.write_bytes(storage.join(folder, META_FILE),
                        json.dumps(full, indent=2, sort_keys=True).encode())


def _classes(model: nn.Module) -> int:
    """Outputs of the model's last layer: 10 digits, or 11 with NOT_A_DIGIT."""
    return [m for m in _unwrap(model).modules() if isinstance(m, nn.Linear)][-1].out_features


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _safe_load(data: bytes, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {what}: it holds objects other than tensors "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"{what} is not a readable tensor file: {exc}") from exc


def resolve(uri: str) -> str:
    """The checkpoint folder a URI names: a checkpoint itself; a training run (its newest
    ``checkpoint_*`` folder); or the folder given to ``digits train --output``, when it
    holds exactly one run (that run's newest checkpoint). Several runs there are an
    error naming them: which one is meant is the user's choice, not the newest's."""
    try:
        if storage.exists(storage.join(uri, META_FILE)):
            return uri
        newest = newest_checkpoint(uri)
        runs = {} if newest else _runs(uri)
    except StorageError as exc:
        raise CheckpointError(f"cannot read checkpoint {uri}: {exc}") from exc
    if newest:
        return newest
    if len(runs) == 1:
        return next(iter(runs.values()))
    if runs:
        names = sorted(runs)
        raise CheckpointError(
            f"{uri} holds {len(runs)} training runs ({', '.join(names)}): name the one to use, "
            f"e.g. {storage.join(uri, names[0])}"
        )
    raise CheckpointError(
        f"no checkpoint at {uri}: expected {META_FILE} there, a checkpoint_* folder holding "
        "one (a run of `digits train`), or the --output folder of `digits train` with one run"
    )


def _is_checkpoint_name(folder: str) -> bool:
    return os.path.basename(folder.rstrip("/")).startswith("checkpoint_")


def newest_checkpoint(run: str) -> str | None:
    """The newest complete ``checkpoint_*`` folder of a run, or None when it has none."""
    candidates = [d for d in storage.list_dirs(run) if _is_checkpoint_name(d)]
    # Epoch numbers are zero-padded (Ray Train's own names are timestamps), so the
    # newest sorts last; a folder without meta.json is still being written.
    for folder in reversed(candidates):
        if storage.exists(storage.join(folder, META_FILE)):
            return folder
    return None


def _runs(root: str) -> dict[str, str]:
    """The training runs directly under an output root: run name -> its newest checkpoint."""
    runs = {}
    for folder in storage.list_dirs(root):
        if _is_checkpoint_name(folder):
            continue  # an unfinished checkpoint of a run, not a run
        newest = newest_checkpoint(folder)
        if newest:
            runs[os.path.basename(folder.rstrip("/"))] = newest
    return runs


def read_meta(folder: str) -> dict:
    """Read and validate a checkpoint folder's meta.json."""
    try:
        meta = json.loads(storage.read_bytes(storage.join(folder, META_FILE)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder}/{META_FILE} is not valid JSON: {exc}") from exc
    except StorageError as exc:
        raise CheckpointError(str(exc)) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder} is not a formdigits checkpoint")
    if meta.get("model") not in MODELS:
        raise CheckpointError(f"{folder} names unknown model {meta.get('model')!r}")
    if meta.get("classes", settings.DIGITS) not in (settings.DIGITS, settings.DIGITS + 1):
        raise CheckpointError(f"{folder} declares {meta.get('classes')!r} classes; a digit model "
                              "has 10, or 11 with the not-a-digit class")
    if meta.get("preprocess_version") != settings.PREPROCESS_VERSION:
        raise CheckpointError(
            f"{folder} was trained with preprocessing v{meta.get('preprocess_version')}, "
            f"this code has v{settings.PREPROCESS_VERSION}; retrain or use a matching release"
        )
    return meta


def _read_weights(folder: str) -> bytes:
    try:
        return storage.read_bytes(storage.join(folder, MODEL_FILE))
    except StorageError as exc:
        raise CheckpointError(str(exc)) from exc


def _identified(meta: dict, folder: str, digest: str) -> dict:
    """meta plus ``uri`` (the folder used) and ``version``: model name + weights hash, and
    the field reader's hash when there is one (a fine-tuned reader is another version)."""
    version = f"{meta['model']}-{digest[:12]}"
    if meta.get(READER_HASH):
        version += f"-r{meta[READER_HASH][:8]}"
    return {**meta, "uri": folder, "version": version}


def identify(uri: str) -> dict:
    """A checkpoint's meta with its ``version`` and ``uri``, without building the model
    (for drivers that label outputs while actors elsewhere load it). Reads only
    meta.json when it records the weights' hash; older checkpoints' weights are hashed."""
    folder = resolve(uri)
    meta = read_meta(folder)
    digest = meta.get(WEIGHTS_HASH) or hashlib.sha256(_read_weights(folder)).hexdigest()
    return _identified(meta, folder, digest)


def load(uri: str) -> tuple[nn.Module, dict]:
    """Load a checkpoint into an eval-mode CPU model. Returns (model, meta).

    meta gains ``version`` (model name + weights hash, and the reader's) and ``uri`` (the folder used).
    """
    folder = resolve(uri)
    meta = read_meta(folder)
    raw = _read_weights(folder)
    state = state_dict(raw, f"{folder}/{MODEL_FILE}")
    model = build(meta["model"], int(meta.get("classes", settings.DIGITS)))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {folder} do not fit model {meta['model']!r}: {exc}") from exc
    model.eval()
    return model, _identified(meta, folder, hashlib.sha256(raw).hexdigest())


def files(meta: dict) -> list[str]:
    """The files a copy of the checkpoint ``meta`` describes needs, meta.json last (its
    presence marks a checkpoint complete); the training state is left out."""
    return [MODEL_FILE, *([SPLITTER_FILE] if meta.get(SPLITTER_HASH) else []),
            *([READER_FILE] if meta.get(READER_HASH) else []), META_FILE]


def _read_part(meta: dict, name: str, hash_key: str, what: str) -> bytes | None:
    digest = meta.get(hash_key)
    if not digest:
        return None
    uri = storage.join(meta["uri"], name)
    try:
        raw = storage.read_bytes(uri)
    except StorageError as exc:
        raise CheckpointError(f"{meta['uri']} lists a {what} but it cannot be read: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != digest:
        raise CheckpointError(f"{uri} does not match the hash in {META_FILE}: the checkpoint "
                              "was changed or only partly copied")
    return raw


def read_splitter(meta: dict) -> bytes | None:
    """The splitter's weights from the checkpoint ``meta`` describes (as returned by
    :func:`identify` or :func:`load`), checked against the hash meta.json records; None
    when the checkpoint has no splitter."""
    return _read_part(meta, SPLITTER_FILE, SPLITTER_HASH, "splitter")


def read_reader(meta: dict) -> bytes | None:
    """The field reader's weights from the checkpoint ``meta`` describes, checked against
    the hash meta.json records; None when the checkpoint has no reader."""
    return _read_part(meta, READER_FILE, READER_HASH, "field reader")


def state_dict(raw: bytes, what: str) -> dict:
    """A state dict from a weights file (``what`` names it in errors), refusing anything
    but tensors."""
    state = _safe_load(raw, what)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} is not a state dict of tensors")
    return state


def load_train_state(folder: str) -> dict | None:
    """Optimizer/schedule state saved for resuming, or None if the checkpoint has none."""
    uri = storage.join(folder, STATE_FILE)
    if not storage.exists(uri):
        return None
    return _safe_load(storage.read_bytes(uri), uri)
