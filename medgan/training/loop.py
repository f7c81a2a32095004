"""The training run around a ``Trainer``: ticks, snapshots, metrics, divergence and the run folder.

``run_training(cfg) -> run_dir`` is the one entry point (``medgan train`` is its CLI twin).

Divergence (NaN/Inf in a loss or a parameter, or D saturated for a whole tick) ends the run with
``status: diverged`` and returns normally, so a sweep never sees an exception for a bad trial; any
other exception marks ``failed`` and is re-raised. Bad input (unknown knob value, WGAN clip with GP,
resolution mismatch, broken checkpoint, resuming with another config, an existing run folder) is one
clear error raised before anything is written.

Several processes: ``torchrun --nproc_per_node N -m medgan.cli train ...`` runs data parallel (see
``medgan.training.distributed``); rank 0 alone writes the run folder.

Faults (``medgan.training.runs``): the writing process holds ``train.lock`` for the life of the run (a
second writer stops with ``RunLockedError``); a resume starts from the newest loadable checkpoint (or from
kimg 0 when a killed run never wrote one) and cuts the logs back to it; a full disk ends the run with one
``DiskFullError`` line, the files already written intact. ``$MEDGAN_FAULT`` (``medgan.io``) can kill the
process at ``step`` (between two training steps) and ``metric`` (inside an evaluation) besides every write.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.config import ConfigError, TrainConfig
from medgan.data.prepared import load_prepared, parse_split, split_joint, to_joint
from medgan.errors import CheckpointError, DiskFullError, InputNotFoundError, OutputExistsError
from medgan.images import save_grid
from medgan.io import append_jsonl, fault_point, remove_temp_files, write_json
from medgan.runtime import (
    capture_rng,
    code_version,
    deterministic_mode,
    device_name,
    peak_memory_mb,
    peak_memory_reset,
    preserved_rng,
    progress_bar,
    resolve_device,
    seed_everything,
)
from medgan.sampling import sample_joint, sample_pairs
from medgan.training.distributed import (
    broadcast_from_rank0,
    dist_from_env,
    process_group,
    rank_seed,
    reduce_summary,
)
from medgan.training.hooks import METRIC_HOOKS, MetricContext
from medgan.training.runs import (
    LAST_CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    RunLock,
    dataset_info,
    load_resume_checkpoint,
    only_debris,
    read_run_info,
    save_checkpoint,
    trim_run_logs,
    warn,
    write_status,
)
from medgan.training.trainer import Trainer

# per-tick extremes of a step statistic (the saturation rule needs every step of the tick to saturate)
TICK_EXTREMES = {"D_gap_min": "min", "D_adv_max": "max"}


@dataclass
class Tick:
    """Per-tick accumulators (device tensors; one host sync when the tick ends)."""

    start_nimg: int
    start_time: float
    values: dict[str, list[torch.Tensor]]

    @classmethod
    def begin(cls, nimg: int) -> Tick:
        return cls(nimg, time.perf_counter(), {})

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.values.setdefault(k, []).append(v)

    def summary(self) -> dict[str, float]:
        out = {}
        for k, vs in self.values.items():
            t = torch.stack([v.detach().float().reshape(()) for v in vs]).cpu()
            how = TICK_EXTREMES.get(k)
            out[k] = float(t.min() if how == "min" else t.max() if how == "max" else t.mean())
        return out



class Run:
    """The bookkeeping around a ``Trainer``: ticks, snapshots, metrics, divergence, the run folder."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, trainer: Trainer, ps, train_masks: torch.Tensor, best: dict[str, float]):
        self.cfg, self.run_dir, self.trainer, self.ps = cfg, run_dir, trainer, ps
        self.saved_kimg = trainer.nimg / 1000 if trainer.nimg else None  # kimg of checkpoint-last.pt
        self.writer = trainer.dist.is_writer  # only rank 0 touches the run folder
        self.train_masks = train_masks  # int64 [N, H, W] on CPU (conditional G's inputs at sampling)
        self.best = dict(best)
        self.dataset = dataset_info(ps, len(train_masks))
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.grid_z = torch.randn(cfg.grid, trainer.G.z_dim, generator=gen) if cfg.grid else None
        self.grid_masks = (train_masks[torch.randperm(len(train_masks), generator=gen)[: cfg.grid]]
                           if trainer.conditional and cfg.grid else None)

    # ---------------------------------------------------------------- side outputs
    def sample_grid(self, kimg: float) -> None:
        if not self.cfg.grid:
            return
        t = self.trainer
        joint = sample_joint(t.G_ema, self.grid_z, self.grid_masks, num_labels=t.num_labels, device=t.device,
                             amp=t.amp_dtype, batch=64)
        image, mask = split_joint(joint, t.channels)
        save_grid(self.run_dir / f"samples-{kimg:08.3f}.png", image.numpy(), mask.numpy())

    def sampler(self):
        """``sample(n) -> (images float32 [n, C, H, W], masks int64 [n, H, W])`` from G_ema, same z every call."""
        t = self.trainer

        def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
            fault_point("metric")
            gen = torch.Generator().manual_seed(self.cfg.seed + 2)
            return sample_pairs(t.G_ema, n, generator=gen, channels=t.channels, num_labels=t.num_labels,
                                device=t.device, amp=t.amp_dtype, train_masks=self.train_masks if t.conditional else None)

        return sample

    def run_metrics(self, kimg: float) -> None:
        if not self.cfg.metrics:
            return
        rng_before = capture_rng()  # the state training resumes from, whatever the hooks draw
        ctx = MetricContext(run_dir=self.run_dir, real_dir=Path(self.cfg.data), kimg=kimg, device=self.trainer.device,
                            sample=self.sampler(), cfg=self.cfg)
        for name in self.cfg.metrics:
            result = dict(METRIC_HOOKS[name](ctx))
            value = float(result["value"])
            record = {"kimg": round(kimg, 6), "step": self.trainer.step, **result, "value": value}
            append_jsonl(self.run_dir / f"metric-{name}.jsonl", record)
            if math.isfinite(value) and value < self.best.get(name, math.inf):
                self.best[name] = value
                state = self.trainer.state_dict(gather=False)
                state["rng"] = rng_before
                state["best"] = dict(self.best)
                state["dataset"] = self.dataset
                save_checkpoint(self.run_dir / f"checkpoint-best-{name}.pt", state)

    def checkpoint(self) -> None:
        """All ranks call it (it gathers their RNG states); rank 0 writes."""
        state = self.trainer.state_dict()
        if self.writer:
            state["best"] = dict(self.best)
            state["elapsed_s"] = self.elapsed
            state["dataset"] = self.dataset
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, state, previous=self.run_dir / PREVIOUS_CHECKPOINT)
            self.saved_kimg = self.trainer.nimg / 1000
            write_status(self.run_dir, "running", "", self.saved_kimg)

    def reduce(self, summary: dict[str, float]) -> dict[str, float]:
        """Tick summary over all ranks: means averaged, per-tick extremes by min/max (same on every rank)."""
        return reduce_summary(summary, self.trainer.dist, self.trainer.device, TICK_EXTREMES)

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
        bar = progress_bar(total=round(cfg.kimg, 3), initial=round(t.nimg / 1000, 3), unit="kimg",
                           progress=progress if self.writer else False,
                   bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}]{postfix}")
        try:
            tick = Tick.begin(t.nimg)
            peak_memory_reset(t.device)
            while t.nimg < total_nimg:
                stats = t.train_step()
                fault_point("step")
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
                          **dict(sorted(summary.items())),
                          "img_per_s": (t.nimg - tick.start_nimg) / max(dt, 1e-9), "tick_s": dt,
                          "time_s": time.perf_counter() - self.t0, "peak_mem_mb": mem, "mem_kind": mem_kind}
                if self.writer:
                    append_jsonl(self.run_dir / "stats.jsonl", record)
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
                tick = Tick.begin(t.nimg)
                peak_memory_reset(t.device)
        finally:
            bar.close()
        return "finished", ""

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_training(cfg: TrainConfig, *, resume: bool = False, progress: bool | None = None) -> Path:
    """Train ``cfg`` into ``cfg.out``; return the run folder (also when the run diverged — see status.json).

    ``resume=True`` continues ``cfg.out`` from ``checkpoint-last.pt`` (``checkpoint-prev.pt`` when the newest
    is damaged; kimg 0 when a killed run wrote none) up to ``cfg.kimg`` (which may be raised); the training
    config must equal the run's (``RESUME_FREE_KEYS`` excepted). The writing process holds the folder's
    lock throughout: a second one raises ``RunLockedError`` before it reads anything else.
    """
    if resume and not Path(cfg.out or ".").is_dir():
        raise InputNotFoundError(f"cannot resume: {cfg.out} does not exist")
    if not cfg.data:
        raise ConfigError("no training data: set data=PREPARED_DIR (medgan train --data)")
    if not cfg.out:
        raise ConfigError("no run folder: set out=RUN_DIR (medgan train --out)")
    run_dir = Path(cfg.out)
    lock = RunLock(run_dir)
    # a folder that is a run (or was one) is locked before any check; nothing else gets a lock file
    if dist_from_env().is_writer and run_dir.is_dir() and (
            lock.path.exists() or (resume and (run_dir / "config.json").is_file())):
        lock.acquire()
    try:
        return _run_training(cfg, run_dir, lock, resume=resume, progress=progress)
    finally:
        lock.release()


def _run_training(cfg: TrainConfig, run_dir: Path, lock: RunLock, *, resume: bool, progress: bool | None) -> Path:
    # ---- every check before anything is written
    ckpt = None
    stored_info: dict[str, Any] = {}
    if resume and not (run_dir / "config.json").is_file() and only_debris(run_dir):
        warn(f"{run_dir} holds no config.json (its process was stopped while starting): starting the run anew")
        resume = False
    if resume:
        if not run_dir.is_dir():
            raise InputNotFoundError(f"cannot resume: {run_dir} does not exist")
        stored_info = read_run_info(run_dir)
        stored = TrainConfig.from_dict(stored_info["config"])
        diff = stored.differences(cfg)
        if diff:
            raise ConfigError(f"cannot resume {run_dir}: the config differs from its config.json in {'; '.join(diff)}")
        ckpt, ckpt_path = load_resume_checkpoint(run_dir, none_ok=_stopped_early(run_dir))
        if ckpt is not None and ckpt["config_hash"] != cfg.hash():
            raise CheckpointError(f"{ckpt_path} was written by another config "
                                  f"(hash {ckpt['config_hash']}, this config {cfg.hash()})")
    elif run_dir.exists() and (not run_dir.is_dir() or not only_debris(run_dir)):
        raise OutputExistsError(f"run folder {run_dir} already exists; pass --resume to continue it or choose another --out")

    if cfg.split != "all":
        try:
            parse_split(cfg.split)
        except ValueError as e:
            raise ConfigError(f"split={cfg.split!r}: {e}") from None
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
            broadcast_from_rank0((trainer.G, trainer.D, trainer.G_ema))
            seed_everything(rank_seed(cfg.seed, dist.rank))
        if not dist.is_writer:
            Run(cfg, run_dir, trainer, ps, train_masks, best={}).loop(0.0, False)
            return run_dir

        # ---- from here on the run folder is ours
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        lock.announce()
        remove_temp_files(run_dir)  # what killed writers left; only the lock holder may delete them
        cut = trim_run_logs(run_dir, trainer.step)
        if cut:
            warn(f"cut back to step {trainer.step} (the resume point), to be logged again: {', '.join(cut)}")
        info = {
            "config": cfg.to_dict(),
            "config_hash": cfg.hash(),
            "gan": cfg.gan,
            "dataset": dataset_info(ps, len(images)),
            "torch": torch.__version__,
            "code_version": code_version(),
            "device": str(device),
            "device_name": device_name(device),
            "world_size": dist.world_size,
            "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32",
            "vgg": trainer.loss.vgg_name,
            "n_params": {"G": sum(p.numel() for p in trainer.G.parameters()), "D": sum(p.numel() for p in trainer.D.parameters())},
        }
        if resume:
            info["resumed_from_kimg"] = trainer.nimg / 1000
            info["created"] = stored_info.get("created")
        else:
            info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(run_dir / "config.json", info)
        write_status(run_dir, "running", "", trainer.nimg / 1000)
        run = Run(cfg, run_dir, trainer, ps, train_masks, best=(ckpt or {}).get("best", {}))
        try:
            status, reason = run.loop(float((ckpt or {}).get("elapsed_s", 0.0)), progress)
        except DiskFullError as e:
            kept = (f"{LAST_CHECKPOINT} (kimg {run.saved_kimg:.3f}) is kept" if run.saved_kimg is not None
                    else "no checkpoint was written yet")
            with contextlib.suppress(OSError):  # a full disk may refuse this too: status.json then reads interrupted
                write_status(run_dir, "failed", f"disk full: {e}", trainer.nimg / 1000)
            err = DiskFullError(f"{e}; the run stopped at kimg {trainer.nimg / 1000:.3f}, {kept}: free space, then "
                                f"medgan train --out {run_dir} --resume")
            err.errno = e.errno
            raise err from None
        except BaseException as e:
            with contextlib.suppress(OSError):
                write_status(run_dir, "failed", f"{type(e).__name__}: {e}", trainer.nimg / 1000)
            raise
        write_status(run_dir, status, reason, trainer.nimg / 1000)
    return run_dir


def _stopped_early(run_dir: Path) -> bool:
    """A run that may lack a checkpoint: killed (status running, or never written) or failed before its
    first snapshot; a finished or diverged run without one has lost it."""
    path = run_dir / "status.json"
    try:
        return json.loads(path.read_text()).get("status") in ("running", "failed")
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False


def _check_metrics(names: tuple[str, ...]) -> None:
    """Unknown metric names fail now, not at the first evaluation hours into the run."""
    for name in names:
        try:
            METRIC_HOOKS[name]
        except KeyError as e:
            raise ConfigError(f"metrics: {e.args[0]}") from None
