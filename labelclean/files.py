"""Files written atomically (temp file in the same directory, then ``os.replace``), so an
interrupted process never leaves a half-written output behind, and read back with one-line errors."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .errors import LabelcleanError

T = TypeVar("T")
log = logging.getLogger("labelclean")
STALE_SECONDS = 600  # a temp file nobody wrote to for this long was left by a killed process


def atomic_write(path: Path, write: Callable[[io.BufferedRandom], T]) -> T:
    """Call ``write(file)`` on a temp file next to ``path``, then rename it over ``path``.

    The file is also readable, so that ``write`` can rework what it wrote (the decoded-image
    cache shrinks RGB rows to one channel in place). Returns what ``write`` returns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files owner-only; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result


def remove_stale_temps(folder: Path, names: str = "*") -> None:
    """Delete the temp files :func:`atomic_write` left in ``folder`` for outputs named like ``names`` (a
    glob) when its process was killed mid-write (SIGKILL, the out-of-memory killer: no ``except`` runs),
    once nothing has written to them for ``STALE_SECONDS``; a half-written decode cache can hold gigabytes."""
    stale = []
    for file in Path(folder).glob(f".{names}.*.tmp"):
        try:
            if time.time() - file.stat().st_mtime > STALE_SECONDS:
                file.unlink()
                stale.append(file.name)
        except FileNotFoundError:  # its own process finished or cleaned up meanwhile
            continue
    if stale:
        log.info("Removed %d temp file(s) an interrupted process left in %s.", len(stale), folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def save_torch(path: Path, obj: Any) -> None:
    import torch  # here, so that the modules `labelclean --help` reads import no torch

    atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: Path) -> Any:
    """Load a checkpoint without executing code from it (``weights_only=True``)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/untrusted files
        raise LabelcleanError(
            f"Cannot load {path}: {str(e).splitlines()[0]}. The file is corrupt or was not "
            f"written by labelclean; re-run 'labelclean fit'."
        ) from e


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelcleanError(
            f"{path.parent} is not a labelclean run directory (no {path.name}). "
            f"Pass the --output directory of a finished 'labelclean fit'."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabelcleanError(f"{path} is not valid JSON ({e}); re-run 'labelclean fit'.") from None


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_skipped(path: Path, skipped: list[tuple[str, str]]) -> None:
    """List the rows a fit left out; no file when none were."""
    if not skipped:
        path.unlink(missing_ok=True)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    write_text(path, buffer.getvalue())
