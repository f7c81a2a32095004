"""Data parallelism under ``torchrun``: which rank this is, the process group, and the collectives.

``cfg.batch`` is the *global* batch, split evenly over the ranks. Every rank draws the same global batch
indices and the same global ``z`` (shared data order and latent generator) and keeps its slice, so the
union over ranks is exactly the single-process batch; the gradients are averaged over ranks before each
optimiser step. Everything else random (DiffAugment, GP interpolation, StyleGAN noise, classical
augmentation) runs on per-rank seeds. Rank 0 is the only writer of the run folder. A run may be resumed
on another number of processes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process' place in a ``torchrun`` job; rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the run (NCCL on CUDA, gloo on CPU) unless one is already up."""
    if not info.enabled or tdist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # metric hooks run on rank 0 only while the others wait in the next all-reduce: allow them time
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    try:
        yield
    finally:
        tdist.destroy_process_group()


def rank_seed(seed: int, rank: int, nimg: int = 0) -> int:
    """Rank 0 keeps ``seed``; other ranks (and any rank re-seeded on resume) get a derived one."""
    if rank == 0 and nimg == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, nimg]).generate_state(1, np.uint32)[0])


def average_gradients(module: nn.Module, info: DistInfo) -> None:
    """Average the gradients of ``module`` over the ranks in one flat all-reduce.

    Not ``DistributedDataParallel``: a GAN step runs D several times before one backward, freezes the
    other network and takes gradients of gradients (GP, R1, path length), all of which that wrapper's
    reducer refuses; the averaged gradient is the same.
    """
    if not info.enabled:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    tdist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view(p.shape))
        offset += n


def broadcast_from_rank0(modules: Iterable[nn.Module]) -> None:
    """Start every rank from rank 0's weights (they are seeded alike; this makes it a guarantee)."""
    with torch.no_grad():
        for module in modules:
            for t in [*module.parameters(), *module.buffers()]:
                tdist.broadcast(t.data, 0)


def gather_objects(obj, info: DistInfo) -> list:
    """``obj`` of every rank, in rank order (a collective: every rank must call it)."""
    out: list = [None] * info.world_size
    tdist.all_gather_object(out, obj)
    return out


def reduce_summary(summary: dict[str, float], info: DistInfo, device: torch.device,
                   extremes: dict[str, str]) -> dict[str, float]:
    """A tick summary over all ranks: means averaged; the keys of ``extremes`` reduced by "min"/"max"."""
    if not info.enabled:
        return summary
    ops = {k: tdist.ReduceOp.MIN if how == "min" else tdist.ReduceOp.MAX for k, how in extremes.items()}
    keys = [k for k in sorted(summary) if k not in ops]
    means = torch.tensor([summary[k] for k in keys], dtype=torch.float64, device=device)
    tdist.all_reduce(means)
    out = dict(zip(keys, (means / info.world_size).tolist(), strict=True))
    for k, op in ops.items():
        if k in summary:
            v = torch.tensor([summary[k]], dtype=torch.float64, device=device)
            tdist.all_reduce(v, op=op)
            out[k] = float(v)
    return out
