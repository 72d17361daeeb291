"""The decoded-image cache: a fit's images, decoded and resized once, in a memory-mapped file.

``decoded-<key>.u8`` holds the raw ``uint8`` rows ``(n, channels, size, size)`` of the readable
images; its sidecar ``decoded-<key>.json`` holds their shape and the unreadable files. The key
hashes everything the pixels depend on: each image's path, byte size and modification time, the
image size and the channel count asked for. The next fit on the same files (``--overwrite`` or
``--resume`` in the same run directory, or the same ``--cache-dir``) maps the file instead of
decoding again; a changed, added or removed image changes the key, and everything is decoded again
(in a run directory, the new cache replaces the old one; a ``--cache-dir`` keeps every data set's).

Both files are written to a temp file and renamed, the sidecar last, and a cache is used only
when its sidecar is readable and the data file has exactly the size the sidecar gives: an
interrupted or damaged cache is decoded again, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import DECODE_CHUNK, Progress, decoded_chunks, has_colour, to_channels
from .errors import LabelcleanError
from .files import atomic_write, remove_stale_temps, write_json

CACHE_FORMAT = 2  # part of the key: bump it when decoding changes, so that older caches are not reused

Shape = tuple[int, ...]  # (n_readable, channels, size, size)
Bad = list[tuple[int, str]]
log = logging.getLogger("labelclean")


def decode_cached(files: Sequence[Path], size: int, channels: int | None, cache_dir: Path,
                  progress: Progress | None = None, replace_older: bool = False) -> tuple[np.ndarray, Bad]:
    """The decoded images of ``files``, from ``cache_dir`` when an earlier fit left them there,
    else decoded (see :func:`labelclean.data.decode_images` for ``channels``) and stored there.

    ``replace_older``: ``cache_dir`` holds the images of one data set (a run directory), so newly
    decoded images replace the caches already there, which were made before the images changed.

    Returns
    -------
    images : uint8 ndarray, (n_readable, channels, size, size)
        Memory-mapped copy-on-write: torch can wrap it, and nothing is ever written back.
    bad : list of (index, reason)
        Files that could not be decoded; they are left out of ``images``.
    """
    stamp = files_stamp(files)
    # A resumed fit asks for the channel count that its first fit picked from the data; that
    # first fit's cache, made without asking, holds the very same pixels.
    candidates = [Path(cache_dir) / f"decoded-{cache_key(stamp, size, wanted)}.u8"
                  for wanted in dict.fromkeys([channels, None])]
    for data_file in candidates:
        cached = read_sidecar(data_file)
        if cached is not None and channels in (None, cached[0][1]):
            log.info("Reusing decoded images from %s.", data_file)
            return open_images(data_file, *cached)
    data_file = candidates[0]
    remove_stale_temps(data_file.parent, "decoded-*")  # --cache-dir may be a folder of the user's own
    try:
        shape, bad = write_cache(files, size, channels, data_file, progress)
    except OSError as e:
        raise LabelcleanError(f"Cannot write the decoded images to {data_file}: {e.strerror or e}. Free "
                              f"some space there, or pass --cache-dir with a folder on a larger disk.") from None
    log.info("Decoded %d images into %s (%.2f GB).", shape[0], data_file, math.prod(shape) / 1e9)
    if replace_older:
        remove_other_caches(data_file)
    return open_images(data_file, shape, bad)


def remove_other_caches(data_file: Path) -> None:
    """Delete the caches beside ``data_file`` (data file and sidecar)."""
    older = [f for f in data_file.parent.glob("decoded-*") if f.stem != data_file.stem]
    for file in older:
        file.unlink(missing_ok=True)
    if older:
        log.info("Removed %d decoded-image file(s) of earlier images from %s.", len(older), data_file.parent)


def files_stamp(files: Sequence[Path]) -> str:
    """Hash of each file's path, byte size and modification time: changes when any file does."""
    digest = hashlib.sha256()
    for file in files:
        stat = os.stat(file)
        digest.update(f"{os.path.abspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(stamp: str, size: int, channels: int | None) -> str:
    """Hash of everything the decoded pixels depend on; part of the cache's file name."""
    return hashlib.sha256(f"{CACHE_FORMAT} {stamp} {size} {channels}".encode()).hexdigest()[:24]


def open_images(data_file: Path, shape: Shape, bad: Bad) -> tuple[np.ndarray, Bad]:
    """Map a complete cache copy-on-write (see :func:`decode_cached`)."""
    if math.prod(shape) == 0:
        return np.empty(shape, np.uint8), bad  # an empty file cannot be memory-mapped
    return np.memmap(data_file, np.uint8, "c", shape=shape), bad


def read_sidecar(data_file: Path) -> tuple[Shape, Bad] | None:
    """Shape and unreadable files of a complete cache in ``data_file``; None when there is none
    or it cannot be trusted (with a warning: a sidecar that is missing, unreadable or disagrees
    with the data file's size means an interrupted write or a damaged file)."""
    if not data_file.exists():
        return None
    try:
        meta = json.loads(data_file.with_suffix(".json").read_text(encoding="utf-8"))
        shape: Shape = tuple(int(d) for d in meta["shape"])
        bad = [(int(i), str(why)) for i, why in meta["bad"]]
    except (OSError, ValueError, KeyError, TypeError):
        problem = "its sidecar is missing or unreadable"
    else:
        found = data_file.stat().st_size
        if len(shape) == 4 and found == math.prod(shape):
            return shape, bad
        problem = f"it holds {found:,} bytes, not the {math.prod(shape):,} its sidecar gives"
    log.warning("Ignoring the decoded images in %s (%s); decoding them again.", data_file, problem)
    return None


def write_cache(files: Sequence[Path], size: int, channels: int | None, data_file: Path,
                progress: Progress | None) -> tuple[Shape, Bad]:
    """Decode ``files`` into ``data_file``, then write its sidecar; each file atomically.

    Rows are written as they are decoded, so memory holds one chunk at a time. When the channel
    count is left to the data, they are written as RGB and shrunk to one channel at the end if
    every image turned out gray.
    """
    bad: Bad = []

    def write_rows(f: io.BufferedRandom) -> tuple[int, int]:
        count, colour = 0, False
        for rgb in decoded_chunks(files, size, bad, progress):
            in_colour = has_colour(rgb)
            colour = colour or bool(in_colour.any())
            f.write(to_channels(rgb, channels or 3, in_colour).numpy())
            count += len(rgb)
        if channels is None and not colour:
            keep_first_channel(f, count, size)
            return count, 1
        return count, channels or 3

    count, kept = atomic_write(data_file, write_rows)
    shape = (count, kept, size, size)
    write_json(data_file.with_suffix(".json"), {"shape": shape, "dtype": "uint8", "bad": bad})
    return shape, bad


def keep_first_channel(f: io.BufferedRandom, count: int, size: int) -> None:
    """Rewrite the ``count`` RGB rows in ``f`` as their first channel, in place (for gray images,
    whose three channels are equal).

    Row ``i`` moves from byte ``3·i·row`` down to ``i·row``: a pass from the front never
    overwrites a row it has not read yet, so no second file is needed.
    """
    row = size * size
    for start in range(0, count, DECODE_CHUNK):
        rows = min(DECODE_CHUNK, count - start)
        f.seek(3 * row * start)
        rgb = np.frombuffer(f.read(3 * row * rows), np.uint8).reshape(rows, 3, size, size)
        f.seek(row * start)
        f.write(np.ascontiguousarray(rgb[:, 0]))
    f.truncate(row * count)
