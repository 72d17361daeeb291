"""Reading the user's data: the image folder and its labels, from a labels CSV or from class folders.

Images are decoded and resized **once** into ``uint8`` rows of shape
``(n_samples, channels, size, size)`` (a fit stores them on disk: see :mod:`labelclean.cache`);
every epoch after that only indexes them.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LabelcleanError

PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "image", "image_path", "img")
LABEL_COLUMNS = ("label", "class", "target", "category", "y")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
IGNORED_NAMES = ("Thumbs.db", "desktop.ini", "__MACOSX", "@eaDir")  # what Windows, macOS zips and NAS boxes leave
MAX_LISTED = 3  # how many offending files an error message names
DECODE_CHUNK = 1024  # images decoded per round of threads: bounds the memory and the queued work

Progress = Callable[[int, int], None]
log = logging.getLogger("labelclean")


@dataclass
class LabeledImages:
    """The rows of a labels CSV (or the images of class folders) that point at readable images.

    Attributes
    ----------
    paths : list of str, (n_samples,)
        Image paths exactly as written in the CSV, or ``CLASS/IMAGE`` for class folders (relative to the image folder).
    files : list of Path, (n_samples,)
        The resolved files, all inside the image folder.
    labels : ndarray of int64, (n_samples,)
        Index of each row's given label in ``classes``.
    classes : list of str
        Class names as written in the CSV (or the folder names), numerically sorted when they are all integers.
    skipped : list of (path, reason)
        Rows dropped by ``skip_missing`` or ``dedupe``, and class folders' files without an image suffix.
    """

    paths: list[str]
    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]]


def detect_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], role: str,
                   csv_path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise LabelcleanError(
                f"{csv_path} has no column '{wanted}' (columns: {', '.join(columns)}). "
                f"Check the --{role}-column option."
            )
        return wanted
    by_lower = {c.strip().lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    raise LabelcleanError(
        f"{csv_path} has no {role} column (looked for {', '.join(candidates)}; found "
        f"{', '.join(columns)}). Name it with --{role}-column."
    )


def read_csv_table(csv_path: Path) -> pd.DataFrame:
    """Read a CSV as strings, exactly as written (no NaN conversion, BOM stripped, delimiter sniffed)."""
    if not csv_path.is_file():
        raise LabelcleanError(f"Labels file {csv_path} does not exist.")
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            head = f.read(64 * 1024)
    except UnicodeDecodeError:
        raise LabelcleanError(f"{csv_path} is not UTF-8 text; re-save it as UTF-8 CSV.") from None
    if not head.strip():
        raise LabelcleanError(f"{csv_path} is empty; it needs a header row and one row per image.")
    try:
        delimiter = csv.Sniffer().sniff(head.splitlines()[0], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    try:
        table = pd.read_csv(csv_path, sep=delimiter, dtype=str, keep_default_na=False,
                            encoding="utf-8-sig", skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise LabelcleanError(f"{csv_path} is not a readable CSV: {str(e).strip().splitlines()[-1]}") from None
    if table.empty:
        raise LabelcleanError(f"{csv_path} has a header but no rows; add one row per image.")
    table.attrs["delimiter"] = delimiter  # so a cleaned copy can be written the way it was read
    return table


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root``, refusing absolute paths, ``..`` and symlinks that escape it."""
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ValueError("absolute paths are not allowed; make it relative to the image folder")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ValueError("it points outside the image folder")
    return resolved


def sort_classes(names: Sequence[str]) -> list[str]:
    """Unique class names; integers sort as numbers ('2' before '10'), anything else as text."""
    unique = sorted(set(names))
    try:
        return sorted(unique, key=int)
    except ValueError:
        return unique


def _existing_files(images_dir: Path, labels_csv: Path, paths: list[str],
                    repeated: np.ndarray) -> tuple[list[Path], list[int], list[tuple[str, str]]]:
    """The files of the rows that are not ``repeated``: those that exist, their row indices, and the
    missing ones as (path, reason). A path that leaves the image folder is an error."""
    files: list[Path] = []
    kept: list[int] = []
    missing: list[tuple[str, str]] = []
    for i, p in enumerate(paths):
        if repeated[i]:
            continue
        try:
            f = resolve_inside(images_dir, p)
        except ValueError as e:
            raise LabelcleanError(f"{labels_csv} row {i + 2}: path '{p}' is refused: {e}.") from None
        if f.is_file():
            files.append(f)
            kept.append(i)
        else:
            missing.append((p, "file not found"))
    return files, kept, missing


def read_labels(
    images_dir: Path,
    labels_csv: Path | None = None,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    skip_missing: bool = False,
    dedupe: bool = False,
) -> LabeledImages:
    """Read and validate the labels of an image folder: from a labels CSV, or, when ``labels_csv``
    is None, from its class folders (:func:`read_class_folders`).

    ``skip_missing`` drops rows whose file does not exist and ``dedupe`` keeps only the first
    row of a repeated path; both record the dropped rows in ``skipped``.

    Raises
    ------
    LabelcleanError
        With the row number (or the folder) and the fix, for anything a user has to correct.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise LabelcleanError(f"Image folder {images_dir} does not exist or is not a folder.")
    if labels_csv is None:
        refuse_column_options(path_column, label_column, images_dir)
        paths, labels, ignored = read_class_folders(images_dir)
        return labeled_images(images_dir, paths, labels, class_folder_files(images_dir, paths), ignored)
    labels_csv = Path(labels_csv)
    table, path_col, label_col = csv_label_table(labels_csv, path_column, label_column)
    paths = table[path_col].str.strip().tolist()
    labels = table[label_col].str.strip().tolist()

    def row(i: int) -> int:  # 1-based line number in the file, header = line 1
        return i + 2

    for i, (p, y) in enumerate(zip(paths, labels)):
        if not p:
            raise LabelcleanError(f"{labels_csv} row {row(i)} has an empty path; fill it in or delete the row.")
        if not y:
            raise LabelcleanError(
                f"{labels_csv} row {row(i)} ('{p}') has an empty label; fill it in or delete the row."
            )
    duplicated = pd.Series(paths).duplicated(keep="first").to_numpy()
    if duplicated.any() and not dedupe:
        first = int(np.flatnonzero(duplicated)[0])
        raise LabelcleanError(
            f"{labels_csv} lists {int(duplicated.sum())} path(s) more than once (e.g. '{paths[first]}' "
            f"again on row {row(first)}); keep one row per image, or pass --dedupe to keep the first."
        )
    skipped = [(paths[i], "repeated path; the first row was kept") for i in np.flatnonzero(duplicated)]

    files, kept, missing = _existing_files(images_dir, labels_csv, paths, duplicated)
    if missing and not skip_missing:
        examples = ", ".join(f"'{p}'" for p, _ in missing[:MAX_LISTED])
        raise LabelcleanError(
            f"{labels_csv} has {len(paths):,} rows but {len(missing):,} path(s) do not exist under "
            f"{images_dir} (e.g. {examples}). Fix the paths or pass --skip-missing."
        )
    return labeled_images(labels_csv, [paths[i] for i in kept], [labels[i] for i in kept], files, skipped + missing)


def labeled_images(source: Path, paths: list[str], labels: list[str], files: list[Path],
                   skipped: list[tuple[str, str]]) -> LabeledImages:
    """The validated rows, their labels as class indices; ``source`` (the CSV or the image folder) names
    where a user fixes them."""
    classes = sort_classes(labels)
    if len(classes) < 2:
        raise LabelcleanError(
            f"{source} has only one class ('{classes[0] if classes else ''}'); label cleaning "
            f"needs at least two."
        )
    counts = pd.Series(labels).value_counts()
    singletons = counts.index[counts == 1].tolist()
    if singletons:
        log.warning("%d class(es) have a single image (e.g. '%s'); a lone sample cannot be checked "
                    "against others of its class.", len(singletons), singletons[0])
    index = {c: k for k, c in enumerate(classes)}
    return LabeledImages(paths=paths, files=files, labels=np.array([index[y] for y in labels], dtype=np.int64),
                         classes=classes, skipped=skipped)


def refuse_column_options(path_column: str | None, label_column: str | None, images_dir: Path) -> None:
    """Column options name CSV columns: with class folders (no CSV) they would do nothing."""
    given = [f"--{role}-column" for role, value in [("path", path_column), ("label", label_column)] if value]
    if given:
        raise LabelcleanError(f"{' and '.join(given)} {'names' if len(given) == 1 else 'name'} a column of a labels "
                              f"CSV, but none was given (the labels are the class folders of {images_dir}); drop "
                              f"{'it' if len(given) == 1 else 'them'} or give the CSV.")


def is_ignored(name: str) -> bool:
    """Hidden files and folders (.DS_Store, .ipynb_checkpoints, ._* resource forks) and the other
    files operating systems leave in folders of pictures; class folders and image folders skip them."""
    return name.startswith(".") or name in IGNORED_NAMES


def read_class_folders(images_dir: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The images of a class-folder tree (``images_dir/CLASS/IMAGE``, as torchvision's ``ImageFolder``
    reads it): their paths relative to ``images_dir`` (with ``/``), their labels (the folder names), and
    the files left out as (path, reason): those without an image suffix. Hidden and system files are
    ignored (:func:`is_ignored`).

    Raises
    ------
    LabelcleanError
        For a file at the top level, a folder inside a class folder, or a class folder without images.
    """
    entries = sorted(e for e in images_dir.iterdir() if not is_ignored(e.name))
    top_files = [e for e in entries if not e.is_dir()]
    folders = [e for e in entries if e.is_dir()]
    if top_files:
        raise LabelcleanError(top_level_file_message(images_dir, top_files, bool(folders)))
    if not folders:
        raise LabelcleanError(f"{images_dir} is empty; put one folder per class in it (e.g. "
                              f"{images_dir / 'cat'}/), or give a labels CSV.")
    paths: list[str] = []
    labels: list[str] = []
    ignored: list[tuple[str, str]] = []
    for folder in folders:
        images = []
        for entry in sorted(e for e in folder.iterdir() if not is_ignored(e.name)):
            if entry.is_dir():
                raise LabelcleanError(
                    f"{entry} is a folder inside the class folder '{folder.name}'; class folders hold images "
                    f"only, one level deep. Move its images into {folder}/ or into a class folder of their own.")
            relative = f"{folder.name}/{entry.name}"
            if entry.suffix.lower() in IMAGE_SUFFIXES:
                images.append(relative)
            else:
                ignored.append((relative, "not an image file (by its suffix)"))
        if not images:
            raise LabelcleanError(f"Class folder {folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}); "
                                  f"add its images or remove the folder.")
        paths += images
        labels += [folder.name] * len(images)
    if ignored:
        log.warning("Left out %d file(s) without an image suffix (e.g. '%s'); see skipped.csv in the run "
                    "directory.", len(ignored), ignored[0][0])
    return paths, labels, ignored


def top_level_file_message(images_dir: Path, files: list[Path], has_folders: bool) -> str:
    """Why a file at the top level of a class-folder tree is refused, and the fix."""
    name = files[0].name
    if files[0].suffix.lower() == ".csv":
        return (f"{images_dir} holds {name} but no labels CSV was given; to use it: labelclean fit {images_dir} "
                f"{files[0]}. Otherwise move it out: with class folders every file is an image in its class folder.")
    if not has_folders:
        return (f"{images_dir} holds images but no class folders (e.g. {name}); give a labels CSV "
                f"(labelclean fit {images_dir} labels.csv) or move each image into a folder named after its class.")
    return (f"{files[0]} is a file at the top level of {images_dir}, which holds class folders "
            f"({len(files)} such file(s)); move it into its class folder or out of {images_dir}.")


def csv_label_table(labels_csv: Path, path_column: str | None,
                    label_column: str | None) -> tuple[pd.DataFrame, str, str]:
    """A labels CSV as written (:func:`read_csv_table`) and its path and label columns, named or auto-detected."""
    table = read_csv_table(labels_csv)
    return (table, detect_column(list(table.columns), path_column, PATH_COLUMNS, "path", labels_csv),
            detect_column(list(table.columns), label_column, LABEL_COLUMNS, "label", labels_csv))


def class_folder_files(images_dir: Path, paths: list[str]) -> list[Path]:
    """The files of class-folder ``paths``; a link that leads out of ``images_dir`` is refused, as in a CSV."""
    files = []
    for p in paths:
        try:
            files.append(resolve_inside(images_dir, p))
        except ValueError as e:
            raise LabelcleanError(f"{images_dir / p} is refused: {e}; copy the image into its class folder.") from None
    return files


def read_label_table(source: Path, path_column: str | None = None,
                     label_column: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """The labels as a table of strings and its path and label columns: a labels CSV as written
    (:func:`read_csv_table`), or, for a folder, one ``path,label`` row per image of its class folders."""
    source = Path(source)
    if not source.is_dir():
        return csv_label_table(source, path_column, label_column)
    refuse_column_options(path_column, label_column, source)
    paths, labels, _ = read_class_folders(source)
    table = pd.DataFrame({"path": paths, "label": labels})
    table.attrs["delimiter"] = ","
    return table, "path", "label"


def to_rgb(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        scale = 257.0 if array.max() > 255 else 1.0
        image = Image.fromarray(np.clip(array / scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def decode_image(file: Path, size: int) -> np.ndarray:
    """Decode one image into an RGB ``uint8`` array of shape ``(3, size, size)``: its shorter side
    resized to ``size`` and the centre square kept, so the aspect ratio stays as pretrained networks
    and photos expect (a 640×480 photo loses 80 px at each side, never gets squashed).

    EXIF rotation is applied; JPEGs are downscaled while decoding (``draft``, to no less than
    ``size`` on either side) so large photos are never loaded at full size. Multi-frame files
    (animated GIF, multi-page TIFF) give their first frame, the one viewers show as the thumbnail.
    Pillow's decompression-bomb limit is an error.
    """
    with Image.open(file) as image:
        pixels = image.width * image.height
        if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
            raise ValueError(f"{image.width}x{image.height} pixels is over Pillow's decompression-bomb "
                             f"limit of {Image.MAX_IMAGE_PIXELS:,}; shrink the file")
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        image = image.resize((size, size), Image.Resampling.BILINEAR, box=centre_square(*image.size),
                             reducing_gap=3.0)
    return np.asarray(image).transpose(2, 0, 1)


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The box (left, upper, right, lower) of the largest square centred in a ``width`` × ``height`` image."""
    side = min(width, height)
    left, upper = (width - side) // 2, (height - side) // 2
    return left, upper, left + side, upper + side


def image_side(file: Path) -> int:
    """Shorter side of an image, read from its header only."""
    with Image.open(file) as image:
        return min(image.size)


def median_side(files: Sequence[Path], sample: int = 1000, seed: int = 0) -> int:
    """Median shorter side over (a sample of) the images; unreadable headers are ignored here."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), size=min(sample, len(files)), replace=False)
    sides = []
    for i in chosen:
        try:
            sides.append(image_side(files[i]))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
            continue
    if not sides:
        raise LabelcleanError(f"None of the images could be read (e.g. '{files[0]}'); check the image folder.")
    return int(np.median(sides))


def refuse_unreadable(bad: list[tuple[int, str]], shown: Sequence[str], what: str, fix: str) -> None:
    """One error naming the first unreadable images (``bad``: (index, reason)) and the fix; nothing when none are."""
    if bad:
        examples = "; ".join(f"'{shown[i]}': {why}" for i, why in bad[:MAX_LISTED])
        raise LabelcleanError(f"{len(bad):,} {what} cannot be read ({examples}). {fix}")


def without_rows(labeled: LabeledImages, bad: list[tuple[int, str]]) -> LabeledImages:
    """``labeled`` less the rows in ``bad`` (index, reason), which join its skipped rows."""
    keep = np.ones(len(labeled.paths), dtype=bool)
    keep[[i for i, _ in bad]] = False
    return LabeledImages(paths=[p for p, k in zip(labeled.paths, keep) if k],
                         files=[f for f, k in zip(labeled.files, keep) if k],
                         labels=labeled.labels[keep], classes=labeled.classes,
                         skipped=labeled.skipped + [(labeled.paths[i], why) for i, why in bad])


def decode_for_prediction(files: Sequence[Path], shown: Sequence[str], size: int, channels: int,
                          convert_channels: bool, run_dir: Path, progress: Progress | None = None) -> torch.Tensor:
    """Images to predict on, decoded in memory with the run's size and channels.

    Colour images for a run trained on grayscale are refused unless ``convert_channels``: the model
    never saw colour, and such images are often from the wrong folder. Gray images for a colour run
    are converted, since nothing is lost.
    """
    rgb, bad = decode_images(files, size, 3, progress=progress)
    refuse_unreadable(bad, shown, "input image(s)", "Fix or remove them.")
    colour = has_colour(rgb.numpy())
    if channels == 1 and colour.any() and not convert_channels:
        examples = ", ".join(f"'{shown[i]}'" for i in np.flatnonzero(colour)[:MAX_LISTED])
        raise LabelcleanError(
            f"{int(colour.sum())} of {len(files)} input image(s) are in colour (e.g. {examples}) but the run "
            f"in {run_dir} was trained on grayscale (1 channel); predict on grayscale images, or pass "
            f"--convert-channels to convert them."
        )
    return to_channels(rgb.numpy(), channels, colour)


def decode_images(
    files: Sequence[Path],
    size: int,
    channels: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Decode and resize every image once, in memory (see :func:`decoded_chunks`).

    A fit stores them on disk instead (:func:`labelclean.cache.decode_cached`); this is for
    prediction inputs, which are decoded once and not reused.

    Parameters
    ----------
    files : sequence of Path, (n_samples,)
    size : int
        Output height and width.
    channels : {1, 3} or None
        1 converts to grayscale, 3 to RGB; None picks 1 when every image is grayscale.
    progress : callable(done, total), optional

    Returns
    -------
    images : uint8 Tensor, (n_readable, channels, size, size)
    bad : list of (index, reason)
        Files that could not be decoded; they are left out of ``images``.
    """
    bad: list[tuple[int, str]] = []
    rgb = np.concatenate([np.empty((0, 3, size, size), np.uint8), *decoded_chunks(files, size, bad, progress)])
    colour = has_colour(rgb)
    if channels is None:
        channels = 3 if colour.any() else 1
    return to_channels(rgb, channels, colour), bad


def decoded_chunks(files: Sequence[Path], size: int, bad: list[tuple[int, str]],
                   progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Decode ``files`` in order, :data:`DECODE_CHUNK` at a time, and yield each chunk's readable
    images as RGB ``uint8`` rows ``(k, 3, size, size)``; unreadable files go to ``bad`` as
    ``(index, reason)`` instead.

    Threads, not processes: Pillow releases the GIL while it decodes and resizes, which is 93% of
    ``decode_image``'s time for 256-px PNGs and 62% for 160-px JPEGs (measured), so threads use
    the cores for photo-sized images. They share memory, so no pixels are pickled between processes,
    and start at once, while a worker process first imports torch: 4-10 s per pool with spawn or
    forkserver (the default on macOS and, from Python 3.14, on Linux) on a busy 2-core machine,
    where 2,000 JPEGs took 0.5 s with two threads and 0.4-0.7 s with two forked processes.
    """
    n = len(files)
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decode_image checks the limit
        for start in range(0, n, DECODE_CHUNK):
            rows = []
            decoded = pool.map(try_decode_image, files[start:start + DECODE_CHUNK], repeat(size))
            for i, image in enumerate(decoded, start=start):
                if isinstance(image, str):
                    bad.append((i, image))
                else:
                    rows.append(image)
                if progress is not None:
                    progress(i + 1, n)
            yield np.stack(rows) if rows else np.empty((0, 3, size, size), np.uint8)


def try_decode_image(file: Path, size: int) -> np.ndarray | str:
    """:func:`decode_image`, or the one-line reason why ``file`` cannot be decoded."""
    try:
        return decode_image(file, size)
    except Image.DecompressionBombError:
        return "over Pillow's decompression-bomb limit"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def has_colour(images: np.ndarray) -> np.ndarray:
    """Which RGB images ``(n, 3, h, w)`` have a pixel whose channels differ; the others are gray,
    so keeping one of their channels loses nothing.

    Returns
    -------
    ndarray of bool, (n,)
    """
    return ((images[:, 0] != images[:, 1]) | (images[:, 1] != images[:, 2])).any(axis=(1, 2))


def to_channels(images: np.ndarray, channels: int, colour: np.ndarray) -> torch.Tensor:
    """RGB ``uint8`` images ``(n, 3, h, w)`` as a tensor of 1 or 3 ``channels``.

    For 1, gray images keep their first channel and only the ``colour`` ones (see :func:`has_colour`)
    are turned into luma, so a large gray dataset never makes a float copy.
    """
    if channels == 1:
        rgb_to_luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
        gray = images[:, :1].copy()
        gray[colour] = np.rint((images[colour] * rgb_to_luma).sum(1, keepdims=True)).astype(np.uint8)
        images = gray
    return torch.from_numpy(np.ascontiguousarray(images))


def channel_stats(images: torch.Tensor, chunk_values: int = 1 << 24) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 image tensor, on the 0–1 scale.

    Exact, from each channel's histogram of its 256 values, counted a chunk of ``chunk_values``
    pixel values at a time on the tensor's own device: a memory-mapped tensor larger than RAM is
    only read, and no chunk is widened to floats.
    """
    histogram = torch.zeros(images.shape[1], 256, dtype=torch.int64, device=images.device)
    chunk = max(1, chunk_values // math.prod(images.shape[1:]))  # images per chunk
    for start in range(0, len(images), chunk):
        rows = images[start:start + chunk]
        for c in range(images.shape[1]):
            histogram[c] += torch.bincount(rows[:, c].flatten(), minlength=256)
    values = torch.arange(256, dtype=torch.float64, device=images.device) / 255
    counts = histogram.double()
    mean = counts @ values / counts.sum(1)
    std = (counts @ values.square() / counts.sum(1) - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def list_images(inputs: Sequence[Path], images_dir: Path | None = None,
                path_column: str | None = None) -> tuple[list[str], list[Path]]:
    """Expand prediction inputs (image files, folders, or CSVs with a path column) into files.

    Returns the paths as the user will see them in the output, and the files to read.
    CSV paths are resolved inside ``images_dir`` (default: the CSV's own folder).
    """
    shown: list[str] = []
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                           and not any(map(is_ignored, p.relative_to(item).parts)))  # ._x.png, .thumbnails/
            shown += [str(p) for p in found]
            files += found
        elif item.suffix.lower() == ".csv":
            table = read_csv_table(item)
            column = detect_column(list(table.columns), path_column, PATH_COLUMNS, "path", item)
            root = Path(images_dir) if images_dir is not None else item.parent
            for i, p in enumerate(table[column].str.strip()):
                try:
                    files.append(resolve_inside(root, p))
                except ValueError as e:
                    raise LabelcleanError(f"{item} row {i + 2}: path '{p}' is refused: {e}.") from None
                shown.append(p)
        elif item.is_file():
            shown.append(str(item))
            files.append(item)
        else:
            raise LabelcleanError(f"Input {item} does not exist; pass image files, folders or a CSV.")
    if not files:
        raise LabelcleanError(f"No images found in {', '.join(map(str, inputs))} "
                              f"(looked for {', '.join(IMAGE_SUFFIXES)}).")
    return shown, files
