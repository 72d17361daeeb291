"""Writing a cleaned dataset as class folders, ``DIR/LABEL/IMAGE``: the layout ``labelclean fit DIR`` and
torchvision's ``ImageFolder`` read.

Each image is a *hard link* to its original where the file system allows it (same disk, a file system with
links), else a copy. A hard link is a second name for the same file: it takes no space, nothing about the
original changes, and the cleaned set keeps working when the originals are moved or deleted. A symbolic link
would break then, and is not followed the same way by every tool, so none is written. One caveat of hard links:
a program that edits an image *in place* inside the cleaned set edits the original too (most editors and
converters write a new file instead).

Everything is written into a temporary folder next to ``DIR`` and renamed to ``DIR`` at the end: an error or an
interruption leaves no half-written folder behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from .data import LABEL_COLUMNS, MAX_LISTED, PATH_COLUMNS, detect_column, resolve_inside
from .errors import LabelcleanError
from .files import _umask, write_text
from .review import CleanedLabels

log = logging.getLogger("labelclean")
LINKED, COPIED = "hard links", "copies"


def write_cleaned_folders(cleaned: CleanedLabels, data: dict[str, Any], target: Path,
                          changes: bool = True) -> tuple[str, Path | None]:
    """Write ``cleaned`` as class folders under ``target`` (:func:`write_class_folders`) and, with ``changes``,
    its change log next to them (``DIR.changes.csv``). ``data`` says how the labels were read, as a run's
    config.json records it: ``images_dir``, ``labels`` ('csv' or 'class folders'), and optionally
    ``path_column``, ``label_column`` (None: auto-detected) and ``skip_missing``. Returns how the images
    were placed and the change log's path."""
    columns = list(cleaned.table.columns)
    placed = write_class_folders(
        cleaned.table, Path(data["images_dir"]), target,
        path_column=detect_column(columns, data.get("path_column"), PATH_COLUMNS, "path", target),
        label_column=detect_column(columns, data.get("label_column"), LABEL_COLUMNS, "label", target),
        skip_missing=data.get("skip_missing", False), inside_images=data.get("labels") != "class folders")
    if not changes:
        return placed, None
    log_file = Path(target).with_name(Path(target).name + ".changes.csv")
    write_text(log_file, cleaned.changes.to_csv(index=False))
    return placed, log_file


def write_class_folders(table: pd.DataFrame, images_dir: Path, target: Path, *, path_column: str,
                        label_column: str, skip_missing: bool = False, inside_images: bool = False) -> str:
    """Write one folder per label of ``table`` under ``target`` (which must not exist, or be empty), with
    each row's image from ``images_dir`` in it; a path listed twice keeps its first row. A missing image is
    an error, or, with ``skip_missing`` (as the fit was told), left out with a warning. ``target`` may be
    inside ``images_dir`` only with ``inside_images`` (not in a class-folder tree: it would read as a class).
    Returns how the images were placed: ``'hard links'`` or ``'copies'``."""
    images_dir, target = Path(images_dir), Path(target)
    check_target(target, None if inside_images else images_dir)
    rows = pd.DataFrame({"path": table[path_column].str.strip(), "label": table[label_column].str.strip()})
    rows = rows.drop_duplicates("path", keep="first")
    for label in rows["label"].unique():
        check_folder_name(label)
    sources = [resolve_image(images_dir, p) for p in rows["path"]]
    missing = [p for p, f in zip(rows["path"], sources) if not f.is_file()]
    if missing and not skip_missing:
        examples = ", ".join(f"'{p}'" for p in missing[:MAX_LISTED])
        raise LabelcleanError(f"{len(missing):,} of {len(rows):,} images do not exist under {images_dir} (e.g. "
                              f"{examples}); their paths must be relative to that folder (apply: give it with --images-dir), "
                              f"nothing was written.")
    if missing:
        log.warning("Left out %d image(s) that do not exist under %s (e.g. '%s').", len(missing), images_dir,
                    missing[0])
    found = [f.is_file() for f in sources]
    rows, sources = rows[found], [f for f, ok in zip(sources, found) if ok]
    names = file_names(rows["path"].tolist(), rows["label"].tolist())
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        placed = place_files(sources, names, building)
        os.chmod(building, 0o777 & ~_umask())  # mkdtemp makes the folder owner-only
        if target.exists():
            target.rmdir()  # empty, as checked
        os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return placed


def check_target(target: Path, class_tree: Path | None) -> None:
    """Refuse a target that holds anything, or one inside ``class_tree`` (it would read as one more class)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LabelcleanError(f"{target} already exists and is not an empty folder; give a new folder for the "
                              f"class folders (nothing was written).")
    if class_tree is not None and target.resolve().is_relative_to(class_tree.resolve()):
        raise LabelcleanError(f"{target} is inside the class folders of {class_tree}, where it would read as one "
                              f"more class; write the class folders somewhere else (nothing was written).")


def check_folder_name(label: str) -> None:
    """A label must be usable as one folder name, one that reads back as a class (not hidden)."""
    bad = [c for c in '/\\\0' if c in label]
    if not label or label in (".", "..") or label.startswith(".") or bad:
        why = f"it contains {bad[0]!r}" if bad else "it is empty or starts with '.'"
        raise LabelcleanError(f"The label '{label}' cannot be a folder name ({why}); rename that class in the "
                              f"labels, or write a labels CSV with -o instead (nothing was written).")


def resolve_image(images_dir: Path, path: str) -> Path:
    try:
        return resolve_inside(images_dir, path)
    except ValueError as e:
        raise LabelcleanError(f"Path '{path}' is refused: {e} (nothing was written).") from None


def file_names(paths: list[str], labels: list[str]) -> list[str]:
    """``LABEL/NAME`` for each image: its own file name, or, where two images of a label share one (say
    ``cat/1.png`` relabeled to dog beside ``dog/1.png``), the whole path with ``__`` for ``/``."""
    names = [f"{label}/{Path(p).name}" for p, label in zip(paths, labels)]
    counts = pd.Series([n.casefold() for n in names]).value_counts()  # case-insensitive file systems too
    names = [f"{label}/{p.replace('/', '__')}" if counts[n.casefold()] > 1 else n
             for n, p, label in zip(names, paths, labels)]
    clashes = pd.Series([n.casefold() for n in names]).duplicated(keep=False)
    if clashes.any():
        examples = ", ".join(f"'{p}'" for p in pd.Series(paths)[clashes.to_numpy()][:MAX_LISTED])
        raise LabelcleanError(f"Images {examples} would get the same file name in their class folder; rename "
                              f"one of them (nothing was written).")
    return names


def place_files(sources: list[Path], names: list[str], folder: Path) -> str:
    """Hard-link each source to ``folder/name``, or copy all (from the first failure on) where the file
    system cannot link them; returns which of the two was done."""
    placed = LINKED
    for source, name in zip(sources, names):
        destination = folder / name
        destination.parent.mkdir(exist_ok=True)
        if placed == LINKED:
            try:
                os.link(source, destination)
                continue
            except OSError as e:  # another file system (EXDEV), or one without hard links
                log.debug("Cannot hard-link %s (%s); copying the images instead.", source, e)
                placed = COPIED
        shutil.copy2(source, destination)
    return placed
