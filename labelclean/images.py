"""The images a fit trains on: decoded once into the uint8 cache (or mapped from it), then placed
where training reads them fastest. ``fit`` and ``pretrain`` take them this way; ``predict`` decodes
its inputs in memory with the fit's size and channels (:func:`labelclean.data.decode_for_prediction`)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .cache import decode_cached
from .data import LabeledImages, refuse_unreadable, without_rows

log = logging.getLogger("labelclean")


def decode_listed(labeled: LabeledImages, size: int, channels: int | None, inputs: dict[str, Any], out: Path,
            progress: Any) -> tuple[np.ndarray, LabeledImages]:
    """Decode the images, or map those an earlier fit decoded into the cache folder (default: ``out``);
    refuse unreadable ones (or drop them with ``skip_bad``)."""
    cache_dir = inputs["cache_dir"]
    images, bad = decode_cached(labeled.files, size, channels, Path(cache_dir or out),
                                progress=progress and (lambda d, t: progress("decode", d, t)),
                                replace_older=cache_dir is None)
    if not inputs["skip_bad"]:
        refuse_unreadable(bad, labeled.paths, f"image(s) listed in {inputs['labels_csv'] or inputs['images_dir']}",
                          "Fix or remove them, or pass --skip-bad to leave them out.")
    if bad:
        log.warning("Left out %d unreadable image(s); see skipped.csv in the run directory.", len(bad))
    return images, without_rows(labeled, bad) if bad else labeled


def place_images(images: np.ndarray, device: torch.device, max_ram_gb: float | None) -> torch.Tensor:
    """Put the decoded uint8 images where training reads them fastest, reading the cache file once.

    On a GPU with room for them (under half of its free memory) they move there. Otherwise they are
    loaded into RAM (pinned, for fast copies to a GPU) when they fit under ``max_ram_gb``, by default
    half of the RAM, shared by the processes of this machine. Larger ones stay memory-mapped and each
    batch reads only its own rows from disk, so the data set may be larger than RAM.
    """
    tensor = torch.from_numpy(images)
    if device.type == "cuda" and images.nbytes < torch.cuda.mem_get_info(device)[0] // 2:
        return tensor.to(device)
    ram = max_ram_gb * 1e9 if max_ram_gb is not None else memory_size() / 2
    ram /= distributed.local_processes()  # each process of this machine loads its own copy
    if images.nbytes > ram:
        log.info("The decoded images (%.2f GB) are over the %.2f GB to load into RAM (--max-ram-gb); "
                 "batches are read from the memory-mapped file.", images.nbytes / 1e9, ram / 1e9)
        return tensor
    if device.type == "cuda":
        log.info("Images (%.1f GB) stay in CPU memory; batches are copied to the GPU.", images.nbytes / 1e9)
        return tensor.pin_memory()
    return tensor.clone()


def memory_size() -> float:
    """Bytes of RAM this process may use: the machine's, or its container's limit (cgroup v2) when
    that is lower; infinite where neither can be read."""
    sizes = [math.inf]
    with contextlib.suppress(AttributeError, ValueError, OSError):  # os.sysconf is POSIX-only
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ValueError, OSError):  # the file says 'max' when there is no limit
        sizes.append(int(Path("/sys/fs/cgroup/memory.max").read_text()))
    return min(sizes)
