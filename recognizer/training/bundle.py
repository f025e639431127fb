"""Rebuild the bundled default model (:mod:`recognizer.bundled`): ``make bundled-model``.

Runs ``digits train`` with its default settings and the reader's longer training
(:data:`BUNDLE_OVERRIDES`; besides those, only where the run goes is given) and copies
the final checkpoint's weights, splitter, field reader and meta into the package, the meta
recording the exact command and the code version. ``--from RUN`` bundles a run already
made that way; a run of any other recipe is refused.

    python -m recognizer.training.bundle [--from RUN] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

from recognizer import bundled, checkpoint
from recognizer.errors import CheckpointError
from recognizer.training.config import TrainConfig

RUN_NAME = "bundled"
#: The bundled recipe: ``digits train``'s defaults, with the learned field reader trained
#: on more fields for more epochs than a default run's ten minutes allow (about 70 more
#: minutes on a 2-core machine; docs/reader.md).
BUNDLE_OVERRIDES = {"reader_fields": 100_000, "reader_epochs": 7}


def bundle_flags() -> list[str]:
    """The ``digits train`` flags of :data:`BUNDLE_OVERRIDES`."""
    return [f for k, v in BUNDLE_OVERRIDES.items() for f in (f"--{k.replace('_', '-')}", str(v))]


def bundled_recipe() -> dict:
    """The recipe a bundled model must have been trained with."""
    return TrainConfig(**BUNDLE_OVERRIDES).recipe()


def _train(output: str, data: str | None) -> tuple[str, list[str]]:
    """Run ``digits train`` with the bundled recipe into ``output``: (its run, the command)."""
    argv = ["digits", "train", *bundle_flags(), "--output", output, "--name", RUN_NAME]
    env = {**os.environ, **({"DIGITS_DATA": data} if data else {})}
    subprocess.run([sys.executable, "-m", "formdigits.cli", *argv[1:]], check=True, env=env)
    return os.path.join(output, RUN_NAME), argv


def _check_recipe(meta: dict) -> None:
    want = bundled_recipe()
    have = meta.get("recipe", {})
    differ = sorted(k for k in want if have.get(k) != want[k])
    if differ:
        raise CheckpointError(f"{meta['uri']} was not trained with the default recipe "
                              f"(differs in {', '.join(differ)}): the bundled model is what "
                              f"`digits train {' '.join(bundle_flags())}` makes")


def bundle(run: str, command: list[str]) -> str:
    """Copy ``run``'s final checkpoint into the package; returns the bundled folder."""
    meta = checkpoint.identify(run)
    _check_recipe(meta)
    if not meta.get(checkpoint.SPLITTER_HASH):
        raise CheckpointError(f"{meta['uri']} has no splitter: bundle a run's final checkpoint")
    source = meta["uri"]
    for name in checkpoint.files(meta)[:-1]:
        shutil.copyfile(os.path.join(source, name), os.path.join(bundled.FOLDER, name))
    with open(os.path.join(source, checkpoint.META_FILE)) as f:
        saved = json.load(f)
    saved[bundled.MADE_BY] = {"command": shlex.join(command), "code_version": saved["code_version"],
                              "made": datetime.now(UTC).isoformat(timespec="seconds")}
    if (saved.get("reader") or {}).get("code_version"):  # the reader phase may run on newer code
        saved[bundled.MADE_BY]["reader_code_version"] = saved["reader"]["code_version"]
    with open(os.path.join(bundled.FOLDER, checkpoint.META_FILE), "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
    checkpoint.load(bundled.FOLDER)  # the copy reads back, hashes and all
    return bundled.FOLDER


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="run", help="a run made by `digits train` with its defaults "
                                              "(default: train one now)")
    p.add_argument("--command", help="with --from: the command that made the run, as recorded")
    p.add_argument("--data", help="MNIST folder for training (default: $DIGITS_DATA)")
    args = p.parse_args(argv)
    if args.run:
        print(bundle(args.run, shlex.split(args.command or "digits train")))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        run, command = _train(tmp, args.data)
        command = [c if c != tmp else "$TMP" for c in command]
        print(bundle(run, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
