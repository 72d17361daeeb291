"""Training on several processes with PyTorch's DistributedDataParallel (DDP), launched by torchrun.

``torchrun --nproc_per_node N -m labelclean fit ...`` (or ``labelclean fit --nproc N``, which runs
torchrun's agent in-process: :func:`launch`) starts N copies of the fit; each reads its place from
torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. They share the work this way:

- **training steps**: every process draws the same epoch plan (the same seeds) and computes its
  part of each global batch (:func:`part`); DDP averages the gradients, so the optimizer steps are
  those of one process on the whole batch, and every process takes the same number of them;
- **evaluation passes** (co-divide, warm-up agreement, final evaluation): every process computes
  the logits of its slice of the samples (:func:`shard`) and :func:`gather_rows` gives all of them
  to all, so every process fits the same GMM with the same seed and gets the same split — identical
  seeded fits on every process, instead of one fit sent around;
- **files**: only the main process (rank 0) writes; the others wait for its decoded images and map them.

Every helper is the identity (or a no-op) when there is a single process, so a fit without torchrun
runs exactly the code it always did.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel

from .errors import LabelcleanError

T = TypeVar("T")
# Collectives wait this long for the slowest process: the others wait at a barrier while the main
# process decodes every image once (minutes to hours on a large data set).
TIMEOUT = timedelta(hours=3)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank among the processes training together: 0 alone."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together: 1 alone."""
    return dist.get_world_size() if is_distributed() else 1


def started_processes() -> int:
    """How many processes torchrun started (its ``WORLD_SIZE``), known before they join: 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_processes() -> int:
    """How many of them run on this machine (they share its RAM)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes the run directory and reports progress: rank 0 (torchrun's ``RANK``
    before the processes join)."""
    return rank() == 0 if is_distributed() else os.environ.get("RANK", "0") == "0"


def init(device: torch.device) -> torch.device:
    """Join the other processes when torchrun started several (gloo on CPU, nccl on CUDA); return the
    device this process trains on: ``cuda:LOCAL_RANK`` with CUDA, else ``device``.

    Nothing to do for a single process; a second fit in the same processes reuses the group.
    """
    if started_processes() == 1:
        return device
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise LabelcleanError(f"Process {local_rank} on this machine has no GPU of its own: PyTorch sees "
                                  f"{torch.cuda.device_count()}. Start at most that many processes per machine.")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not is_distributed():
        # With CUDA, CPU tensors still go through gloo: the per-step stop flag then needs no GPU sync.
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        atexit.register(dist.destroy_process_group)
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def main_first(compute: Callable[[], T]) -> T:
    """``compute()`` on the main process, then on the others: they find what it wrote (the decoded
    images) instead of writing it again."""
    if is_main():
        result = compute()
        barrier()
        return result
    barrier()
    return compute()


def shard(n: int, process: int | None = None) -> range:
    """This process's (or ``process``'s) contiguous slice of ``range(n)``; the slices of all processes
    cover it once, the first ones a row longer when ``n`` does not divide evenly."""
    process = rank() if process is None else process
    size, extra = divmod(n, world_size())
    start = process * size + min(process, extra)
    return range(start, start + size + (process < extra))


def gather_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """All ``n`` rows from every process's :func:`shard` of them, in order, on every process."""
    if not is_distributed():
        return rows
    longest = len(shard(n, 0))
    padded = rows.new_zeros((longest, *rows.shape[1:]))
    padded[:len(rows)] = rows
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:len(shard(n, r))] for r, g in enumerate(gathered)])


def part(batch: torch.Tensor) -> torch.Tensor:
    """This process's rows of a global batch of sample indices: the batch split as evenly as possible.

    A batch with fewer rows than processes (the last, partial one of an epoch) repeats its rows until
    every process has one: a process cannot sit out a step, since DDP needs its gradients.
    """
    if not is_distributed() or len(batch) == 0:
        return batch
    if len(batch) < world_size():
        batch = batch[torch.arange(world_size(), device=batch.device) % len(batch)]
    return batch.tensor_split(world_size())[rank()]


def average(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the processes (the reported losses of a training pass)."""
    if not is_distributed():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world_size()


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set on any process, so that all stop at the same step (Ctrl-C); a CPU
    all-reduce (gloo), which does not wait for the GPU's queued work."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def seed_parts() -> tuple[str, ...]:
    """Added to a per-step seed so that each process draws its own augmentations: ``()`` alone."""
    return (f"rank {rank()}",) if is_distributed() else ()


def sync_buffers(net: nn.Module) -> None:
    """Give every process the main one's BatchNorm statistics before they are used (in eval mode);
    each process updates its own from its part of every batch."""
    if is_distributed():
        for buffer in net.buffers():
            dist.broadcast(buffer, 0)


class Replicated(DistributedDataParallel):
    """A DDP network whose state dict is that of the network it wraps, so that checkpoints, snapshots
    and ``model.pt`` read the same with any number of processes."""

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict, assign)


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` in DDP (its gradients averaged over the processes at every step); ``net`` alone."""
    if not is_distributed():
        return net
    return Replicated(net, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(net: nn.Module) -> nn.Module:
    """The network itself, for passes without gradients (no DDP collectives inside them)."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def launch(nproc: int, entrypoint: Callable[[list[str]], None], argv: list[str]) -> tuple[int, list[str]]:
    """Run ``entrypoint(argv)`` as ``nproc`` processes of this machine under torchrun's agent and
    return their exit status and the distinct errors they recorded (:func:`record_error`), so the
    caller reports each once instead of torchrun's traceback.

    Unlike torchrun, the agent leaves Ctrl-C to the processes: they are in this process group, so
    each gets every Ctrl-C once and they stop together at a step; this process waits for them. A
    third Ctrl-C ends them (SIGTERM, then SIGKILL after 30 s).
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          signals_to_handle="SIGTERM,SIGHUP,SIGQUIT")
    for noisy in ("torch.distributed.elastic", "torch.multiprocessing"):  # failures come back below
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    presses = 0

    def on_ctrl_c(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses == 3:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        elastic_launch(config, entrypoint)(argv)
        return 0, []
    except ChildFailedError as failed:
        failures = [failed.failures[r] for r in sorted(failed.failures)]
        recorded = [f.message["message"] for f in failures if isinstance(f.message, dict)]
        messages = list(dict.fromkeys(recorded)) or [f"process {f.rank} failed: {f.message}" for f in failures
                                                     if f.exitcode != 130 and not presses]
        return (130 if presses or any(f.exitcode == 130 for f in failures) else 1), messages
    except KeyboardInterrupt:
        return 130, []
    finally:
        signal.signal(signal.SIGINT, previous)


def record_error(message: str) -> bool:
    """Leave ``message`` for the agent that started this process (:func:`launch` or torchrun), which
    reports the errors of all processes once; False when no agent started it."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    Path(path).write_text(json.dumps({"message": {"message": message,
                                                   "extraInfo": {"timestamp": str(int(time.time()))}}}))
    return True
