"""One training iteration, model-agnostic: ``Trainer`` owns G, D, G_ema, the loss object, both optimisers,
the data order and the latent generator of a run (``medgan.training.loop`` does the bookkeeping around it).

Counting. One *iteration* is ``loss.n_critic`` D steps, each on a fresh real batch, then one G step.
``kimg`` counts real images shown to D (``batch * n_critic`` per iteration), as StyleGAN2-ADA counts
images shown to D; the G_ema half-life (``ema_kimg``) is in the same unit.

Data. The whole training split is a joint tensor ``[N, C + K, H, W]`` (image, then the {-1, +1} one-hot
mask) on the device. Batches follow epoch permutations drawn from a dedicated generator, so the exact
data order is part of the checkpoint. A label-conditional model (``model.condition``) also gets ``labels
[N]`` int64 class indices aligned with the joint rows (read from the prepared set's per-slice ``group`` /
``phase`` arrays when the caller passes none); a batch's labels are the rows' labels, so they follow the
same data order and resume needs nothing more. G draws each fake for the real batch's labels.

What the trainer asks of a loss is declared on ``medgan.losses.GANLoss`` (``n_critic``, ``lazy_r1``,
``pl_interval``, ``saturates``, ``state_dict``); it never looks at which GAN it trains.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from medgan.augment import build_augment_pipe
from medgan.config import ConfigError, TrainConfig
from medgan.data.prepared import load_prepared, split_joint, to_joint
from medgan.data.transforms import ClassicalAugment
from medgan.errors import CheckpointError
from medgan.losses import build_loss
from medgan.models import MODELS
from medgan.models.conditional import check_label_support, encode_labels
from medgan.models.vgg import load_vgg
from medgan.runtime import amp_dtype, autocast, capture_rng, restore_rng, seed_everything
from medgan.training.distributed import DistInfo, average_gradients, gather_objects, rank_seed
from medgan.training.runs import CHECKPOINT_FORMAT


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



def _grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.nn.utils.get_total_norm(grads).float()


class Trainer:
    """G, D, G_ema, the loss object, both optimisers and the data order for one run.

    ``joint [N, C + K, H, W]`` is the whole training split, already on ``device``; ``labels [N]`` its class
    indices for a label-conditional model (None: read from ``cfg.data``'s ``cfg.split``; ignored otherwise).
    ``train_step()`` runs one iteration and returns detached scalar tensors (no host sync).
    """

    def __init__(self, cfg: TrainConfig, joint: torch.Tensor, *, channels: int, num_labels: int, device: torch.device,
                 dist: DistInfo = DistInfo(), labels: torch.Tensor | None = None):
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
        check_label_support(cfg.model, pair.G, pair.D)
        self.num_classes = int(getattr(pair.G, "num_classes", 0))
        self.labels = self._labels(labels, len(joint)) if self.num_classes else None
        if self.labels is not None:  # before G_ema is copied: G without labels draws these proportions
            pair.G.set_label_prior(torch.bincount(self.labels.cpu(), minlength=self.num_classes))
        self.G = pair.G.to(device, memory_format=self.memory_format).train()
        self.D = pair.D.to(device, memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.conditional = bool(getattr(self.G, "conditional", False))
        self.augment_pipe = build_augment_pipe(cfg.aug, channels)
        self.classical = ClassicalAugment() if cfg.aug.classical else None
        self.vgg = load_vgg(cfg.loss.vgg_features).to(device) if cfg.loss.vgg_weight > 0 else None
        self._compile_pending = False
        self._build_loss(compiled=cfg.compile)

        fused = device.type == "cuda"
        lr_d = cfg.lr if cfg.lr_d is None else cfg.lr_d
        # Lazy regularisation (R1 every k-th D step, path length every k-th G step) changes the effective
        # update rate; StyleGAN2-ADA compensates with lr * k/(k+1) and beta ** (k/(k+1)).
        g_ratio = d_ratio = 1.0
        if cfg.loss.r1_gamma > 0 and cfg.loss.r1_interval > 1 and self.loss.lazy_r1:
            d_ratio = cfg.loss.r1_interval / (cfg.loss.r1_interval + 1)
        pl_interval = int(self.loss.pl_interval)
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
    def _labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """The training rows' class indices ``[n]`` int64 on the device (from the prepared set when not given)."""
        cond = self.cfg.model.condition
        if labels is None:
            if not self.cfg.data:
                raise ConfigError(f"model.condition={cond!r} needs labels: pass them or set data= to a prepared set")
            ps = load_prepared(self.cfg.data)
            idx = ps.indices(self.cfg.split)
            labels = torch.from_numpy(encode_labels({k: v[idx] for k, v in ps.extra.items()}, cond, where=str(ps.root)))
        labels = torch.as_tensor(labels).long()
        if labels.shape != (n,):
            raise ConfigError(f"model.condition={cond!r}: {tuple(labels.shape)} labels for {n} training rows")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ConfigError(f"model.condition={cond!r}: labels outside [0, {self.num_classes})")
        return labels.to(self.device)

    def _build_loss(self, compiled: bool) -> None:
        G, D = self.G, self.D
        if compiled:
            try:
                G, D = torch.compile(G), torch.compile(D)
                self._compile_pending = True
            except Exception as e:  # noqa: BLE001 - any compile setup failure means: run eagerly
                warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); training eagerly", stacklevel=2)
                G, D = self.G, self.D
        # ADA lives in the losses that declare ``supports_ada``; build_loss rejects the knob for the others
        self.loss = build_loss(self.cfg.loss, G, D, channels=self.channels, num_labels=self.num_labels,
                               augment_pipe=self.augment_pipe, vgg=self.vgg, ada_target=self.cfg.aug.ada_target)

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch * self.loss.n_critic

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    # ---------------------------------------------------------------- one iteration
    def real_batch(self) -> torch.Tensor:
        """Next ``[batch, C + K, H, W]`` float32 real joint (classically augmented when asked)."""
        return self.real_batch_labels()[0]

    def real_batch_labels(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next real joint (as ``real_batch``) and its rows' labels ``[batch]`` (None when unconditional)."""
        idx = self._my_slice(self.order.next(self.cfg.batch)).to(self.joint.device)
        real = self.joint[idx].float()
        if self.classical is not None:
            image, mask = split_joint(real, self.channels)
            image, mask = self.classical(image, mask)
            real = to_joint(image, mask, self.num_labels)
        labels = None if self.labels is None else self.labels[idx.to(self.labels.device)]
        return real.contiguous(memory_format=self.memory_format), labels

    def _my_slice(self, x: torch.Tensor) -> torch.Tensor:
        r, b = self.dist.rank, self.batch
        return x[r * b : (r + 1) * b] if self.dist.enabled else x

    def latents(self) -> torch.Tensor:
        """This rank's ``z [batch, z_dim]``: its slice of the global batch's z."""
        z = torch.randn(self.cfg.batch, self.G.z_dim, device=self.device, generator=self.latent)
        return self._my_slice(z)

    def sync_grads(self, module: nn.Module) -> None:
        average_gradients(module, self.dist)

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
            real, labels = self.real_batch_labels()
            label_kw = {} if labels is None else {"labels": labels}  # only a conditional model is told labels
            z = self.latents()
            mask = real[:, self.channels :] if self.conditional else None
            with self.autocast():
                total, terms = loss.d_loss(real, z, mask, step=self.d_step, **label_kw)
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
            total_g, g_terms = loss.g_loss(real, z, mask, step=self.step, **label_kw)
        self.opt_G.zero_grad(set_to_none=True)
        total_g.backward()
        self.sync_grads(self.G)
        stats["grad_norm_G"] = _grad_norm(self.G)
        self.opt_G.step()
        with self.autocast():
            reg_g, reg_g_terms = loss.g_regularize(self.latents, step=self.step)
        if reg_g is not None:
            self.opt_G.zero_grad(set_to_none=True)
            reg_g.backward()
            self.sync_grads(self.G)
            self.opt_G.step()
        g_terms = {**g_terms, **reg_g_terms}
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
        """G_ema <- EMA of G (StyleGAN2-ADA); with ``ema_kimg=0`` (the DCGAN family and SPADE, whose official
        code keeps no average) G_ema is an exact copy of G, batch-norm statistics included."""
        if self.cfg.ema_kimg == 0:
            for a, b in zip(self.G_ema.state_dict().values(), self.G.state_dict().values(), strict=True):
                a.copy_(b)
            return
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
        """Whether D can saturate (the loss says; critics of the clip/GP family cannot)."""
        return bool(self.loss.saturates)

    # ---------------------------------------------------------------- state
    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """Everything a resume needs. ``gather`` (a collective: every rank must call it) adds all ranks' RNGs."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.cfg.hash(),
            # a checkpoint stands alone: what G was built from and for (medgan.generate.load_generator)
            "config": self.cfg.to_dict(),
            "dims": {"channels": self.channels, "num_labels": self.num_labels, "resolution": self.resolution},
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling
            "loss": self.loss.state_dict(),
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
            state["rng_ranks"] = gather_objects(state["rng"], self.dist)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            for name in ("G", "D", "G_ema"):
                getattr(self, name).load_state_dict(state[name])
            self.opt_G.load_state_dict(state["opt_G"])
            self.opt_D.load_state_dict(state["opt_D"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"the checkpoint does not fit this model/config: {str(e)[:500]}") from None
        if state.get("loss"):
            self.loss.load_state_dict(state["loss"])
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
