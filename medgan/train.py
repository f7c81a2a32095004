"""The one GAN trainer: ``run_training(cfg) -> run_dir`` and ``medgan train``.

The loop is model-agnostic: it knows ``G``, ``D`` (built by ``MODELS[cfg.model.name]``), a loss object
(``medgan.losses.build_loss``) that composes them, and the DiffAugment pipe. DCGAN, LSGAN, WGAN(-GP),
hinge, StyleGAN2 and SPADE all run through it; ``--gan NAME`` picks a ``GANS`` entry (model + loss +
config overrides).

Counting. One *iteration* is ``loss.n_critic`` D steps, each on a fresh real batch, then one G step.
``kimg`` counts real images shown to D (``batch * n_critic`` per iteration), as StyleGAN2-ADA counts
images shown to D; the G_ema half-life (``ema_kimg``) is in the same unit.

Data. The whole training split is loaded once as a joint tensor ``[N, C + K, H, W]`` (image, then the
{-1, +1} one-hot mask) on the device (float16 on CUDA: the one-hot is exact and the images are stored in
float16 anyway). Batches follow epoch permutations drawn from a dedicated generator, so the exact data
order is part of the checkpoint.

Run folder (the contract every later tool reads)::

    config.json           {"config": TrainConfig, "config_hash", "dataset": {...}, "torch", "device", ...}
    status.json           {"status": running|finished|diverged|failed, "reason", "kimg"}
    stats.jsonl           one line per tick: kimg, every loss term, D_real/D_fake, grad norms, img/s, memory
    samples-<kimg>.png    G_ema on fixed z: image and coloured mask side by side
    checkpoint-last.pt    G, D, G_ema, optimisers, RNGs, data order, counters (torch.load(weights_only=True))
    metric-<name>.jsonl   one line per evaluation of METRIC_HOOKS[name]
    checkpoint-best-<name>.pt   the checkpoint with the lowest value of that metric so far

Several processes: ``torchrun --nproc_per_node N -m medgan.cli train ...`` (or the ``medgan`` script) runs
data parallel (NCCL on GPUs, gloo on CPU); ``batch`` stays the global batch, rank 0 alone writes the run
folder, and a run may be resumed on another number of processes (see ``DistInfo``).

Divergence (NaN/Inf in a loss or a parameter, or D saturated for a whole tick) ends the run with
``status: diverged`` and returns normally, so a sweep never sees an exception for a bad trial; any
other exception marks ``failed`` and is re-raised. Bad input (unknown knob value, WGAN clip with GP,
resolution mismatch, broken checkpoint, resuming with another config, an existing run folder) is one
clear error raised before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.cli import UserError
from medgan.config import ConfigError, TrainConfig, apply_overrides, replace
from medgan.data.prepared import SPLITS, load_prepared, split_joint, to_joint, write_json
from medgan.io import atomic_torch_save, atomic_write

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "config_hash", "G", "D", "G_ema", "opt_G", "opt_D", "rng", "data", "step", "nimg")
# Fields that may change when a run is resumed: they do not change what is being trained.
RESUME_FREE_KEYS = ("out", "kimg", "data", "device", "compile", "tick_kimg", "snapshot_kimg", "metric_kimg", "metrics",
                    "metric_features", "metric_n", "grid")


class CheckpointError(UserError):
    """A checkpoint is missing, empty, corrupt or belongs to another configuration."""


class Diverged(Exception):
    """A loss or metric hook may raise it to end the run as ``status: diverged`` (``run_training`` returns)."""


# ---------------------------------------------------------------------------------------------
# configuration helpers
# ---------------------------------------------------------------------------------------------
def apply_gan(cfg: TrainConfig, name: str) -> TrainConfig:
    """``cfg`` with ``GANS[name]`` applied: its model, its loss, then its config overrides."""
    from medgan.models import GANS

    try:
        spec = GANS[name]
    except KeyError as e:
        raise ConfigError(f"--gan: {e.args[0]}") from None
    cfg = replace(cfg, gan=name, model=replace(cfg.model, name=spec.model), loss=replace(cfg.loss, name=spec.loss))
    return apply_overrides(cfg, dict(spec.overrides)) if spec.overrides else cfg


def make_config(
    *,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    gan: str | None = None,
    kimg: float | None = None,
    batch: int | None = None,
    overrides: list[str] | dict[str, Any] = (),
    resume: bool = False,
) -> TrainConfig:
    """The config ``medgan train`` builds: GANS[gan], then --kimg/--batch, then every ``--set``.

    With ``resume`` and an existing run, the run's stored config is the base, so ``--resume`` alone
    continues a run; any option given on top must leave the training config unchanged.
    """
    stored = Path(out) / "config.json"
    if resume and stored.is_file():
        cfg = load_run_config(out)
        if gan is not None and gan != cfg.gan:
            cfg = apply_gan(cfg, gan)
    else:
        cfg = apply_gan(TrainConfig(), gan or "dcgan")
    changes: dict[str, Any] = {"out": str(out)}
    if data is not None:
        changes["data"] = str(Path(data).resolve())
    if kimg is not None:
        changes["kimg"] = kimg
    if batch is not None:
        changes["batch"] = batch
    cfg = apply_overrides(cfg, changes)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The ``TrainConfig`` stored in ``run_dir/config.json``."""
    return TrainConfig.from_dict(read_run_info(run_dir)["config"])


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The whole ``config.json`` of a run (config, hash, dataset, torch version, device)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: {run_dir} is not a training run folder")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(info, dict) or "config" not in info:
        raise UserError(f"{path} has no 'config' entry: not written by medgan train")
    return info


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resume_hash(cfg: TrainConfig) -> str:
    """Hash of the fields that define what is trained (``RESUME_FREE_KEYS`` may change on resume)."""
    import hashlib

    d = {k: v for k, v in _flatten(cfg.to_dict()).items() if k not in RESUME_FREE_KEYS}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """``["lr: 0.0002 -> 0.001", ...]`` for the training-relevant fields that differ."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
            if k not in RESUME_FREE_KEYS and fa.get(k) != fb.get(k)]


# ---------------------------------------------------------------------------------------------
# devices, precision, determinism
# ---------------------------------------------------------------------------------------------
def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine (use device=auto or cpu)")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


@dataclass(frozen=True)
class DistInfo:
    """This process' place in a ``torchrun`` job; rank 0 of 1 when not distributed.

    Data parallelism: ``cfg.batch`` is the *global* batch, split evenly over the ranks. Every rank
    draws the same global batch indices and the same global ``z`` (shared data order and latent
    generator) and keeps its slice, so the union over ranks is exactly the single-process batch; the
    gradients are averaged over ranks before each optimiser step. Everything else random (DiffAugment,
    GP interpolation, StyleGAN noise, classical augmentation) runs on per-rank seeds. Rank 0 is the
    only writer of the run folder.
    """

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
    import torch.distributed as tdist

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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA for ``auto``; ``bf16`` forces it (CPU too); ``off`` is fp32."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the duration of a run, restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    bench = torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = bench


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# RNG state as tensors/primitives (so checkpoints load with weights_only=True)
# ---------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return out


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Side work (sample grids, metric hooks) must not shift the training run's random streams."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


# ---------------------------------------------------------------------------------------------
# data order
# ---------------------------------------------------------------------------------------------
class DataOrder:
    """Epoch permutations of ``n`` rows from a dedicated generator: ``next(batch) -> LongTensor [batch]``.

    Batches run across epoch boundaries (a batch may end one epoch and start the next), so every row
    is seen once per epoch and the state is just (generator, permutation, position, epoch).
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("DataOrder needs at least one row")
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self, batch: int) -> torch.Tensor:
        parts = []
        need = batch
        while need > 0:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
                self.epoch += 1
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise CheckpointError(f"the checkpoint's data order covers {state['n']} training slices, this set has {self.n}")
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
        self.epoch = int(state["epoch"])


# ---------------------------------------------------------------------------------------------
# the trainer (one object per run; bench builds it on synthetic data)
# ---------------------------------------------------------------------------------------------
def _grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.nn.utils.get_total_norm(grads).float()


def _has_own_state(obj: Any) -> bool:
    # an nn.Module loss would drag G and D into its state_dict; only plain objects with state count
    return callable(getattr(obj, "state_dict", None)) and not isinstance(obj, nn.Module)


class Trainer:
    """G, D, G_ema, the loss object, both optimisers and the data order for one run.

    ``joint [N, C + K, H, W]`` is the whole training split, already on ``device``.
    ``train_step()`` runs one iteration and returns detached scalar tensors (no host sync).
    """

    def __init__(self, cfg: TrainConfig, joint: torch.Tensor, *, channels: int, num_labels: int, device: torch.device,
                 dist: DistInfo = DistInfo()):
        from medgan.augment import build_augment_pipe
        from medgan.models import MODELS

        if cfg.batch % dist.world_size:
            raise ConfigError(f"batch={cfg.batch} (global) does not split evenly over {dist.world_size} processes")
        self.cfg = cfg
        self.device = device
        self.dist = dist
        self.batch = cfg.batch // dist.world_size  # this rank's share of the global batch
        self.channels, self.num_labels = channels, num_labels
        self.resolution = int(joint.shape[-1])
        self.amp_dtype = amp_dtype(cfg.amp, device)
        self.memory_format = torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
        self.joint = joint

        try:
            builder = MODELS[cfg.model.name]
        except KeyError as e:
            raise ConfigError(f"model.name: {e.args[0]}") from None
        pair = builder(cfg.model, channels=channels, num_labels=num_labels, resolution=self.resolution)
        self.G = pair.G.to(device, memory_format=self.memory_format).train()
        self.D = pair.D.to(device, memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.conditional = bool(getattr(self.G, "conditional", False))
        self.augment_pipe = build_augment_pipe(cfg.aug, channels)
        if isinstance(self.augment_pipe, nn.Module):
            self.augment_pipe.to(device)
        self.classical = None
        if cfg.aug.classical:
            from medgan.data.transforms import ClassicalAugment

            self.classical = ClassicalAugment()
        self.vgg = None
        if cfg.loss.vgg_weight > 0:
            from medgan.models.vgg import load_vgg

            self.vgg = load_vgg(cfg.loss.vgg_features).to(device)
        self._compile_pending = False
        self._build_loss(compiled=cfg.compile)

        fused = device.type == "cuda"
        lr_d = cfg.lr if cfg.lr_d is None else cfg.lr_d
        # Lazy regularisation (R1 every k-th D step, path length every k-th G step) changes the effective
        # update rate; StyleGAN2-ADA compensates with lr * k/(k+1) and beta ** (k/(k+1)).
        g_ratio = d_ratio = 1.0
        if cfg.loss.r1_gamma > 0 and cfg.loss.r1_interval > 1 and getattr(self.loss, "lazy_r1", False):
            d_ratio = cfg.loss.r1_interval / (cfg.loss.r1_interval + 1)
        pl_interval = int(getattr(self.loss, "pl_interval", 1))
        if cfg.loss.pl_weight > 0 and pl_interval > 1:
            g_ratio = pl_interval / (pl_interval + 1)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr * g_ratio,
                                      betas=(cfg.beta1**g_ratio, cfg.beta2**g_ratio), fused=fused or None)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr_d * d_ratio,
                                      betas=(cfg.beta1**d_ratio, cfg.beta2**d_ratio), fused=fused or None)
        self.order = DataOrder(len(joint), seed=cfg.seed)
        # z comes from its own generator, identical on every rank (each keeps its slice of the global z)
        self.latent = torch.Generator(device=device).manual_seed(cfg.seed)
        self.step = 0  # iterations (G steps)
        self.d_step = 0  # D steps
        self.nimg = 0  # real images shown to D

    # ---------------------------------------------------------------- construction helpers
    def _build_loss(self, compiled: bool) -> None:
        from medgan.losses import build_loss

        G, D = self.G, self.D
        if compiled:
            try:
                G, D = torch.compile(G), torch.compile(D)
                self._compile_pending = True
            except Exception as e:  # noqa: BLE001 - any compile setup failure means: run eagerly
                warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); training eagerly", stacklevel=2)
                G, D = self.G, self.D
        # ADA (aug.ada_target > 0) lives in the losses that declare ``supports_ada`` (StyleGAN2Loss): they wrap
        # the augment pipe and move its probability from D's r_t; any other loss rejects the knob here.
        extra = {}
        if self.cfg.aug.ada_target > 0:
            from medgan.losses import LOSSES

            if not getattr(LOSSES[self.cfg.loss.name], "supports_ada", False):
                raise ConfigError(f"aug.ada_target={self.cfg.aug.ada_target} (adaptive augmentation) is implemented "
                                  f"by --gan stylegan2 only, not by loss {self.cfg.loss.name!r}; use aug.ada_target=0")
            extra["ada_target"] = self.cfg.aug.ada_target
        self.loss = build_loss(self.cfg.loss, G, D, channels=self.channels, num_labels=self.num_labels,
                               augment_pipe=self.augment_pipe, vgg=self.vgg, **extra)

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch * self.loss.n_critic

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    # ---------------------------------------------------------------- one iteration
    def real_batch(self) -> torch.Tensor:
        """Next ``[batch, C + K, H, W]`` float32 real joint (classically augmented when asked)."""
        idx = self._my_slice(self.order.next(self.cfg.batch)).to(self.joint.device)
        real = self.joint[idx].float()
        if self.classical is not None:
            image, mask = split_joint(real, self.channels)
            image, mask = self.classical(image, mask)
            real = to_joint(image, mask, self.num_labels)
        return real.contiguous(memory_format=self.memory_format)

    def _my_slice(self, x: torch.Tensor) -> torch.Tensor:
        r, b = self.dist.rank, self.batch
        return x[r * b : (r + 1) * b] if self.dist.enabled else x

    def latents(self) -> torch.Tensor:
        """This rank's ``z [batch, z_dim]``: its slice of the global batch's z."""
        z = torch.randn(self.cfg.batch, self.G.z_dim, device=self.device, generator=self.latent)
        return self._my_slice(z)

    def sync_grads(self, module: nn.Module) -> None:
        """Average the gradients of ``module`` over the ranks (one flat all-reduce, as StyleGAN2-ADA does).

        Not the ``DistributedDataParallel`` wrapper: a GAN step runs D several times before one backward,
        freezes the other network, and takes gradients of gradients (GP, R1, path length), all of which
        that wrapper's reducer refuses; the averaged gradient is the same.
        """
        if not self.dist.enabled:
            return
        import torch.distributed as tdist

        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        tdist.all_reduce(flat)
        flat /= self.dist.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view(p.shape))
            offset += n

    def train_step(self) -> dict[str, torch.Tensor]:
        if not self._compile_pending:
            return self._train_step()
        # The first compiled step is where compilation really happens; if it fails, rewind and run eagerly.
        snapshot = copy.deepcopy(self.state_dict(gather=False))
        try:
            out = self._train_step()
            self._compile_pending = False
            return out
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); falling back to eager", stacklevel=2)
            self._compile_pending = False
            self.load_state_dict(snapshot)
            self._build_loss(compiled=False)
            return self._train_step()

    def _train_step(self) -> dict[str, torch.Tensor]:
        loss, cfg = self.loss, self.cfg
        stats: dict[str, torch.Tensor] = {}
        gaps = []
        d_adv = []
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        for _ in range(loss.n_critic):
            real = self.real_batch()
            z = self.latents()
            mask = real[:, self.channels :] if self.conditional else None
            with self.autocast():
                total, terms = loss.d_loss(real, z, mask, step=self.d_step)
            self.opt_D.zero_grad(set_to_none=True)
            total.backward()
            self.sync_grads(self.D)
            grad_d = _grad_norm(self.D)
            self.opt_D.step()
            loss.after_d_step()
            with self.autocast():
                reg, reg_terms = loss.d_regularize(real, step=self.d_step)
            if reg is not None:
                self.opt_D.zero_grad(set_to_none=True)
                reg.backward()
                self.sync_grads(self.D)
                self.opt_D.step()
                loss.after_d_step()
            terms = {**terms, **reg_terms}
            for k, v in terms.items():
                stats[k] = stats.get(k, 0.0) + torch.as_tensor(v).detach().float() / loss.n_critic
            stats["grad_norm_D"] = stats.get("grad_norm_D", 0.0) + grad_d / loss.n_critic
            if "D_real" in terms and "D_fake" in terms:
                gaps.append(torch.as_tensor(terms["D_real"]).float() - torch.as_tensor(terms["D_fake"]).float())
            d_adv.append(torch.as_tensor(terms.get("D_adv", total)).detach().float())
            self.d_step += 1
            self.nimg += cfg.batch
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        z = self.latents()
        with self.autocast():
            total_g, g_terms = loss.g_loss(real, z, mask, step=self.step)
        self.opt_G.zero_grad(set_to_none=True)
        total_g.backward()
        self.sync_grads(self.G)
        stats["grad_norm_G"] = _grad_norm(self.G)
        self.opt_G.step()
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        for k, v in g_terms.items():
            key = k if k not in stats else f"G/{k}"  # e.g. G's D_fake differs from D's (D has stepped)
            stats[key] = torch.as_tensor(v).detach().float()
        stats.setdefault("G_total", total_g.detach().float())
        # per-iteration extremes for the saturation rule (every D step must saturate)
        stats["D_gap_min"] = torch.stack(gaps).min() if gaps else torch.tensor(float("nan"))
        stats["D_adv_max"] = torch.stack(d_adv).max()
        self.update_ema()
        self.step += 1
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup > 0:
            # StyleGAN2-ADA's ramp-up: early on G_ema follows G closely, so short runs do not sample the init
            ema_nimg = min(ema_nimg, (self.step + 1) * self.images_per_step * self.cfg.ema_rampup)
        beta = 0.5 ** (self.images_per_step / ema_nimg) if ema_nimg > 0 else 0.0
        ema_params = list(self.G_ema.parameters())
        params = [p.detach() for p in self.G.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # ---------------------------------------------------------------- checks
    @torch.no_grad()
    def nonfinite_parameters(self) -> str | None:
        for name, module in (("G", self.G), ("D", self.D)):
            flags = [torch.isfinite(p).all() for p in module.parameters()]
            if flags and not bool(torch.stack(flags).all()):
                return name
        return None

    @property
    def saturates(self) -> bool:
        """Whether D can saturate: a loss may say so (``saturates``); critics (clip/GP family) cannot."""
        default = not (getattr(self.loss, "allows_clip", False) or getattr(self.loss, "allows_gp", False))
        return bool(getattr(self.loss, "saturates", default))

    # ---------------------------------------------------------------- state
    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """Everything a resume needs. ``gather`` (a collective: every rank must call it) adds all ranks' RNGs."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "config_hash": resume_hash(self.cfg),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling
            "loss": self.loss.state_dict() if _has_own_state(self.loss) else {},
            "augment": self.augment_pipe.state_dict() if _has_own_state(self.augment_pipe) else {},
            "rng": capture_rng(),
            "world_size": self.dist.world_size,
            "latent": self.latent.get_state(),
            "latent_device": self.device.type,
            "data": self.order.state_dict(),
            "step": self.step,
            "d_step": self.d_step,
            "nimg": self.nimg,
            "kimg": self.nimg / 1000,
        }
        if gather and self.dist.enabled:
            import torch.distributed as tdist

            ranks: list[Any] = [None] * self.dist.world_size
            tdist.all_gather_object(ranks, state["rng"])
            state["rng_ranks"] = ranks
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            for name in ("G", "D", "G_ema"):
                getattr(self, name).load_state_dict(state[name])
            self.opt_G.load_state_dict(state["opt_G"])
            self.opt_D.load_state_dict(state["opt_D"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"the checkpoint does not fit this model/config: {str(e)[:500]}") from None
        if state.get("loss") and _has_own_state(self.loss):
            self.loss.load_state_dict(state["loss"])
        if state.get("augment") and _has_own_state(self.augment_pipe):
            self.augment_pipe.load_state_dict(state["augment"])
        self.order.load_state_dict(state["data"])
        self.step, self.d_step, self.nimg = int(state["step"]), int(state.get("d_step", 0)), int(state["nimg"])
        if state.get("latent_device") == self.device.type and "latent" in state:
            self.latent.set_state(state["latent"])
        else:  # a CUDA generator's state does not fit a CPU one (and vice versa)
            warnings.warn(f"the checkpoint has no latent-generator state for {self.device.type}: z is re-seeded", stacklevel=2)
            self.latent.manual_seed(rank_seed(self.cfg.seed, 0, self.nimg))
        # each rank resumes its own random streams when the world size is unchanged, else rank 0 takes
        # the saved single stream and the others are re-seeded from (seed, rank, nimg)
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            restore_rng(ranks[self.dist.rank])
        elif self.dist.rank == 0:
            restore_rng(state["rng"])
        else:
            seed_everything(rank_seed(self.cfg.seed, self.dist.rank, self.nimg))


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace`` (never a half file)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a run checkpoint with ``weights_only=True``; one ``CheckpointError`` for every way it can be broken."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: nothing to resume from")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the checkpoint is unusable")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors come in many types
        raise CheckpointError(f"{path} is corrupt or not a medgan checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a medgan checkpoint (holds a {type(state).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: not a medgan training checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, this medgan reads {CHECKPOINT_FORMAT}")
    return state


# ---------------------------------------------------------------------------------------------
# sampling and grids
# ---------------------------------------------------------------------------------------------
def pairs_grid(images: np.ndarray, masks: np.ndarray, columns: int = 4) -> np.ndarray:
    """``images [n, C, H, W]`` in [-1, 1] + ``masks [n, H, W]`` -> uint8 RGB grid, each pair image|mask."""
    from medgan.plots import colorize_mask, image_to_display

    n, _, h, w = images.shape
    rows = max(1, math.ceil(n / columns))
    pad = 2
    cell_w = 2 * w + pad
    grid = np.full((rows * (h + pad) + pad, columns * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        img = image_to_display(images[i])
        img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
        y, x = pad + r * (h + pad), pad + c * (cell_w + pad)
        grid[y : y + h, x : x + w] = (img * 255 + 0.5).astype(np.uint8)
        grid[y : y + h, x + w : x + 2 * w] = colorize_mask(masks[i])
    return grid


def save_grid(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(pairs_grid(images, masks)).save(tmp, format="PNG"))


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
@dataclass
class _Tick:
    """Per-tick accumulators (device tensors; one host sync when the tick ends)."""

    start_nimg: int
    start_time: float
    values: dict[str, list[torch.Tensor]]

    @classmethod
    def begin(cls, nimg: int) -> _Tick:
        return cls(nimg, time.perf_counter(), {})

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.values.setdefault(k, []).append(v)

    def summary(self) -> dict[str, float]:
        out = {}
        for k, vs in self.values.items():
            t = torch.stack([v.detach().float().reshape(()) for v in vs]).cpu()
            if k == "D_gap_min":
                out[k] = float(t.min())
            elif k == "D_adv_max":
                out[k] = float(t.max())
            else:
                out[k] = float(t.mean())
        return out


def _peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) on Linux


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MiB, what was measured): CUDA max_memory_allocated, else the process' peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "cpu_peak_rss"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _write_status(run_dir: Path, status: str, reason: str, kimg: float) -> None:
    write_json(run_dir / "status.json", {"status": status, "reason": reason, "kimg": round(kimg, 6)})


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")


def _dataset_info(ps, n_train: int) -> dict[str, Any]:
    m = ps.meta
    return {"root": str(ps.root), "name": m["name"], "modality": m["modality"], "channels": ps.channels,
            "labels": m["labels"], "image_size": ps.image_size, "source": m["source"],
            "normalisation": m["normalisation"], "content_sha256": ps.content_sha256, "n_train": n_train}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class _Run:
    """The bookkeeping around a ``Trainer``: ticks, snapshots, metrics, divergence, the run folder."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, trainer: Trainer, ps, train_masks: torch.Tensor, best: dict[str, float]):
        self.cfg, self.run_dir, self.trainer, self.ps = cfg, run_dir, trainer, ps
        self.writer = trainer.dist.is_writer  # only rank 0 touches the run folder
        self.train_masks = train_masks  # int64 [N, H, W] on CPU (conditional G's inputs at sampling)
        self.best = dict(best)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.grid_z = torch.randn(cfg.grid, trainer.G.z_dim, generator=gen) if cfg.grid else None
        self.grid_masks = (train_masks[torch.randperm(len(train_masks), generator=gen)[: cfg.grid]]
                           if trainer.conditional and cfg.grid else None)

    # ---------------------------------------------------------------- side outputs
    def sample_grid(self, kimg: float) -> None:
        from medgan.generate import sample_joint

        if not self.cfg.grid:
            return
        t = self.trainer
        joint = sample_joint(t.G_ema, self.grid_z, self.grid_masks, num_labels=t.num_labels, device=t.device,
                             amp=t.amp_dtype, batch=64)
        image, mask = split_joint(joint, t.channels)
        save_grid(self.run_dir / f"samples-{kimg:08.3f}.png", image.numpy(), mask.numpy())

    def sampler(self):
        """``sample(n) -> (images float32 [n, C, H, W], masks int64 [n, H, W])`` from G_ema, same z every call."""
        from medgan.generate import sample_pairs

        t = self.trainer

        def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
            gen = torch.Generator().manual_seed(self.cfg.seed + 2)
            return sample_pairs(t.G_ema, n, generator=gen, channels=t.channels, num_labels=t.num_labels,
                                device=t.device, amp=t.amp_dtype, train_masks=self.train_masks if t.conditional else None)

        return sample

    def run_metrics(self, kimg: float) -> None:
        from medgan.hooks import METRIC_HOOKS, MetricContext

        if not self.cfg.metrics:
            return
        rng_before = capture_rng()  # the state training resumes from, whatever the hooks draw
        ctx = MetricContext(run_dir=self.run_dir, real_dir=Path(self.cfg.data), kimg=kimg, device=self.trainer.device,
                            sample=self.sampler(), cfg=self.cfg)
        for name in self.cfg.metrics:
            result = dict(METRIC_HOOKS[name](ctx))
            value = float(result["value"])
            record = {"kimg": round(kimg, 6), "step": self.trainer.step, **result, "value": value}
            _append_jsonl(self.run_dir / f"metric-{name}.jsonl", json.loads(json.dumps(record, default=float)))
            if math.isfinite(value) and value < self.best.get(name, math.inf):
                self.best[name] = value
                state = self.trainer.state_dict(gather=False)
                state["rng"] = rng_before
                state["best"] = dict(self.best)
                save_checkpoint(self.run_dir / f"checkpoint-best-{name}.pt", state)

    def checkpoint(self) -> None:
        """All ranks call it (it gathers their RNG states); rank 0 writes."""
        state = self.trainer.state_dict()
        if self.writer:
            state["best"] = dict(self.best)
            state["elapsed_s"] = self.elapsed
            save_checkpoint(self.run_dir / "checkpoint-last.pt", state)

    def reduce(self, summary: dict[str, float]) -> dict[str, float]:
        """Tick summary over all ranks: means averaged, per-tick extremes by min/max (same on every rank)."""
        if not self.trainer.dist.enabled:
            return summary
        import torch.distributed as tdist

        keys = sorted(summary)
        ops = {"D_gap_min": tdist.ReduceOp.MIN, "D_adv_max": tdist.ReduceOp.MAX}
        out = {}
        device = self.trainer.device
        means = torch.tensor([summary[k] for k in keys if k not in ops], dtype=torch.float64, device=device)
        tdist.all_reduce(means)
        out.update(zip([k for k in keys if k not in ops], (means / self.trainer.dist.world_size).tolist(), strict=True))
        for k, op in ops.items():
            if k in summary:
                v = torch.tensor([summary[k]], dtype=torch.float64, device=device)
                tdist.all_reduce(v, op=op)
                out[k] = float(v)
        return out

    # ---------------------------------------------------------------- divergence
    def divergence(self, summary: dict[str, float]) -> str | None:
        cfg, t = self.cfg, self.trainer
        bad = sorted(k for k, v in summary.items() if not math.isfinite(v) and k != "D_gap_min")
        if bad:
            return f"non-finite {', '.join(bad)}"
        which = t.nonfinite_parameters()
        if which:
            return f"non-finite parameters in {which}"
        if t.saturates:
            if cfg.saturate_loss > 0 and summary.get("D_adv_max", math.inf) < cfg.saturate_loss:
                return (f"D saturated: its adversarial loss stayed below {cfg.saturate_loss:g} at every step of "
                        f"the tick (max {summary['D_adv_max']:.3g})")
            gap = summary.get("D_gap_min", math.nan)
            if cfg.saturate_gap > 0 and math.isfinite(gap) and gap > cfg.saturate_gap:
                return (f"D saturated: D(real) - D(fake) stayed above {cfg.saturate_gap:g} logits at every step "
                        f"of the tick (min {gap:.3g})")
        return None

    # ---------------------------------------------------------------- the loop
    def loop(self, elapsed0: float, progress: bool | None) -> tuple[str, str]:
        from tqdm.auto import tqdm

        cfg, t = self.cfg, self.trainer
        total_nimg = int(round(cfg.kimg * 1000))
        tick_nimg, snap_nimg = cfg.tick_kimg * 1000, cfg.snapshot_kimg * 1000
        metric_nimg = cfg.metric_kimg * 1000

        def next_multiple(step: float) -> float:
            return (math.floor(t.nimg / step) + 1) * step

        next_tick, next_snap = next_multiple(tick_nimg), next_multiple(snap_nimg)
        next_metric = next_multiple(metric_nimg) if metric_nimg > 0 else math.inf
        self.t0 = time.perf_counter() - elapsed0
        tick_index = int(t.nimg // tick_nimg)
        if t.nimg == 0 and self.writer:
            with preserved_rng():
                self.sample_grid(0.0)
        show = (None if progress is None else progress) if self.writer else False
        bar = tqdm(total=round(cfg.kimg, 3), initial=round(t.nimg / 1000, 3), unit="kimg", disable=(None if show is None else not show),
                   bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}]{postfix}")
        try:
            tick = _Tick.begin(t.nimg)
            _peak_memory_reset(t.device)
            while t.nimg < total_nimg:
                stats = t.train_step()
                tick.add(stats)
                bar.update(t.images_per_step / 1000)
                done = t.nimg >= total_nimg
                if not (done or t.nimg >= next_tick):
                    continue
                # ---- end of a tick
                if t.device.type == "cuda":
                    torch.cuda.synchronize(t.device)
                dt = time.perf_counter() - tick.start_time
                summary = self.reduce(tick.summary())
                mem, mem_kind = peak_memory_mb(t.device)
                tick_index += 1
                kimg = t.nimg / 1000
                record = {"tick": tick_index, "kimg": round(kimg, 6), "step": t.step,
                          **{k: _finite_or_none(v) for k, v in sorted(summary.items())},
                          "img_per_s": (t.nimg - tick.start_nimg) / max(dt, 1e-9), "tick_s": dt,
                          "time_s": time.perf_counter() - self.t0, "peak_mem_mb": mem, "mem_kind": mem_kind}
                if self.writer:
                    _append_jsonl(self.run_dir / "stats.jsonl", record)
                bar.set_postfix({k: f"{summary[k]:.3g}" for k in ("D_total", "G_total") if k in summary}, refresh=False)
                reason = self.divergence(summary)
                if reason:
                    return "diverged", f"{reason} at kimg {kimg:.3f}"
                # side work must not shift the random streams training continues with (nor those resumed)
                if self.writer and (done or t.nimg >= next_metric):
                    with preserved_rng():
                        self.run_metrics(kimg)
                if done or t.nimg >= next_snap:
                    if self.writer:
                        with preserved_rng():
                            self.sample_grid(kimg)
                    self.checkpoint()
                next_tick = next_multiple(tick_nimg)
                next_snap = next_multiple(snap_nimg)
                if metric_nimg > 0:
                    next_metric = next_multiple(metric_nimg)
                tick = _Tick.begin(t.nimg)
                _peak_memory_reset(t.device)
        finally:
            bar.close()
        return "finished", ""

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_training(cfg: TrainConfig, *, resume: bool = False, progress: bool | None = None) -> Path:
    """Train ``cfg`` into ``cfg.out``; return the run folder (also when the run diverged — see status.json).

    ``resume=True`` continues ``cfg.out`` from ``checkpoint-last.pt`` up to ``cfg.kimg`` (which may be raised);
    the training config must equal the run's (``RESUME_FREE_KEYS`` excepted).
    """
    if not cfg.data:
        raise ConfigError("no training data: set data=PREPARED_DIR (medgan train --data)")
    if not cfg.out:
        raise ConfigError("no run folder: set out=RUN_DIR (medgan train --out)")
    run_dir = Path(cfg.out)

    # ---- every check before anything is written
    ckpt = None
    stored_info: dict[str, Any] = {}
    if resume:
        if not run_dir.is_dir():
            raise UserError(f"cannot resume: {run_dir} does not exist")
        stored_info = read_run_info(run_dir)
        stored = TrainConfig.from_dict(stored_info["config"])
        diff = config_differences(stored, cfg)
        if diff:
            raise ConfigError(f"cannot resume {run_dir}: the config differs from its config.json in {'; '.join(diff)}")
        ckpt = load_checkpoint(run_dir / "checkpoint-last.pt")
        if ckpt["config_hash"] != resume_hash(cfg):
            raise CheckpointError(f"{run_dir / 'checkpoint-last.pt'} was written by another config "
                                  f"(hash {ckpt['config_hash']}, this config {resume_hash(cfg)})")
    elif run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"run folder {run_dir} already exists; pass --resume to continue it or choose another --out")

    if cfg.split not in (*SPLITS, "all"):
        raise ConfigError(f"split={cfg.split!r} is not one of {[*SPLITS, 'all']}")
    _check_metrics(cfg.metrics)
    dist = dist_from_env()
    if cfg.batch % dist.world_size:
        raise ConfigError(f"batch={cfg.batch} (global) does not split evenly over {dist.world_size} processes")
    device = resolve_device(cfg.device, dist.local_rank if dist.enabled else None)
    ps = load_prepared(cfg.data)
    if cfg.resolution and cfg.resolution != ps.image_size:
        raise ConfigError(f"resolution={cfg.resolution} but the prepared set {ps.root} holds {ps.image_size}x{ps.image_size} "
                          f"images; prepare the data at {cfg.resolution} or drop the resolution setting")
    if resume and stored_info.get("dataset", {}).get("content_sha256") not in (None, ps.content_sha256):
        raise ConfigError(f"cannot resume {run_dir}: the prepared set {ps.root} is not the one it was trained on "
                          f"(content hash {ps.content_sha256[:12]} != {stored_info['dataset']['content_sha256'][:12]})")
    images, masks = ps.load(cfg.split)
    if len(images) == 0:
        raise ConfigError(f"split {cfg.split!r} of {ps.root} is empty: nothing to train on")
    joint = to_joint(torch.from_numpy(images), torch.from_numpy(masks), ps.num_labels)
    joint = joint.to(device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
    train_masks = torch.from_numpy(masks)

    # joining the process group is a rendezvous: every rank has passed the checks above before rank 0 writes
    with process_group(dist, device), deterministic_mode(cfg.deterministic):
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(cfg.seed)
        trainer = Trainer(cfg, joint, channels=ps.channels, num_labels=ps.num_labels, device=device, dist=dist)
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
        elif dist.enabled:
            _broadcast_from_rank0(trainer)
            seed_everything(rank_seed(cfg.seed, dist.rank))
        if not dist.is_writer:
            run = _Run(cfg, run_dir, trainer, ps, train_masks, best={})
            try:
                run.loop(0.0, False)
            except Diverged:
                pass
            return run_dir

        # ---- from here on the run folder is ours
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "config": cfg.to_dict(),
            "config_hash": cfg.hash(),
            "resume_hash": resume_hash(cfg),
            "gan": cfg.gan,
            "dataset": _dataset_info(ps, len(images)),
            "torch": torch.__version__,
            "device": str(device),
            "device_name": _device_name(device),
            "world_size": dist.world_size,
            "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32",
            "vgg": getattr(trainer.loss, "vgg_name", None),
            "n_params": {"G": sum(p.numel() for p in trainer.G.parameters()), "D": sum(p.numel() for p in trainer.D.parameters())},
        }
        if resume:
            info["resumed_from_kimg"] = trainer.nimg / 1000
            info["created"] = stored_info.get("created")
        else:
            info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(run_dir / "config.json", info)
        _write_status(run_dir, "running", "", trainer.nimg / 1000)
        run = _Run(cfg, run_dir, trainer, ps, train_masks, best=(ckpt or {}).get("best", {}))
        try:
            status, reason = run.loop(float((ckpt or {}).get("elapsed_s", 0.0)), progress)
        except Diverged as e:
            status, reason = "diverged", str(e)
        except BaseException as e:
            _write_status(run_dir, "failed", f"{type(e).__name__}: {e}", trainer.nimg / 1000)
            raise
        _write_status(run_dir, status, reason, trainer.nimg / 1000)
    return run_dir


def _check_metrics(names: tuple[str, ...]) -> None:
    """Unknown metric names fail now, not at the first evaluation hours into the run."""
    from medgan.hooks import METRIC_HOOKS

    for name in names:
        try:
            METRIC_HOOKS[name]
        except KeyError as e:
            raise ConfigError(f"metrics: {e.args[0]}") from None


def _broadcast_from_rank0(trainer: Trainer) -> None:
    """Start every rank from rank 0's weights (they are seeded alike; this makes it a guarantee)."""
    import torch.distributed as tdist

    with torch.no_grad():
        for module in (trainer.G, trainer.D, trainer.G_ema):
            for t in [*module.parameters(), *module.buffers()]:
                tdist.broadcast(t.data, 0)


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``status.json`` of a run as a dict."""
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: {run_dir} is not a training run folder")
    return json.loads(path.read_text())


def read_stats(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of ``stats.jsonl``."""
    path = Path(run_dir) / "stats.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def train(*, data=None, gan=None, out, kimg=None, batch=None, overrides=(), resume=False, progress=None) -> Path:
    """Python twin of ``medgan train``."""
    cfg = make_config(out=out, data=data, gan=gan, kimg=kimg, batch=batch, overrides=list(overrides), resume=resume)
    return run_training(cfg, resume=resume, progress=progress)


def _gan_names() -> str:
    try:
        from medgan.models import GANS

        return ",".join(GANS.names())
    except Exception:  # noqa: BLE001 - help text only
        return "dcgan,..."


def add_cli(sub) -> None:
    p = sub.add_parser("train", help="train a GAN on a prepared set into a run folder",
                       description="Train a GAN on a prepared set. Every config field can be set with --set knob=value.")
    p.add_argument("--data", help="prepared dataset folder (optional with --resume)")
    p.add_argument("--gan", help=f"one of {{{_gan_names()}}} (default dcgan; with --resume: the run's)")
    p.add_argument("--out", required=True, help="run folder (must not exist unless --resume)")
    p.add_argument("--kimg", type=float, help="train until this many thousand real images were shown to D")
    p.add_argument("--batch", type=int, help="global batch size (split evenly over torchrun processes)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KNOB=VALUE",
                   help="config overrides, e.g. --set lr=1e-4 model.g_filters=32 aug.diffaugment=color,translation")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint-last.pt")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="force the progress bar on/off")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    if not args.resume and args.data is None:
        raise UserError("--data PREPARED_DIR is required (except with --resume)")
    run_dir = train(data=args.data, gan=args.gan, out=args.out, kimg=args.kimg, batch=args.batch,
                    overrides=args.overrides, resume=args.resume, progress=args.progress)
    if not dist_from_env().is_writer:
        return 0  # rank 0 reports the run's status (and its exit code says how it ended)
    status = run_status(run_dir)
    print(f"{run_dir}: {status['status']} at kimg {status['kimg']:.3f}" + (f" ({status['reason']})" if status["reason"] else ""))
    return 0 if status["status"] == "finished" else 1
