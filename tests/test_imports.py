"""Which modules import which: ``--help`` and the settings import no torch, and nothing imports uphill."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labelclean"


def imported_modules(*args: str) -> set[str]:
    """The modules a fresh ``python -X importtime`` process imports to run ``args``."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["pretrain", "--help"], ["--version"]])
def test_help_and_version_import_no_torch(args):
    assert "torch" not in imported_modules("-m", "labelclean", *args)


def test_version_prints_the_installed_version():
    done = subprocess.run([sys.executable, "-m", "labelclean", "--version"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == f"labelclean {version('labelclean')}\n"


def test_the_settings_import_no_torch():
    assert "torch" not in imported_modules("-c", "import labelclean.config")


def top_level_imports(module: str) -> set[str]:
    """The labelclean modules ``module`` imports at its top level (not inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("module, never", [
    ("cli", {"auto", "distributed", "api", "training", "models", "dividemix", "mlnt", "rules"}),
    ("config", {"models", "data", "training", "api"}),
    ("mlnt", {"dividemix", "rules"}),  # the shared pieces are in evaluation and training
    ("dividemix", {"mlnt"}),
    ("evaluation", {"dividemix", "mlnt", "rules"}),
    ("rules", {"dividemix", "mlnt"}),
])
def test_imports_run_downhill(module, never):
    assert not top_level_imports(module) & never
