"""The layout keeps its promises: import rules (import-linter contracts), module and
function sizes, every module on the architecture page, every flag's default its
config's, and a dev stack that is not installed."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("recognizer", "serving", "jobs", "formdigits")
#: Lines per module and per function the product keeps to.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py"))


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if p.name != "__init__.py" and p.name not in page]
    assert not missing, f"docs/architecture.md does not show {missing}"
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def test_the_dev_stack_is_not_installed():
    with open(ROOT / "pyproject.toml", "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not [p for p in include if p.startswith("devstack")]
    assert {p.rstrip("*") for p in include} == set(PRODUCT)
    # The installed `digits` runs without the repository on its path.
    out = subprocess.run([sys.executable, "-c", "import devstack"], cwd="/", capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode != 0 and "No module named 'devstack'" in out.stderr


def _parse(*argv: str):
    from formdigits.cli import build_parser

    return build_parser().parse_args(list(argv))


def test_train_flags_default_to_the_recipe():
    from recognizer.training.cli import config_from_args
    from recognizer.training.config import TrainConfig

    assert config_from_args(_parse("train")) == TrainConfig()


def test_serve_flags_default_to_the_serving_config():
    from serving.cli import config_from_args
    from serving.config import ServeConfig

    assert config_from_args(_parse("serve", "--checkpoint", "c")) == ServeConfig(checkpoint="c")


@pytest.mark.parametrize("action", ["run", "submit"])
def test_job_flags_default_to_the_job_config(action):
    from jobs.cli import config_from_args
    from jobs.config import JobConfig

    args = _parse("job", action, "--input", "i", "--output", "o", "--checkpoint", "c")
    cfg = config_from_args(args)
    expected = JobConfig(input="i", output="o", checkpoint="c")
    for f in fields(JobConfig):
        if f.name != "progress":  # submit's jobs run without a progress bar
            assert getattr(cfg, f.name) == getattr(expected, f.name), f.name
