"""Frozen dataclass configs. One tree per run; ``config.json`` in the run folder reproduces it.

``TrainConfig`` holds ``model: ModelConfig``, ``loss: LossConfig`` and ``aug: AugConfig``.
Every field can be set from the CLI with ``--set section.field=value`` (or ``--set field=value``
when the name is unique across sections), validated against ``CHOICES`` so a typo or an unknown
knob value is one clear ``ConfigError`` instead of a crash hours into a run.

Table 1 of the paper maps onto fields as follows (see ``TABLE1`` for the searched values):
DiffAugment -> ``aug.diffaugment``; activations -> ``model.g_activation``/``d_activation``;
norms -> ``model.g_norm``/``d_norm``; filters -> ``model.g_filters``/``d_filters``; spectral norm ->
``model.g_spectral``/``d_spectral``; init -> ``model.init``/``init_gain``; GP -> ``loss.gp_weight``;
clipping -> ``loss.clip``; feature matching -> ``loss.fm_weight``; VGG -> ``loss.vgg_weight``;
learning rate -> ``lr``; label smoothing -> ``loss.label_smoothing``; data augmentation ->
``aug.classical``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from medgan.errors import ConfigError

# Fields that may change when a run is resumed: they change how long and how it is watched, not what
# is trained. ``TrainConfig.hash`` leaves them out, so one hash names a training run across resumes.
RESUME_FREE_KEYS = ("out", "kimg", "data", "device", "compile", "tick_kimg", "snapshot_kimg", "metric_kimg",
                    "metrics", "metric_features", "metric_n", "grid")


ACTIVATIONS = ("relu", "leakyrelu", "elu", "selu")
NORMS = ("batch", "instance", "none")
INITS = ("normal", "xavier", "xavier-uniform", "kaiming")

# Allowed values of the categorical fields, keyed "section.field". Checked in __post_init__.
CHOICES: dict[str, tuple] = {
    "model.g_activation": ACTIVATIONS,
    "model.d_activation": ACTIVATIONS,
    "model.g_norm": NORMS,
    "model.d_norm": NORMS,
    "model.init": INITS,
    "model.cond_d": ("projection", "concat"),
    "loss.divergence": ("kl", "rkl", "js", "pearson", "hellinger"),  # = medgan.losses.fgan.DIVERGENCES
}

# The paper's Table 1 search space (the sweep samples from it).
TABLE1: dict[str, tuple] = {
    "aug.diffaugment": ("", "color,translation,cutout"),
    "model.d_activation": ACTIVATIONS,
    "model.g_activation": ACTIVATIONS,
    "model.d_norm": ("batch", "instance"),
    "model.g_norm": ("batch", "instance"),
    "model.d_filters": (16, 32, 64, 128),
    "model.g_filters": (16, 32, 64, 128),
    "model.d_spectral": (True, False),
    "model.g_spectral": (True, False),
    "model.init": INITS,
    "model.init_gain": (0.01, 0.02, 0.1, 1.0),
    "loss.gp_weight": (0.0, 0.1, 1.0, 10.0),
    "loss.clip": (0.0, 0.01, 0.1),
    "loss.fm_weight": (0.0, 1.0, 10.0),
    "loss.vgg_weight": (0.0, 1.0, 10.0),
    "lr": (0.00004, 0.00005, 0.0001, 0.0002, 0.001),
    "loss.label_smoothing": (0.0, 0.1),
    "aug.classical": (True, False),
}


def check_device_amp(device: str, amp: str, owner: str = "") -> None:
    """The one check of the ``device`` / ``amp`` fields every config has (``owner``: "unet ", "classify ", ...)."""
    if amp not in ("auto", "bf16", "off"):
        raise ConfigError(f"{owner}amp={amp!r} is not one of ['auto', 'bf16', 'off']")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"{owner}device={device!r} is not auto, cpu or cuda[:N]")


def _check_choices(obj: Any, section: str) -> None:
    for f in fields(obj):
        key = f"{section}.{f.name}" if section else f.name
        if key in CHOICES and getattr(obj, f.name) not in CHOICES[key]:
            raise ConfigError(f"{key}={getattr(obj, f.name)!r} is not one of {list(CHOICES[key])}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of G and D. ``name`` picks the registry entry (dcgan, stylegan2, spade)."""

    name: str = "dcgan"
    latent_dim: int = 100
    g_filters: int = 64
    d_filters: int = 64
    g_activation: str = "relu"
    d_activation: str = "leakyrelu"
    g_norm: str = "batch"
    d_norm: str = "batch"
    g_spectral: bool = False
    d_spectral: bool = False
    init: str = "normal"
    init_gain: float = 0.02
    # StyleGAN2 / SPADE knobs (ignored by dcgan)
    w_dim: int = 256
    mapping_layers: int = 8
    channel_max: int = 256
    channel_base: int = 16384  # StyleGAN2: channels at resolution r = min(channel_base // r, channel_max)
    mbstd_group: int = 4  # StyleGAN2 D: minibatch-stddev group size (paper256: 8)
    style_mixing: float = 0.9
    truncation: float = 1.0
    spade_hidden: int = 64
    d_scales: int = 2
    d_layers: int = 4  # SPADE: 4x4 convs per PatchGAN scale (NVlabs/SPADE's n_layers_D)
    spade_upsampling: str = "normal"  # SPADE: num_upsampling_layers normal | more | most (5 | 6 | 7 doublings)
    spade_z: bool = False  # SPADE: False = upstream (G starts from the mask, z ignored); True = fc(z) start
    # label conditioning (medgan.models.conditional; DCGAN backbone only): "" = unconditional | group | phase | group,phase
    condition: str = ""
    cond_d: str = "projection"  # how D takes the label: projection (Miyato & Koyama 2018) | concat (one-hot maps)
    info_cat: int = 0  # InfoGAN: categories of the categorical code (0 = none)
    info_cont: int = 0  # InfoGAN: number of continuous codes U(-1, 1) (0 = none)

    def __post_init__(self) -> None:
        _check_choices(self, "model")
        if self.latent_dim <= 0:
            raise ConfigError(f"model.latent_dim must be > 0, got {self.latent_dim}")
        if self.init_gain <= 0:
            raise ConfigError(f"model.init_gain must be > 0, got {self.init_gain}")


@dataclass(frozen=True)
class LossConfig:
    """The adversarial loss (``name`` = registry key) and its tricks."""

    name: str = "dcgan"
    label_smoothing: float = 0.0  # one-sided: real target = 1 - label_smoothing (0.1 -> alpha = 0.9)
    clip: float = 0.0  # WGAN weight clipping (0 = off)
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight
    n_critic: int = 1  # D steps per G step (WGANs: 5)
    fm_weight: float = 0.0  # feature matching on D's intermediate features
    vgg_weight: float = 0.0  # VGG perceptual term (see medgan.losses for its meaning when unconditional)
    vgg_features: str = "vgg16"  # "vgg16" (pretrained, must be present) | "vgg16-random" (labelled substitute)
    r1_gamma: float = 0.0  # R1 penalty weight (StyleGAN2)
    r1_interval: int = 16  # lazy regularisation interval
    pl_weight: float = 0.0  # path-length regularisation (StyleGAN2)
    info_weight: float = 1.0  # InfoGAN λ of the categorical code (Chen et al. 2016: 1 for discrete codes)
    info_cont_weight: float = 0.1  # InfoGAN λ of the continuous codes (smaller, as Chen et al. advise)
    divergence: str = "js"  # f-GAN (loss.name=fgan): kl | rkl | js | pearson | hellinger (Nowozin et al. Table 2)
    ebgan_margin: float = 1.0  # EBGAN margin m on the per-pixel reconstruction MSE (see medgan.losses.ebgan)
    pt_weight: float = 0.1  # EBGAN pulling-away term weight (Zhao et al. 2017: 0.1)
    # reconstruction (loss.name=pix2pix; medgan.losses.pix2pix): GANS["pix2pix"] sets l1_weight=100 (Isola et al.)
    l1_weight: float = 0.0  # λ_L1 on |G(x) - y|
    adv_weight: float = 1.0  # weight of the adversarial term (0 = the L1-only U-Net, --gan recon-l1)
    acceleration: float = 4.0  # k-space undersampling factor of the Cartesian masks (4 or 8 in the experiment)
    center_fraction: float = 0.0  # fully sampled centre lines / width; 0 = fastMRI's 0.32/acceleration (0.08 at 4x)

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.clip < 0 or self.gp_weight < 0 or self.fm_weight < 0 or self.vgg_weight < 0:
            raise ConfigError("loss weights (clip, gp_weight, fm_weight, vgg_weight) must be >= 0")
        if self.n_critic < 1:
            raise ConfigError(f"loss.n_critic must be >= 1, got {self.n_critic}")
        _check_choices(self, "loss")
        if self.ebgan_margin <= 0 or self.pt_weight < 0:
            raise ConfigError(f"loss.ebgan_margin ({self.ebgan_margin}) must be > 0, loss.pt_weight ({self.pt_weight}) >= 0")


@dataclass(frozen=True)
class AugConfig:
    """DiffAugment on what D sees, and classical augmentation of the real set."""

    diffaugment: str = ""  # comma list of color,translation,cutout ("" = off)
    classical: bool = False  # rotation / shift / flip / scale of the real set (image and mask alike)
    ada_target: float = 0.0  # ADA r_t target (0 = off; StyleGAN2-ADA uses 0.6)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``data`` is a prepared folder, ``out`` the run folder."""

    data: str = ""
    out: str = ""
    kimg: float = 10.0
    batch: int = 64
    lr: float = 0.0002
    lr_d: float | None = None  # None = same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    ema_rampup: float = 0.05  # half-life <= this fraction of the images seen so far (0 = off)
    ema_kimg: float = 10.0  # G_ema half-life in kimg (0 = no average: G_ema is a copy of G; GANS sets 0 but for StyleGAN2)
    tick_kimg: float = 1.0
    snapshot_kimg: float = 10.0
    metric_kimg: float = 0.0  # 0 = metrics only at the end (if any)
    metrics: tuple[str, ...] = ()
    metric_features: str = ""  # fid/kid hook extractor; "" = $MEDGAN_METRIC_FEATURES or "inception"
    metric_n: int = 0  # samples per hook evaluation; 0 = $MEDGAN_METRIC_N or 1024 on CUDA / 64 on CPU
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "off"  # off (fp32, the paper's precision) | bf16 (opt-in fast mode) | auto (bf16 on CUDA, fp32 on CPU)
    compile: bool = False
    channels_last: bool = True
    deterministic: bool = False
    split: str = "train+val"  # the paper's training patients (medgan.data.prepared.GAN_SPLIT); "train"/"val"/"test"/"all"
    gan: str = ""  # the GANS entry --gan applied (recorded; generate and the sweep read it)
    resolution: int = 0  # 0 = the prepared set's image size; anything else must equal it
    grid: int = 16  # image+mask pairs in each samples-<kimg>.png
    saturate_loss: float = 1e-3  # D saturated: its adversarial loss below this at every step of a tick (0 = off)
    saturate_gap: float = 30.0  # ... or mean D(real) - D(fake) logit gap above this at every step (0 = off)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    aug: AugConfig = field(default_factory=AugConfig)

    def __post_init__(self) -> None:
        check_device_amp(self.device, self.amp)
        if self.batch < 1 or self.kimg <= 0:
            raise ConfigError("batch must be >= 1 and kimg > 0")
        if self.tick_kimg <= 0 or self.snapshot_kimg <= 0 or self.metric_kimg < 0 or self.ema_kimg < 0 or self.ema_rampup < 0:
            raise ConfigError("tick_kimg and snapshot_kimg must be > 0; metric_kimg, ema_kimg and ema_rampup >= 0")
        if self.resolution < 0 or self.grid < 0:
            raise ConfigError(f"resolution ({self.resolution}) and grid ({self.grid}) must be >= 0")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def hash(self) -> str:
        """Short hash of the fields that define what is trained (``RESUME_FREE_KEYS`` left out).

        The one config hash: ``config.json``'s ``config_hash``, every checkpoint's, and a generated set's.
        """
        d = {k: v for k, v in flatten(self.to_dict()).items() if k not in RESUME_FREE_KEYS}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def differences(self, other: TrainConfig) -> list[str]:
        """``["lr: 0.0002 -> 0.001", ...]`` for the fields of ``hash`` that differ from ``other``."""
        fa, fb = flatten(self.to_dict()), flatten(other.to_dict())
        return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
                if k not in RESUME_FREE_KEYS and fa.get(k) != fb.get(k)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, d)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> TrainConfig:
        return apply_overrides(self, assignments)


# ---------------------------------------------------------------------------------------------
# generic helpers
# ---------------------------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"g_filters": 64}}`` -> ``{"model.g_filters": 64}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Build a (nested) dataclass from a dict; unknown keys are a ``ConfigError``."""
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping for {cls.__name__}, got {type(d).__name__}")
    types = _field_types(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, value in d.items():
        tp = types[name]
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value)
        else:
            kwargs[name] = _coerce(tp, value, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return tuple(value)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    return value


def _resolve_key(cfg: Any, key: str) -> list[str]:
    """``"g_filters"`` -> ``["model", "g_filters"]`` when unique; dotted keys are taken as is."""
    if "." in key:
        return key.split(".")
    hits = []

    def walk(obj: Any, prefix: list[str]) -> None:
        for f in fields(obj):
            if f.name == key and not is_dataclass(getattr(obj, f.name)):
                hits.append(prefix + [f.name])
            if is_dataclass(getattr(obj, f.name)):
                walk(getattr(obj, f.name), prefix + [f.name])

    walk(cfg, [])
    if not hits:
        raise ConfigError(f"unknown config field {key!r}")
    if len(hits) > 1:
        raise ConfigError(f"config field {key!r} is ambiguous: {['.'.join(h) for h in hits]}")
    return hits[0]


def apply_overrides(cfg: Any, assignments: list[str] | dict[str, Any]) -> Any:
    """Return a copy of ``cfg`` with ``["model.g_filters=32", "lr=1e-4"]`` applied and validated."""
    if isinstance(assignments, dict):
        items = list(assignments.items())
    else:
        items = []
        for a in assignments:
            if "=" not in a:
                raise ConfigError(f"--set expects knob=value, got {a!r}")
            k, v = a.split("=", 1)
            items.append((k.strip(), v.strip()))
    d = to_dict(cfg)
    for key, value in items:
        path = _resolve_key(cfg, key)
        node = d
        for p in path[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config section {p!r} in {key!r}")
            node = node[p]
        if path[-1] not in node:
            raise ConfigError(f"unknown config field {key!r}")
        node[path[-1]] = value
    return from_dict(type(cfg), d)


def replace(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, **changes)


# ---------------------------------------------------------------------------------------------
# profiles: the two ways of running the study
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """Sizes of one way of running the study. ``quick``: phantoms on CPU; ``paper``: real data on a GPU."""

    name: str
    size: int | None  # prepared image size; None = the paper's size per dataset
    kimg: float  # GAN training length
    batch: int
    n_generate: int  # generated pairs per GAN
    features: str  # FID feature extractor
    phantoms: bool  # may write phantoms where the raw data is missing (never in ``paper``)
    train_knobs: tuple[str, ...] = ()  # extra --set knobs for GAN training
    # per-GAN --set knobs on top of train_knobs (medgan.experiments.trained_run): the quick profile shrinks the two
    # big models (StyleGAN2, SPADE) to CPU size; the paper profile has none (the models stay the published ones)
    gan_knobs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unet_seeds: int = 3
    unet_knobs: dict = field(default_factory=dict)  # UNetConfig fields
    # The Table 2 study (notebook 05, and 04/06 that draw on its runs): prepared image size and GAN length;
    # None = ``size`` / ``kimg``. The quick profile trains its 21 GANs at the sweep's 32² (where notebook 03
    # found the best configurations) so that the whole book builds in minutes on a 2-core CPU.
    table2_size: int | None = None
    table2_kimg: float | None = None
    table2_batch: int | None = None  # None = batch
    table2_gan_kimg: dict[str, float] = field(default_factory=dict)  # per-GAN exceptions to table2_kimg
    # Table 2 trains each swept GAN with notebook 03's best configuration (the paper's recipe). The quick profile's
    # sweep (2 trials of 64 images per cell) cannot rank configurations, so there Table 2 trains the defaults.
    table2_swept: bool = True
    # The book's Table 1 sweep (notebook 03): trials per GAN per dataset, each trial's length/batch/image size,
    # the metric's sample count, knobs fixed for every trial and Table 1 knobs sampled from a subset ("k=v1|v2").
    sweep_trials: int = 100
    sweep_kimg: float = 200.0
    sweep_batch: int = 64
    sweep_size: int | None = None
    sweep_metric_n: int = 0
    sweep_pruner: str = "median"
    sweep_knobs: tuple[str, ...] = ()
    sweep_restrict: tuple[str, ...] = ()


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", size=64, kimg=8.0, batch=32, n_generate=96, features="inception-random:128", phantoms=True,
        train_knobs=("g_filters=32", "d_filters=32", "tick_kimg=0.5", "snapshot_kimg=4.0",
                     "loss.vgg_features=vgg16-random"),  # used only when a swept best config turns the VGG term on
        # StyleGAN2 24 M -> 0.08 M G parameters, SPADE's G 29 M -> 0.58 M at 32² (seconds per kimg, not hours, on a
        # CPU: 7 GANs x 3 datasets of Table 2 fit the book's 20-minute build)
        gan_knobs={"stylegan2": ("model.channel_base=1024", "model.channel_max=32", "model.mapping_layers=2",
                                 "model.w_dim=32", "model.latent_dim=32"),
                   "spade": ("model.g_filters=8", "model.d_filters=8", "model.channel_max=64",
                             "model.spade_hidden=16")},
        # every Table 2 row trains its U-Net for the same 8 epochs x 8 batches (an epoch of IDRiD's 6-image phantom split
        # would be one step: its U-Net learnt nothing in 8 of them)
        unet_seeds=2, unet_knobs={"depth": 3, "width": 16, "max_epochs": 8, "patience": 3, "steps_per_epoch": 8},
        # Table 2 at the sweep's 32²: batch 16 for 4 kimg (250 steps: the first blobs of anatomy; 2 kimg gave noise);
        # the shrunk StyleGAN2 and SPADE cost ~10x more per kimg and show their shapes at 2
        table2_size=32, table2_kimg=4.0, table2_batch=16, table2_gan_kimg={"spade": 2.0, "stylegan2": 2.0},
        table2_swept=False,
        # 2 trials x 5 GANs x 3 datasets of 64 images each at 32², FID on 32 samples with Inception fed 128² inputs
        # (its forward pass is most of a trial's time on a CPU), the small filter counts, no VGG term
        sweep_trials=2, sweep_kimg=0.064, sweep_batch=16, sweep_size=32, sweep_metric_n=32, sweep_pruner="none",
        # the VGG knob is pinned off: a swept-best VGG term would make each 8-kimg Table 2 run ~20 min on a CPU
        sweep_knobs=("loss.vgg_weight=0", "tick_kimg=0.064", "snapshot_kimg=0.064"),
        sweep_restrict=("model.g_filters=16|32", "model.d_filters=16|32|64"),
    ),
    # Every step of every notebook at toy size (tests/test_notebook_params.py reruns the notebooks with it): 32² phantoms,
    # 64 images of training, 16 generated pairs, a one-epoch U-Net. Its numbers mean nothing; it proves the code runs.
    "smoke": Profile(
        name="smoke", size=32, kimg=0.064, batch=16, n_generate=16, features="inception-random:128", phantoms=True,
        train_knobs=("g_filters=16", "d_filters=16", "tick_kimg=0.032", "snapshot_kimg=0.064",
                     "loss.vgg_features=vgg16-random"),
        gan_knobs={"stylegan2": ("model.channel_base=1024", "model.channel_max=32", "model.mapping_layers=2",
                                 "model.w_dim=32", "model.latent_dim=32"),
                   "spade": ("model.g_filters=8", "model.d_filters=8", "model.channel_max=64",
                             "model.spade_hidden=16")},
        unet_seeds=1, unet_knobs={"depth": 2, "width": 8, "max_epochs": 1, "patience": 1},
        sweep_trials=1, sweep_kimg=0.032, sweep_batch=16, sweep_size=32, sweep_metric_n=16, sweep_pruner="none",
        sweep_knobs=("loss.vgg_features=vgg16-random", "tick_kimg=0.032", "snapshot_kimg=0.032"),
        sweep_restrict=("model.g_filters=16", "model.d_filters=16"),
    ),
    "paper": Profile(
        name="paper", size=None, kimg=1000, batch=64, n_generate=10000, features="inception", phantoms=False,
        unet_seeds=3, unet_knobs={},
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; use one of {sorted(PROFILES)}") from None
