"""Label conditioning (conditional GAN) and InfoGAN latent codes for the DCGAN backbone.

**Labels.** ``model.condition`` names the per-slice fields a conditional GAN is given: ``group`` (the ACDC
pathology group), ``phase`` (ED/ES) or ``group,phase``. Several fields combine into ONE class index
(mixed radix, the first field most significant: ``group,phase`` -> ``group * 2 + phase``, 10 classes), so
G and D hold one embedding table each and a class is one row of it. ``encode_labels`` turns a prepared
set's ``group``/``phase`` arrays (``medgan.data.prepare``) into those indices, ``class_values`` turns an
index back into the field values a generated set records in the same arrays.

- G: a learned embedding of the class (``G_EMBED`` dims) concatenated to ``z`` (Mirza & Osindero 2014 with
  an embedding instead of a one-hot). Not conditional batch norm: G's norm is a Table-1 knob
  (batch | instance | none), and an embedding at the input works under every one of them unchanged.
- D: ``model.cond_d`` = ``projection`` (Miyato & Koyama 2018: ``logit += <embed(y), φ(x)>``, φ = D's last
  feature map summed over space) or ``concat`` (one {-1, +1} map per class concatenated to D's input).

**InfoGAN codes** (Chen et al. 2016). The codes are *computed from z*, not drawn beside it: with
``model.info_cat = K`` and ``model.info_cont = L``, the last ``1 + L`` dims of ``z`` (the last ``L`` when
K = 0) become the codes ``cat = floor(Φ(z_i) K)`` (uniform over K) and ``cont_j = 2 Φ(z_j) - 1`` (U(-1, 1)),
Φ the standard normal CDF. So the trainer's one latent stream (already in the checkpoint) fixes the codes
and resume stays exact; ``z_for_codes`` inverts the map to ask G for given codes. G's input is then
``[z noise dims, one-hot(cat), cont]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medgan.config import ModelConfig
from medgan.errors import ConfigError

# The values of each label field, in the order of their class index (the prepared ACDC set's spelling).
LABEL_FIELDS: dict[str, tuple[str, ...]] = {
    "group": ("NOR", "MINF", "DCM", "HCM", "RV"),
    "phase": ("ED", "ES"),
}
# their dtypes in a prepared set (``medgan.data.prepare``'s ACDC ``extra_arrays``): a generated set writes the same
LABEL_DTYPES: dict[str, str] = {"group": "<U16", "phase": "<U2"}
G_EMBED = 32  # width of G's class embedding (concatenated to z)
Q_HIDDEN = 128  # the Q head's hidden width (InfoGAN's Q: one hidden layer on D's features)


def condition_fields(condition: str) -> tuple[str, ...]:
    """``"group,phase"`` -> ``("group", "phase")``; ConfigError on an unknown or repeated field."""
    names = tuple(p.strip() for p in condition.split(",") if p.strip())
    bad = [n for n in names if n not in LABEL_FIELDS]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"model.condition={condition!r}: use '' or fields from {sorted(LABEL_FIELDS)} "
                          "joined by ',' (each once)")
    return names


def num_classes(condition: str) -> int:
    """Classes of the combined label (0 = unconditional)."""
    names = condition_fields(condition)
    return math.prod(len(LABEL_FIELDS[n]) for n in names) if names else 0


def encode_labels(arrays: Mapping[str, np.ndarray], condition: str, where: str = "the prepared set") -> np.ndarray:
    """Per-slice field values (``{"group": ["DCM", ...], "phase": ["ED", ...]}``) -> int64 class indices."""
    names = condition_fields(condition)
    index = None
    for name in names:
        if name not in arrays:
            raise ConfigError(f"model.condition={condition!r} needs a per-slice {name!r} array, which {where} "
                              f"does not have (it has {sorted(arrays) or 'none'})")
        values = np.asarray(arrays[name]).astype(str)
        vocab = LABEL_FIELDS[name]
        unknown = sorted(set(values.tolist()) - set(vocab))
        if unknown:
            raise ConfigError(f"{where}: {name} values {unknown[:5]} are not among {list(vocab)}")
        lookup = {v: i for i, v in enumerate(vocab)}
        idx = np.asarray([lookup[v] for v in values.tolist()], np.int64)
        index = idx if index is None else index * len(vocab) + idx
    return np.zeros(0, np.int64) if index is None else index.astype(np.int64)


def class_values(index: np.ndarray | torch.Tensor, condition: str) -> dict[str, np.ndarray]:
    """Class indices ``[n]`` -> ``{field: values [n]}`` (the inverse of ``encode_labels``)."""
    index = np.asarray(index, np.int64).copy()
    out: dict[str, np.ndarray] = {}
    for name in reversed(condition_fields(condition)):
        vocab = LABEL_FIELDS[name]
        out[name] = np.asarray(vocab, dtype=LABEL_DTYPES[name])[index % len(vocab)]
        index //= len(vocab)
    return {k: out[k] for k in condition_fields(condition)}


def parse_label(text: str, condition: str) -> int:
    """``--label DCM,ES`` -> one class index: one value per field of ``condition``, in its order."""
    names = condition_fields(condition)
    values = [v.strip() for v in text.split(",")]
    if len(values) != len(names):
        raise ConfigError(f"--label {text!r}: this run is conditioned on {','.join(names)}, so give "
                          f"{len(names)} value(s) such as {','.join(LABEL_FIELDS[n][0] for n in names)}")
    arrays = {}
    for name, value in zip(names, values, strict=True):
        match = [v for v in LABEL_FIELDS[name] if v.lower() == value.lower()]
        if not match:
            raise ConfigError(f"--label {text!r}: {name} {value!r} is not one of {list(LABEL_FIELDS[name])}")
        arrays[name] = np.asarray(match)
    return int(encode_labels(arrays, condition)[0])


def prior_labels(prior: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` class indices in the proportions of ``prior [classes]``, by stratified quantiles (no randomness):
    what a label-conditional G draws when called without labels (training grids, metric hooks)."""
    cdf = torch.cumsum(prior.float(), 0)
    cdf = cdf / cdf[-1]
    q = (torch.arange(n, device=prior.device, dtype=torch.float32) + 0.5) / max(n, 1)
    return torch.searchsorted(cdf, q).clamp_(max=len(prior) - 1)


# ------------------------------------------------------------------------------------------------ InfoGAN codes
def info_dims(info_cat: int, info_cont: int) -> int:
    """How many trailing dims of z the codes take."""
    return (1 if info_cat > 0 else 0) + info_cont


def _phi(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x.float() / math.sqrt(2.0)))


def codes_from_z(z: torch.Tensor, info_cat: int, info_cont: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(cat [N] int64 | None, cont [N, L] | None)`` from the trailing dims of ``z [N, z_dim]``."""
    z = z.flatten(1)
    n_code = info_dims(info_cat, info_cont)
    tail = z[:, z.shape[1] - n_code :]
    cat = cont = None
    if info_cat > 0:
        cat = (_phi(tail[:, 0]) * info_cat).long().clamp_(0, info_cat - 1)
        tail = tail[:, 1:]
    if info_cont > 0:
        cont = 2.0 * _phi(tail) - 1.0
    return cat, cont


def z_for_codes(z: torch.Tensor, info_cat: int, info_cont: int, *, cat: int | torch.Tensor | None = None,
                cont: Mapping[int, float] | None = None) -> torch.Tensor:
    """A copy of ``z`` whose code dims give category ``cat`` and continuous values ``{j: c_j}`` (c in (-1, 1));
    codes not given keep the value z already implies. ``codes_from_z`` of the result returns them."""
    z = z.clone()
    start = z.shape[1] - info_dims(info_cat, info_cont)
    normal = torch.distributions.Normal(0.0, 1.0)
    if cat is not None:
        if info_cat <= 0:
            raise ConfigError("a categorical code was given but the run has model.info_cat=0")
        cat_t = torch.as_tensor(cat, dtype=torch.float32).expand(len(z))
        if bool(((cat_t < 0) | (cat_t >= info_cat)).any()):
            raise ConfigError(f"categorical code {cat} is outside [0, {info_cat})")
        z[:, start] = normal.icdf((cat_t + 0.5) / info_cat).to(z)
    for j, value in (cont or {}).items():
        if not 0 <= j < info_cont:
            raise ConfigError(f"continuous code c{j} does not exist (the run has model.info_cont={info_cont})")
        if not -1.0 < float(value) < 1.0:
            raise ConfigError(f"continuous code c{j}={value} must lie in (-1, 1)")
        z[:, start + (1 if info_cat > 0 else 0) + j] = float(normal.icdf(torch.tensor((float(value) + 1) / 2)))
    return z


# ------------------------------------------------------------------------------------------------ modules
class GeneratorInput(nn.Module):
    """What G's first layer sees: ``z`` -> ``[z noise, one-hot(cat), cont, embed(y)]`` (``[N, in_dim]``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_classes = num_classes(cfg.condition)
        self.info_cat, self.info_cont = cfg.info_cat, cfg.info_cont
        n_code = info_dims(cfg.info_cat, cfg.info_cont)
        if n_code >= cfg.latent_dim:
            raise ConfigError(f"model.latent_dim={cfg.latent_dim} must exceed the {n_code} dims the InfoGAN codes take")
        self.noise_dim = cfg.latent_dim - n_code
        self.embed = nn.Embedding(self.num_classes, G_EMBED) if self.num_classes else None
        self.in_dim = self.noise_dim + cfg.info_cat + cfg.info_cont + (G_EMBED if self.embed is not None else 0)
        # the class frequencies of the training set (set by the trainer; saved with G): labels=None draws these
        self.register_buffer("label_prior", torch.ones(max(self.num_classes, 1)))
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0)  # same scale as z

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        z = z.flatten(1)
        parts = [z[:, : self.noise_dim]]
        cat, cont = codes_from_z(z, self.info_cat, self.info_cont)
        if cat is not None:
            parts.append(F.one_hot(cat, self.info_cat).to(z.dtype))
        if cont is not None:
            parts.append(cont.to(z.dtype))
        if self.embed is not None:
            if labels is None:
                labels = prior_labels(self.label_prior, len(z))
            parts.append(self.embed(labels.long()).to(z.dtype))
        return torch.cat(parts, dim=1)


class ProjectionHead(nn.Module):
    """Miyato & Koyama (2018): ``<embed(y), Σ_hw φ(x)>`` added to D's logit."""

    def __init__(self, classes: int, features: int):
        super().__init__()
        self.embed = nn.Embedding(classes, features)
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (self.embed(labels.long()) * h.float().sum(dim=(2, 3))).sum(dim=1)


def label_maps(labels: torch.Tensor, classes: int, like: torch.Tensor) -> torch.Tensor:
    """``labels [N]`` -> ``[N, classes, H, W]`` {-1, +1} one-hot maps shaped like ``like [N, *, H, W]``."""
    onehot = F.one_hot(labels.long(), classes).to(like.dtype) * 2 - 1
    return onehot[:, :, None, None].expand(-1, -1, *like.shape[2:])


class QHead(nn.Module):
    """InfoGAN's Q on D's last feature map ``[N, c, 4, 4]``: ``(cat_logits [N, K] | None, cont_mean [N, L] | None)``.

    The continuous codes' Gaussian has a fixed unit variance (``medgan.losses.info``), so Q predicts only its mean.
    """

    def __init__(self, features: int, info_cat: int, info_cont: int, start: int):
        super().__init__()
        self.info_cat, self.info_cont = info_cat, info_cont
        self.body = nn.Sequential(nn.Conv2d(features, Q_HIDDEN, start, 1, 0), nn.Flatten(), nn.LeakyReLU(0.2))
        self.out = nn.Linear(Q_HIDDEN, info_cat + info_cont)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        out = self.out(self.body(h)).float()
        cat = out[:, : self.info_cat] if self.info_cat else None
        cont = out[:, self.info_cat :] if self.info_cont else None
        return cat, cont


def check_label_support(cfg: ModelConfig, G: nn.Module, D: nn.Module) -> None:
    """ConfigError when ``model.condition``/``info_*`` ask a model that does not implement them."""
    if cfg.condition and not getattr(G, "num_classes", 0):
        raise ConfigError(f"model.condition={cfg.condition!r}: label conditioning is implemented on the dcgan "
                          f"backbone only, not model.name={cfg.name!r}; use model.condition=''")
    if (cfg.info_cat or cfg.info_cont) and getattr(D, "q_head", None) is None:
        raise ConfigError(f"model.info_cat/info_cont: InfoGAN codes are implemented on the dcgan backbone only, "
                          f"not model.name={cfg.name!r}; use 0")
