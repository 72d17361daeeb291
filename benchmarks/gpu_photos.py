"""Photo-size GPU benchmark: 224-px photos side by side with the official Clothing1M pipeline,
32-px images side by side with the official CIFAR code, and a decode cache larger than memory.

Sections (each has a time budget, so that the whole call fits one ~8-minute device call; a part
that does not fit is skipped with the reason in the JSON):

* ``photos_224`` — ``--photos`` synthetic colour JPEGs of mixed sizes and aspect ratios (320×240 to
  800×600, portrait and landscape), 14 classes, written to disk and decoded once into labelclean's
  cache (``decode``: seconds and images/s, apart from training). Then W=1 warm-up and D DivideMix
  epochs on the first ``--num-batches × --batch-size`` of them with labelclean's GPU fit settings
  (bf16 autocast, channels-last, images on the device, random-resized crops) for ResNet-50 and
  ResNet-18, and, with ``--official-clothing DIR``, the official ``Train_clothing1M.py`` (fp32,
  PIL decoding in ``--official-workers`` loader workers, as upstream) on the same files, laid out as
  its file lists expect, with the same batch size and number of batches. Both sides train on fixed
  labeled sets of the same size (``--labeled-share`` of the images; the GMM still runs, its split
  is replaced), so a DivideMix epoch is the same work on both sides. Reported per side: warm-up and
  DivideMix epoch seconds, images/s, mean GPU utilisation (``nvidia-smi`` sampled every 200 ms),
  and for labelclean ``mfu`` = FLOPs of the DivideMix epoch (counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on one real step, one warm-up step and one evaluation
  batch) / seconds / the GPU's dense bf16 peak (:data:`PEAK_BF16`), and ``supervised_mfu``, the same
  for a plain cross-entropy epoch of the same network, images and precision (labelclean's warm-up
  epoch: every image once, batches of 2B) — the ceiling of any DivideMix implementation.
  Keys: ``photos_224.ratio_epoch`` (official ÷ labelclean ResNet-50 DivideMix epoch),
  ``photos_224.mfu``, ``photos_224.supervised_mfu``.
* ``cifar_32`` — 50,000 random 32-px images: with ``--official-cifar PATH/run_official.py`` the
  official CIFAR code first (W=1, D=1), then labelclean (PreAct ResNet-18, batch 64) with its labeled
  sets fixed to the sizes the official GMMs picked: ``cifar_32.ratio_epoch_like_for_like``. With
  ``--compile`` (on by default) twice more, W=1 and D=2 each (the first DivideMix epoch compiles, the
  last is compared; ``compile_seconds`` = first − last; ``torch_compile``: graphs compiled, graph breaks
  by reason, graphs CUDA graphs skipped): ``labelclean_compiled_step``, the whole
  DivideMix step compiled as ``labelclean fit --compile`` does (``dynamic=False``, CUDA graphs through
  ``mode="reduce-overhead"``, full-size batches, λ and λu as device tensors), key
  ``cifar_32.compiled_step_speedup`` (eager ÷ compiled DivideMix epoch seconds); and
  ``labelclean_compiled``, the networks alone ``torch.compile(mode="reduce-overhead")``'d (what
  ``benchmarks/speed.py epochs --compile reduce-overhead`` does).
* ``larger_than_memory`` — the ResNet-50 fit of ``photos_224`` with the decoded images left in the
  memory-mapped cache file (labelclean's placement for images over ``--max-ram-gb``, here 0, and
  kept off the GPU), the file's pages dropped from the OS cache before every epoch
  (``posix_fadvise(DONTNEED)``), so each epoch reads its batches from disk; GPU utilisation shows
  whether the GPU starves; projected to a Clothing1M-size set (1M images).

Patches applied to the official Clothing1M code (``--official-clothing DIR`` holds the upstream
``Train_clothing1M.py`` and ``dataloader_clothing1M.py``, LiJunnan1992/DivideMix @ d9d3058, MIT
licence; they are not part of this project). Each is an exact string replacement that must match
the number of times given in :data:`CLOTHING_PATCHES`, or the run stops; the list and the diff go
into the JSON:

1. ``torch.cuda.set_device(args.gpuid)`` only when CUDA is available (the CPU test);
2. options ``--num_workers`` (upstream hard-codes 5) and ``--arch`` (upstream: resnet50);
3. ``unlabeled_train_iter.next()`` → ``next(unlabeled_train_iter)`` (2×; gone from DataLoader iterators);
4. ``models.resnet50(pretrained=True)`` → ``getattr(models, args.arch)(pretrained=False)`` and the
   classifier's input width read from the network: nothing can be downloaded, and both sides start
   from random weights;
5. ``num_workers=5`` → ``args.num_workers``;
6. ``import _photo_timing`` (written beside it: ``.cuda()`` no-ops without CUDA, timing, fixed split);
7. the split ``pred = (prob > args.p_threshold)`` (2×) → a fixed labeled set of the size asked for
   (``_photo_timing.fixed``), after the GMM has run;
8. timing wrappers around ``warmup``, ``train``, ``eval_train``, ``val`` and ``loader.run`` (CUDA
   synchronised at each boundary), and the epoch number noted at the top of the epoch loop;
9. stop after the epoch loop, before the final test (which loads the best validation checkpoint).

The data: the photos in ``DIR/cNN/NNNNNN.jpg`` with ``labels.csv`` (labelclean) and the upstream's
lists, whose keys start with ``images/`` as Clothing1M's do: ``noisy_label_kv.txt`` and
``noisy_train_key_list.txt`` (the fit's images), ``clean_label_kv.txt``, ``clean_val_key_list.txt``
and ``clean_test_key_list.txt`` (``--official-val`` images; the validation pass runs every epoch
upstream and is left out of the epoch times, like the test pass). With balanced classes and
``num_batches × batch_size`` listed images, its per-epoch samples (``num_batches × B`` to evaluate,
twice that for warm-up, both capped per class) are exactly the fit's images, as on labelclean's side.

Without a GPU everything runs on the CPU at toy sizes (``mfu`` and utilisation are then None; about
5 minutes on 2 cores)::

    python benchmarks/gpu_photos.py --photos 56 --num-batches 2 --batch-size 4 --archs resnet18 \\
        --official-clothing DIR --official-workers 1 --official-val 8 --cifar-images 128 --no-compile \\
        --official-cifar PATH/run_official.py --cifar-test 16 --cifar-budget 600 --out /tmp/gpu-photos.json

On one GPU (an H200: about 8 minutes; the procedure for the device machine, from the repository
root): put the upstream files and the official CIFAR harness in a git-ignored folder that travels
with the working tree::

    mkdir -p .official/clothing && echo /.official/ >> "$(git rev-parse --git-path info/exclude)"
    G=<DivideMix mirror>/.git   # the fetched github:LiJunnan1992/DivideMix
    for f in Train_clothing1M.py dataloader_clothing1M.py; do
        git --git-dir=$G show HEAD:$f > .official/clothing/$f; done
    cp -r <official-dividemix harness> .official/cifar      # run_official.py, upstream/, shim/, …

then run, carrying ``.official`` (timeout_s 560)::

    PYTHONPATH=$PWD python3 benchmarks/gpu_photos.py --official-clothing .official/clothing \\
        --official-cifar .official/cifar/run_official.py --out $OUT/gpu-photos-cuda.json

Results go to ``benchmarks/results/gpu-photos-<device>.json`` (or ``--out``) and a table is printed.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any
from unittest import mock

import numpy as np
import torch
import typer
from common import RESULTS, record, rows
from PIL import Image
from rich.console import Console
from rich.table import Table
from speed import (
    compile_counters,
    compile_seconds,
    fixed_settings,
    run_official,
    slug,
    synthetic_images,
    time_epochs,
    training_data,
)
from torch.utils.flop_counter import FlopCounterMode

from labelclean import dividemix
from labelclean.api import _training_data
from labelclean.config import Decisions, FitConfig, Settings, settings
from labelclean.data import LabeledImages, read_labels
from labelclean.files import write_json
from labelclean.images import decode_listed
from labelclean.models import build_model
from labelclean.training import cpu_threads, per_step, place, precision, predict_logits, resolve_device

console = Console(stderr=True, highlight=False, soft_wrap=True)
CLASSES = 14  # Clothing1M's
GRAIN = 6  # ± grey levels of per-pixel noise on the synthetic photos
SIZES = [(320, 240), (400, 300), (480, 360), (640, 480), (800, 600), (240, 320), (360, 480), (600, 800),
         (500, 500), (720, 480)]  # (width, height) of the synthetic photos, in turn
# Dense bf16 tensor-core peak (FLOP/s, no sparsity) by device name, most specific first.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("B200", 2250e12),
             ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12), ("RTX 4090", 165e12)]
CLOTHING_FILES = ("Train_clothing1M.py", "dataloader_clothing1M.py")
T = "Train_clothing1M.py"
# (file, old, new, times it must match); the docstring says why each is there.
CLOTHING_PATCHES = [
    (T, "torch.cuda.set_device(args.gpuid)\n",
     "if torch.cuda.is_available(): torch.cuda.set_device(args.gpuid)  # [timing]\n", 1),
    (T, "args = parser.parse_args()\n",
     ("parser.add_argument('--num_workers', default=5, type=int)  # [timing]\n"
     "parser.add_argument('--arch', default='resnet50')  # [timing]\nargs = parser.parse_args()\n"), 1),
    (T, "unlabeled_train_iter.next()", "next(unlabeled_train_iter)", 2),
    (T, "models.resnet50(pretrained=True)", "getattr(models, args.arch)(pretrained=False)  # [timing]", 1),
    (T, "nn.Linear(2048,args.num_class)", "nn.Linear(model.fc.in_features,args.num_class)", 1),
    (T, "num_workers=5,", "num_workers=args.num_workers,", 1),
    (T, "import dataloader_clothing1M as dataloader\n",
     "import dataloader_clothing1M as dataloader\nimport _photo_timing  # [timing]\n", 1),
    (T, "pred1 = (prob1 > args.p_threshold)", "pred1 = _photo_timing.fixed(prob1 > args.p_threshold, 1)", 1),
    (T, "pred2 = (prob2 > args.p_threshold)", "pred2 = _photo_timing.fixed(prob2 > args.p_threshold, 0)", 1),
    (T, "print('| Building net')\n",
     ("loader.run = _photo_timing.timed_loader(loader.run)  # [timing]\n"
     "warmup, train, eval_train, val = (_photo_timing.timed(n, f) for n, f in  # [timing]\n"
     "    [('warmup', warmup), ('train', train), ('eval_train', eval_train), ('val', val)])\n"
     "print('| Building net')\n"), 1),
    (T, "for epoch in range(args.num_epochs+1):   \n",
     "for epoch in range(args.num_epochs+1):   \n    _photo_timing.EPOCH[0] = epoch  # [timing]\n", 1),
    (T, "test_loader = loader.run('test')\n",
     "sys.exit(0)  # [timing] no final test\ntest_loader = loader.run('test')\n", 1),
]
TIMING_MODULE = '''"""Imported by the patched Train_clothing1M.py (benchmarks/gpu_photos.py): .cuda() no-ops without
CUDA; each timed phase appended to $PHOTO_TIMING_FILE as a JSON line; the fixed labeled sets."""
import json, os, time
import numpy as np
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
EPOCH = [0]
LABELED = [int(n) for n in os.environ.get("PHOTO_LABELED", "").split(",") if n]


def record(phase, seconds, **extra):
    with open(os.environ["PHOTO_TIMING_FILE"], "a") as f:
        f.write(json.dumps({"epoch": EPOCH[0], "phase": phase, "seconds": seconds, **extra}) + "\\n")


def timed(name, fn):
    def wrapper(*args, **kwargs):
        if CUDA: torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if CUDA: torch.cuda.synchronize()
        record(name, time.perf_counter() - start)
        return out
    return wrapper


def timed_loader(run):
    def wrapper(mode, *args, **kwargs):
        start = time.perf_counter()
        out = run(mode, *args, **kwargs)
        sizes = [len(out[0].dataset), len(out[1].dataset)] if mode == "train" else [len(out.dataset)]
        record("loader_" + mode, time.perf_counter() - start, sizes=sizes)
        return out
    return wrapper


def fixed(pred, k):
    """The labeled set of network k+1 (the split made by its peer): LABELED[k] samples, else as given."""
    if not LABELED:
        return pred
    out = np.zeros(len(pred), dtype=bool)
    out[np.random.RandomState(k).permutation(len(pred))[:LABELED[k]]] = True
    return out
'''


# ---------------------------------------------------------------------------------------------
# The photos, on disk as both pipelines read them.


def photo(index: int, label: int) -> Image.Image:
    """A smooth random colour field of one of :data:`SIZES`, tinted by its class, with fine grain, so
    that its JPEG has about a photo's size (20-110 KB at 90% quality, 57 KB on average) and decoding
    costs what it costs for a photo."""
    rng = np.random.default_rng(index)
    width, height = SIZES[index % len(SIZES)]
    field = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.uint16)
    smooth = Image.fromarray(((field.astype(np.uint16) + tint) // 2).astype(np.uint8))
    pixels = np.asarray(smooth.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-GRAIN, GRAIN + 1, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def write_photos(folder: Path, count: int, val: int) -> tuple[Path, list[str], np.ndarray]:
    """``count`` JPEGs in ``folder/cNN/``, label ``i % 14``, with ``labels.csv``; their paths and labels."""
    labels = np.arange(count) % CLASSES
    paths = [f"c{label:02d}/{i:06d}.jpg" for i, label in enumerate(labels)]
    for label in range(CLASSES):
        (folder / f"c{label:02d}").mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        photo(i, int(labels[i])).save(folder / paths[i], quality=90)

    with ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        list(pool.map(save, range(count)))
    labels_csv = folder / "labels.csv"
    labels_csv.write_text("path,label\n" + "".join(f"{p},c{y:02d}\n" for p, y in zip(paths, labels)))
    return labels_csv, paths, labels


def write_clothing_lists(folder: Path, paths: list[str], labels: np.ndarray, fit: int, val: int) -> None:
    """The upstream's lists for the first ``fit`` photos (training) and the first ``val`` (validation, test);
    its keys start with 'images/', which it cuts off before joining them to the root."""
    def lines(idx: range, with_label: bool) -> str:
        return "".join(f"images/{paths[i]}" + (f" {labels[i]}" if with_label else "") + "\n" for i in idx)

    val = min(val, len(paths))
    (folder / "noisy_label_kv.txt").write_text(lines(range(fit), True))
    (folder / "noisy_train_key_list.txt").write_text(lines(range(fit), False))
    (folder / "clean_label_kv.txt").write_text(lines(range(val), True))
    for name in ("clean_val_key_list.txt", "clean_test_key_list.txt"):
        (folder / name).write_text(lines(range(val), False))


# ---------------------------------------------------------------------------------------------
# Measuring: GPU utilisation, FLOPs, fixed splits.


@contextlib.contextmanager
def gpu_utilisation(device: torch.device) -> Iterator[dict[str, Any]]:
    """Mean and samples of ``nvidia-smi``'s utilisation.gpu (%) every 200 ms during the block; None off CUDA."""
    found: dict[str, Any] = {"gpu_utilisation": None}
    smi = shutil.which("nvidia-smi") if device.type == "cuda" else None
    if smi is None:
        yield found
        return
    index = str(device.index if device.index is not None else torch.cuda.current_device())
    sampler = subprocess.Popen([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200",
                                "-i", index], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield found
    finally:
        sampler.terminate()
        out, _ = sampler.communicate(timeout=10)
        samples = [int(v) for v in out.split() if v.strip().isdigit()]
        found.update(gpu_utilisation=float(np.mean(samples)) if samples else None, utilisation_samples=len(samples))


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak from :data:`PEAK_BF16`; None on the CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def counted(work: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def step_flops(data: Any, cfg: FitConfig) -> dict[str, float]:
    """FLOPs of one real DivideMix step (B labeled + B unlabeled), one warm-up step (2B) and one
    evaluation pass, per image where the epoch's count scales with the images."""
    nets = [place(build_model(cfg.arch, data.images.shape[1], data.num_classes, cfg.image_size), data.device)
            for _ in range(2)]
    optimizer = torch.optim.SGD(nets[0].parameters(), lr=1e-9)
    b = cfg.batch_size
    idx = torch.arange(2 * b, device=data.device)
    clean = torch.ones(b, device=data.device)
    scalars = per_step([0.7, 1.0], data.device)  # λ and λu
    train = counted(lambda: dividemix.train_step(nets[0], nets[1], optimizer, data, idx[:b], clean, idx[b:],
                                                 scalars[0], scalars[1], cfg))
    warm = counted(lambda: dividemix.warmup_epoch(nets[0], optimizer, rows(data, idx.cpu()), cfg))
    evaluated = counted(lambda: predict_logits(nets[0], rows(data, idx.cpu()), cfg.eval_batch_size))
    return {"dividemix_step": train, "warmup_per_image": warm / (2 * b), "eval_per_image": evaluated / (2 * b)}


def epoch_flops(flops: dict[str, float], images: int, steps: int) -> dict[str, float]:
    """FLOPs of both networks' warm-up epoch and of a DivideMix epoch (2 evaluation passes + ``steps``)."""
    return {"warmup_epoch": 2 * images * flops["warmup_per_image"],
            "dividemix_epoch": 2 * images * flops["eval_per_image"] + steps * flops["dividemix_step"]}


@contextlib.contextmanager
def fixed_split(labeled: list[int] | None, seed: int = 0) -> Iterator[list[float]]:
    """Replace the split of every co-divide by a fixed labeled set of ``labeled[k]`` samples for
    network k (the one that trains on it, its peer's split; None: keep the real split). The GMM
    still runs; the seconds of each (scikit-learn, on the host) are appended to the yielded list,
    which tells whether a GMM on the device would pay."""
    real, calls, seconds = dividemix.split_clean_prob, itertools.count(), []

    def split(loss: np.ndarray, *args: Any, **kwargs: Any) -> tuple[np.ndarray, bool]:
        start = time.perf_counter()
        result = real(loss, *args, **kwargs)
        seconds.append(time.perf_counter() - start)
        if labeled is None:
            return result
        trained = 1 - next(calls) % 2  # co_divide runs net 1's GMM first; its split trains net 2
        prob = np.zeros(len(loss))
        prob[np.random.default_rng(seed + trained).permutation(len(loss))[:labeled[trained]]] = 1.0
        return prob, True

    with mock.patch.object(dividemix, "split_clean_prob", split):
        yield seconds


@contextlib.contextmanager
def cold_cache_each_epoch(data_file: Path) -> Iterator[None]:
    """Drop ``data_file``'s pages from the OS page cache before every epoch, so each reads from disk."""
    real = dividemix.one_epoch

    def one_epoch(*args: Any, **kwargs: Any) -> Any:
        with open(data_file, "rb") as f:
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return real(*args, **kwargs)

    with mock.patch.object(dividemix, "one_epoch", one_epoch):
        yield


# ---------------------------------------------------------------------------------------------
# labelclean's side.


def fit_config(arch: str, image_size: int, batch_size: int, dividemix_epochs: int, device: torch.device) -> Settings:
    """labelclean's fit settings for a timing: W=1 warm-up epoch (the official Clothing1M code's),
    D DivideMix epochs, the paper's fixed settings (no adaptive rules, which would change the work)."""
    return fixed_settings(device, epochs=1 + dividemix_epochs, warmup=1, batch_size=batch_size,
                          image_size=image_size, arch=arch, device=device.type, auto=False)


def summarise(epochs: list[dict[str, Any]], images: int, flops: dict[str, float] | None,
              peak: float | None) -> dict[str, Any]:
    """The last epoch of each kind: seconds, images/s, and with FLOPs the MFU of each."""
    warm = [e for e in epochs if e["phase"] == "warm-up"][-1]
    train = [e for e in epochs if e["phase"] == "train"][-1]
    out = {"epochs": epochs, "warmup_epoch_s": warm["seconds"], "dividemix_epoch_s": train["seconds"],
           "warmup_images_per_s": images / warm["seconds"], "dividemix_images_per_s": images / train["seconds"],
           "labeled": train["labeled"], "dividemix_steps": train["steps"]}
    if flops is not None:
        work = epoch_flops(flops, images, train["steps"])
        out.update(flops=flops, epoch_flops=work,
                   mfu=peak and work["dividemix_epoch"] / train["seconds"] / peak,
                   supervised_mfu=peak and work["warmup_epoch"] / warm["seconds"] / peak)
    return out


def labelclean_fit(data: Any, cfg: FitConfig, labeled: list[int] | None, peak: float | None,
                   compile_mode: str | None = None, count_flops: bool = True) -> dict[str, Any]:
    """W + D epochs of labelclean's own loop on ``data`` with fixed labeled sets; figures of the last of each kind."""
    flops = step_flops(data, cfg) if count_flops else None
    with gpu_utilisation(data.device) as utilisation, fixed_split(labeled) as gmm:
        start = time.perf_counter()
        epochs = time_epochs(data, cfg, compile_mode)
        seconds = time.perf_counter() - start
    figures = summarise(epochs, len(data), flops, peak)
    gmm_s = float(np.median(gmm)) if gmm else None
    return {"arch": cfg.arch, "compile": compile_mode, "seconds": seconds, **utilisation, **figures,
            "gmm_s": gmm_s, "gmm_share_of_dividemix_epoch": gmm_s and 2 * gmm_s / figures["dividemix_epoch_s"]}


def decode(folder: Path, labels_csv: Path, size: int, cache: Path) -> tuple[np.ndarray, LabeledImages, dict[str, Any]]:
    """Every photo decoded once into labelclean's cache, as a fit does; the seconds apart from training."""
    labeled = read_labels(folder, labels_csv)
    inputs = {"cache_dir": str(cache), "skip_bad": False, "labels_csv": str(labels_csv)}
    start = time.perf_counter()
    images, labeled = decode_listed(labeled, size, None, inputs, cache, None)
    seconds = time.perf_counter() - start
    return images, labeled, {"seconds": seconds, "images_per_s": len(images) / seconds, "images": len(images),
                             "cache_gb": images.nbytes / 1e9, "threads": min(32, os.cpu_count() or 1)}


def first(images: np.ndarray, labeled: LabeledImages, n: int) -> tuple[np.ndarray, LabeledImages]:
    return images[:n], replace(labeled, paths=labeled.paths[:n], files=labeled.files[:n], labels=labeled.labels[:n])


# ---------------------------------------------------------------------------------------------
# The official Clothing1M pipeline.


def patch_clothing(upstream: Path, code: Path) -> str:
    """The upstream files with :data:`CLOTHING_PATCHES` and the timing module, in ``code``; the unified diff."""
    missing = [name for name in CLOTHING_FILES if not (upstream / name).is_file()]
    if missing:
        raise typer.BadParameter(f"{upstream} lacks {', '.join(missing)}: --official-clothing takes the folder "
                                 f"holding the upstream {' and '.join(CLOTHING_FILES)}.")
    texts = {name: (upstream / name).read_text() for name in CLOTHING_FILES}
    patched = dict(texts)
    for name, old, new, times in CLOTHING_PATCHES:
        found = patched[name].count(old)
        if found != times:
            raise SystemExit(f"Patch target {old!r} is found {found} times in {upstream / name}, not {times}: "
                             f"this is not the upstream version the patches were written for (d9d3058).")
        patched[name] = patched[name].replace(old, new)
    (code / "checkpoint").mkdir(parents=True, exist_ok=True)
    (code / "_photo_timing.py").write_text(TIMING_MODULE)
    diff = []
    for name in CLOTHING_FILES:
        (code / name).write_text(patched[name])
        diff += difflib.unified_diff(texts[name].splitlines(True), patched[name].splitlines(True),
                                     f"upstream/{name}", f"patched/{name}")
    return "".join(diff)


def official_epochs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Epoch figures from the timed phases: a warm-up epoch is both networks' loaders and warm-up passes
    (epoch 0); DivideMix epoch e is the evaluation passes and GMMs at the end of epoch e−1 (its co-divide)
    and the loaders and training passes of epoch e; the validation pass is left out, as on labelclean's side."""
    def seconds(epoch: int, phases: tuple[str, ...]) -> float:
        return sum(r["seconds"] for r in records if r["epoch"] == epoch and r["phase"] in phases)

    done = {r["epoch"] for r in records if r["phase"] == "train"}
    out: dict[str, Any] = {"phases": records}
    if any(r["phase"] == "warmup" for r in records):
        out["warmup_epoch_s"] = seconds(0, ("loader_warmup", "warmup"))
    if done:
        last = max(done)
        out["dividemix_epoch_s"] = (seconds(last - 1, ("loader_eval_train", "eval_train"))
                                    + seconds(last, ("loader_train", "train")))
        out["labeled"] = [r["sizes"][0] for r in records if r["epoch"] == last and r["phase"] == "loader_train"]
    return out


def run_official_clothing(upstream: Path, root: Path, work: Path, arch: str, batch_size: int, num_batches: int,
                          dividemix_epochs: int, workers: int, labeled: list[int], timeout: float,
                          device: torch.device) -> dict[str, Any]:
    """Run the patched upstream on the photos in ``root``: its epoch 0 is the warm-up, then D DivideMix
    epochs; the timed phases it recorded (also when stopped by ``timeout``)."""
    code = work / "clothing_code"
    diff = patch_clothing(upstream, code)
    timing = work / "clothing_timing.jsonl"
    timing.unlink(missing_ok=True)
    command = [sys.executable, "Train_clothing1M.py", "--data_path", str(root.resolve()), "--batch_size",
               str(batch_size), "--num_batches", str(num_batches), "--num_epochs", str(dividemix_epochs),
               "--num_workers", str(workers), "--arch", arch, "--num_class", str(CLASSES)]
    env = {**os.environ, "PHOTO_TIMING_FILE": str(timing), "PHOTO_LABELED": ",".join(map(str, labeled)),
           "PYTHONUNBUFFERED": "1"}
    log = work / "clothing_train.log"
    with gpu_utilisation(device) as utilisation, open(log, "w") as out:
        start = time.perf_counter()
        try:
            code_rc: int | str = subprocess.run(command, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                timeout=max(timeout, 1), check=False).returncode
        except subprocess.TimeoutExpired:
            code_rc = "timeout"
        seconds = time.perf_counter() - start
    records = [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []
    result = {"command": " ".join(command), "exit": code_rc, "seconds": seconds, "workers": workers, "arch": arch,
              "precision": "fp32", **utilisation, **official_epochs(records), "patches_diff": diff}
    if code_rc != 0:
        result["log_tail"] = log.read_text()[-3000:]
    return result


# ---------------------------------------------------------------------------------------------
# The sections.


class Budget:
    """Seconds a section may take; a part is skipped once they are spent."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def skipped(self, needs: float = 0) -> dict[str, str] | None:
        """A note when fewer than ``needs`` seconds are left (a part that cannot be stopped midway)."""
        left = self.left()
        return {"skipped": f"{max(left, 0):.0f} s of the section's budget left, {needs:.0f} s needed"} \
            if left <= needs else None


def ratio(official: dict[str, Any] | None, ours: dict[str, Any] | None, key: str) -> float | None:
    """How many times faster labelclean is (official seconds ÷ labelclean seconds), when both measured ``key``."""
    if not official or not ours or key not in official or key not in ours:
        return None
    return official[key] / ours[key]


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def photos_section(o: dict[str, Any], work: Path, dev: torch.device, peak: float | None,
                   fits: bool = True) -> dict[str, Any]:
    """The photos written and decoded; with ``fits``, the side by side on them."""
    budget = Budget(o["photos_budget"])
    fit_n = o["num_batches"] * o["batch_size"]
    if fit_n > o["photos"]:
        raise typer.BadParameter(f"--num-batches × --batch-size = {fit_n} is more than --photos {o['photos']}.")
    folder = work / "photos"
    start = time.perf_counter()
    labels_csv, paths, labels = write_photos(folder, o["photos"], o["official_val"])
    out: dict[str, Any] = {"photos": o["photos"], "classes": CLASSES, "photo_sizes": SIZES,
                           "write_seconds": time.perf_counter() - start, "fit_images": fit_n,
                           "batch_size": o["batch_size"], "num_batches": o["num_batches"],
                           "image_size": o["image_size"]}
    console.print(f"photos_224: decoding {o['photos']:,} JPEGs into the cache…")
    images, labeled, out["decode"] = decode(folder, labels_csv, o["image_size"], work / "cache")
    sub_images, sub_labeled = first(images, labeled, fit_n)
    out["labeled_sets"] = sizes = [round(o["labeled_share"] * fit_n)] * 2
    out["labelclean"] = {}
    for arch in o["archs"] if fits else []:
        if (skip := budget.skipped(o["part_needs"])) is not None:
            out["labelclean"][arch] = skip
            continue
        console.print(f"photos_224: labelclean, {arch}, {fit_n:,} images…")
        cfg = fit_config(arch, o["image_size"], o["batch_size"], o["dividemix_epochs"], dev)
        data, _ = _training_data(sub_images, sub_labeled, cfg, dev, None)
        fit = labelclean_fit(data, cfg, sizes, peak)
        out["labelclean"][arch] = {"images_on": str(data.images.device), **fit, "projected_fit_of_all_photos":
                                   projected_fit(fit, fit_n, o["photos"], o["batch_size"], o["labeled_share"])}
        del data
        release(dev)
    if fits and o["official_clothing"] is not None:
        write_clothing_lists(folder, paths, labels, fit_n, o["official_val"])
        console.print(f"photos_224: the official Clothing1M pipeline, {o['archs'][0]}, within {budget.left():.0f} s…")
        out["official"] = run_official_clothing(o["official_clothing"], folder, work, o["archs"][0], o["batch_size"],
                                                o["num_batches"], o["dividemix_epochs"], o["official_workers"],
                                                sizes, budget.left(), dev)
        for kind in ("warmup", "dividemix"):
            if f"{kind}_epoch_s" in out["official"]:
                out["official"][f"{kind}_images_per_s"] = fit_n / out["official"][f"{kind}_epoch_s"]
    main = out["labelclean"].get(o["archs"][0], {})
    if "flops" in main:  # the official step: 6B images forward without gradients, 2B trained (λu = 0 upstream)
        b, flops = o["batch_size"], main["flops"]
        out["dividemix_step_flops"] = {"labelclean": flops["dividemix_step"], "official": 6 * b * flops[
            "eval_per_image"] + 2 * b * flops["warmup_per_image"]}
    out.update(ratio_epoch=ratio(out.get("official"), main, "dividemix_epoch_s"),
               ratio_warmup_epoch=ratio(out.get("official"), main, "warmup_epoch_s"),
               mfu=main.get("mfu"), supervised_mfu=main.get("supervised_mfu"))
    return out


def larger_than_memory_section(o: dict[str, Any], work: Path, dev: torch.device, peak: float | None,
                               in_memory: dict[str, Any] | None) -> dict[str, Any]:
    """The ResNet-50 photo fit again, its images read from the memory-mapped cache file, cold each epoch."""
    budget = Budget(o["ltm_budget"])
    fit_n, arch = o["num_batches"] * o["batch_size"], o["archs"][0]
    images, labeled, _ = decode(work / "photos", work / "photos" / "labels.csv", o["image_size"], work / "cache")
    sub_images, sub_labeled = first(images, labeled, fit_n)
    cfg = fit_config(arch, o["image_size"], o["batch_size"], o["dividemix_epochs"], dev)
    with mock.patch("torch.cuda.mem_get_info", return_value=(0, 0)):  # as for a set larger than the GPU
        data, _ = _training_data(sub_images, sub_labeled, cfg, dev, max_ram_gb=0.0)
    if (skip := budget.skipped(o["part_needs"])) is not None:
        return skip
    console.print(f"larger_than_memory: {arch}, {fit_n:,} images read from the mapped cache, cold each epoch…")
    with cold_cache_each_epoch(next((work / "cache").glob("decoded-*.u8"))):
        fit = labelclean_fit(data, cfg, [round(o["labeled_share"] * fit_n)] * 2, peak, count_flops=False)
    return {"images_on": "memory-mapped file, page cache dropped before each epoch", "arch": arch, **fit,
            "slowdown_vs_in_memory": ratio(fit, (in_memory or {}).get("labelclean", {}).get(arch), "dividemix_epoch_s"),
            "projected_1M": {**projected_fit(fit, fit_n, 1_000_000, o["batch_size"], o["labeled_share"]),
                             "cache_gb": 1e6 * 3 * o["image_size"] ** 2 / 1e9}}


def projected_fit(fit: dict[str, Any], measured: int, images: int, batch_size: int, share: float) -> dict[str, Any]:
    """A whole fit of ``images`` from epochs measured on ``measured`` images (time linear in the images,
    the same labeled share): labelclean's planned epochs for that size, the adaptive warm-up at its longest."""
    scale = images / measured
    plan = settings(FitConfig(batch_size=batch_size), Decisions(n_samples=images, median_side=224, device="cuda"))
    warm, divide = fit["warmup_epoch_s"] * scale, fit["dividemix_epoch_s"] * scale
    return {"images": images, "warmup_epoch_s": warm, "dividemix_epoch_s": divide, "planned_epochs": plan.epochs,
            "planned_warmup_at_most": plan.warmup, "labeled_share": share,
            "run_hours": (plan.warmup * warm + (plan.epochs - plan.warmup) * divide) / 3600}


def cifar_section(o: dict[str, Any], dev: torch.device, peak: float | None) -> dict[str, Any]:
    """The official CIFAR code first, then labelclean with labeled sets of the sizes its GMMs picked."""
    budget, n = Budget(o["cifar_budget"]), o["cifar_images"]
    cfg = fit_config("preact_resnet18", 32, 64, 1, dev)
    out: dict[str, Any] = {"images": n, "batch_size": cfg.batch_size, "arch": cfg.arch}
    sizes = [n // 2, n // 2]
    if o["official_cifar"] is not None:
        console.print(f"cifar_32: the official CIFAR code on {n:,} images…")
        try:
            out["official"] = run_official(o["official_cifar"], n, o["cifar_test"], cfg, o["official_workers"],
                                           max(0.6 * budget.left(), 30))
            sizes = out["official"]["dividemix_labeled_sizes"]
        except SystemExit as failed:  # a crash or timeout: labelclean's figures still count
            out["official"] = {"failed": str(failed)[-2000:]}
    out["labeled_sets"] = sizes
    data = training_data(*synthetic_images(n, 3, 32, 10), cfg, dev)
    runs = [("labelclean", None, cfg, o["part_needs"])]
    if o["compile_"]:  # the whole step (fit --compile), then the networks alone; 2 DivideMix epochs: compile, then time
        runs += [("labelclean_compiled_step", None, replace(cfg, epochs=3, compile_step=True), o["compile_needs"]),
                 ("labelclean_compiled", "reduce-overhead", replace(cfg, epochs=3), o["compile_needs"])]
    for key, mode, run_cfg, needs in runs:
        if (skip := budget.skipped(needs)) is not None:
            out[key] = skip
            continue
        console.print(f"cifar_32: {key}…")
        try:
            compile_counters(clear=True)
            out[key] = labelclean_fit(data, run_cfg, sizes, peak, compile_mode=mode,
                                      count_flops=key == "labelclean")
            out[key].update(compile_seconds=compile_seconds(out[key]["epochs"]), torch_compile=compile_counters())
        except Exception as failed:  # noqa: BLE001 - a compile failure is a finding, not the end of the run
            out[key] = {"failed": f"{type(failed).__name__}: {str(failed)[-1500:]}"}
    official = out.get("official", {})
    official = {"dividemix_epoch_s": official["dividemix_epoch_s"]} if "dividemix_epoch_s" in official else None
    out.update(ratio_epoch_like_for_like=ratio(official, out.get("labelclean"), "dividemix_epoch_s"),
               ratio_epoch_like_for_like_compiled_step=ratio(official, out.get("labelclean_compiled_step"),
                                                             "dividemix_epoch_s"),
               ratio_epoch_like_for_like_compiled=ratio(official, out.get("labelclean_compiled"), "dividemix_epoch_s"),
               compiled_step_speedup=ratio(out.get("labelclean"), out.get("labelclean_compiled_step"),
                                           "dividemix_epoch_s"))
    return out


# ---------------------------------------------------------------------------------------------
# The command.


def print_table(result: dict[str, Any]) -> None:
    table = Table(title=f"DivideMix on {result['machine']['device']} ({result['precision']} for labelclean; "
                        f"the official code in fp32): seconds per epoch, equal labeled sets on both sides")
    for column in ("section", "figure", "labelclean", "official", "labelclean is"):
        table.add_column(column, justify="left" if column in ("section", "figure") else "right")

    def cell(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value:,.3g}{unit}" if isinstance(value, float) else str(value)

    photos = result.get("photos_224", {})
    official = photos.get("official", {})
    for arch, fit in photos.get("labelclean", {}).items():
        same = arch == result["settings"]["archs"][0]
        for name, key in (("warm-up epoch s", "warmup_epoch_s"), ("DivideMix epoch s", "dividemix_epoch_s")):
            table.add_row("photos_224", f"{arch} {name}", cell(fit.get(key)), cell(official.get(key)) if same else "-",
                          cell(ratio(official, fit, key), "×") if same else "-")
        table.add_row("photos_224", f"{arch} fit of all {photos['photos']:,} photos, hours (projected)",
                      cell(fit.get("projected_fit_of_all_photos", {}).get("run_hours")), "-", "")
        table.add_row("photos_224", f"{arch} mfu / supervised mfu / GPU %",
                      " / ".join(cell(fit.get(key)) for key in ("mfu", "supervised_mfu", "gpu_utilisation")),
                      cell(official.get("gpu_utilisation")) if same else "-", "")
    if "decode" in photos:
        table.add_row("photos_224", "decode into the cache, images/s", cell(photos["decode"]["images_per_s"]), "-", "")
    cifar = result.get("cifar_32", {})
    for key in ("labelclean", "labelclean_compiled_step", "labelclean_compiled"):
        if key in cifar:
            official_s = cifar.get("official", {}).get("dividemix_epoch_s")
            table.add_row("cifar_32", f"{key} DivideMix epoch s", cell(cifar[key].get("dividemix_epoch_s")),
                          cell(official_s), cell(cifar.get("ratio_epoch_like_for_like" + key[10:]), "×"))
    if "gmm_s" in cifar.get("labelclean", {}):
        table.add_row("cifar_32", "one GMM on the host, s / share of a DivideMix epoch (2 GMMs)",
                      f"{cell(cifar['labelclean']['gmm_s'])} / {cell(cifar['labelclean']['gmm_share_of_dividemix_epoch'])}",
                      "-", "")
    if "compile_seconds" in cifar.get("labelclean_compiled_step", {}):
        table.add_row("cifar_32", "compiled step: compilation s / eager ÷ compiled epoch",
                      f"{cell(cifar['labelclean_compiled_step']['compile_seconds'])} / "
                      f"{cell(cifar.get('compiled_step_speedup'), '×')}", "-", "")
    big = result.get("larger_than_memory", {})
    if "projected_1M" in big:
        table.add_row("larger_than_memory", "DivideMix epoch s (mapped, cold) / GPU %",
                      f"{cell(big['dividemix_epoch_s'])} / {cell(big.get('gpu_utilisation'))}", "-",
                      cell(big.get("slowdown_vs_in_memory"), "× the in-memory epoch"))
        table.add_row("larger_than_memory", "projected 1M-image run, hours", cell(big["projected_1M"]["run_hours"]),
                      "-", "")
    Console(width=160).print(table)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
SECTIONS = ("photos_224", "cifar_32", "larger_than_memory")


@app.command()
def main(
    photos: Annotated[int, typer.Option(min=CLASSES, help="Synthetic JPEGs written and decoded.")] = 20_000,
    num_batches: Annotated[int, typer.Option(min=1, help="Batches per epoch on both sides (the upstream's "
                                             "--num_batches); the fit uses the first num_batches × B photos.")] = 200,
    batch_size: Annotated[int, typer.Option(min=2, help="B (Clothing1M's: 32).")] = 32,
    image_size: Annotated[int, typer.Option(min=8, help="labelclean's side in px (official: 224).")] = 224,
    archs: Annotated[str, typer.Option(help="labelclean's networks; the first is compared.")] = "resnet50,resnet18",
    dividemix_epochs: Annotated[int, typer.Option(min=1, help="D: DivideMix epochs after the 1 warm-up epoch.")] = 1,
    labeled_share: Annotated[float, typer.Option(min=0.01, max=1.0, help="Fixed labeled sets' share.")] = 0.5,
    official_clothing: Annotated[Path | None, typer.Option(help="Folder with the upstream Train_clothing1M.py and "
                                                           "dataloader_clothing1M.py.")] = None,
    official_workers: Annotated[int, typer.Option(min=0, help="The official loaders' workers (upstream: 5).")] = 5,
    official_val: Annotated[int, typer.Option(min=1, help="Its validation images (not timed).")] = 64,
    photos_budget: Annotated[float, typer.Option(help="Seconds for photos_224.")] = 230,
    cifar_images: Annotated[int, typer.Option(min=128, help="32-px images of cifar_32.")] = 50_000,
    official_cifar: Annotated[Path | None, typer.Option(help="The official CIFAR harness, run_official.py.")] = None,
    cifar_test: Annotated[int, typer.Option(min=1, help="Its test images (not timed).")] = 1000,
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="Also time in cifar_32 the step "
                                           "compiled as fit --compile does, then the networks compiled "
                                           "(mode='reduce-overhead').")] = True,
    cifar_budget: Annotated[float, typer.Option(help="Seconds for cifar_32.")] = 200,
    ltm_budget: Annotated[float, typer.Option(help="Seconds for larger_than_memory.")] = 60,
    part_needs: Annotated[float, typer.Option(help="Seconds a section must have left to start a fit.")] = 20,
    compile_needs: Annotated[float, typer.Option(help="Seconds cifar_32 must have left to start each compiled "
                                                 "fit (its compilation cannot be stopped).")] = 100,
    sections: Annotated[str, typer.Option(help="Comma-separated: " + ", ".join(SECTIONS) + ".")] = ",".join(SECTIONS),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    work: Annotated[Path | None, typer.Option(help="Work folder (kept); default: a temp folder, deleted.")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: results/gpu-photos-<device>.json).")] = None,
) -> None:
    """Photos at 224 px and 32-px images side by side with the official DivideMix code; a mapped cache."""
    o = {**locals(), "archs": [a.strip() for a in archs.split(",") if a.strip()]}
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    if unknown := set(chosen) - set(SECTIONS):
        raise typer.BadParameter(f"Unknown section(s) {', '.join(sorted(unknown))}; pick from {', '.join(SECTIONS)}.")
    if not o["archs"]:
        raise typer.BadParameter("--archs names no network; e.g. --archs resnet50,resnet18.")
    dev = resolve_device(device)
    torch.set_num_threads(cpu_threads(dev))
    peak = peak_flops(dev)
    result: dict[str, Any] = {"benchmark": "gpu photos", **record(dev),
                              "precision": precision(dev), "peak_bf16_flops": peak,
                              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in o.items()},
                              "clothing_patches": [{"file": f, "old": a, "new": b, "times": t}
                                                   for f, a, b, t in CLOTHING_PATCHES]}
    started, path = time.perf_counter(), out or RESULTS / f"gpu-photos-{slug(result['machine']['device'])}.json"

    def save(section: str, figures: dict[str, Any]) -> None:  # after each section: a run stopped later keeps it
        result[section], result["seconds"] = figures, time.perf_counter() - started
        write_json(path, result)

    with contextlib.ExitStack() as stack:
        folder = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_photos_")))
        if "photos_224" in chosen or "larger_than_memory" in chosen:
            save("photos_224", photos_section(o, folder, dev, peak, fits="photos_224" in chosen))
        if "cifar_32" in chosen:
            save("cifar_32", cifar_section(o, dev, peak))
        if "larger_than_memory" in chosen:
            save("larger_than_memory", larger_than_memory_section(o, folder, dev, peak, result.get("photos_224")))
    print_table(result)


if __name__ == "__main__":
    app()
