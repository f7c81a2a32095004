"""Golden test vectors for medgan's SPADE, computed by the official NVlabs/SPADE code.

    git clone https://github.com/NVlabs/SPADE /tmp/SPADE     # or an export of models/ options/ util/ data/
    python tools/golden/make_spade_golden.py /tmp/SPADE     # [--commit SHA when it is not a git work tree]
    python tools/golden/make_spade_golden.py /tmp/SPADE --counts   # only print the official parameter counts

It imports the upstream code from the given checkout (nothing of it is copied into medgan/ or tests/) and
writes ``tests/golden/spade_{norm,generator,discriminator,loss}.npz``. The upstream files are used
unchanged; two modules are stood in for in ``sys.modules`` before the import, not patched on disk:

- ``models.networks.sync_batchnorm`` (a git submodule, absent from a plain checkout):
  ``SynchronizedBatchNorm2d = torch.nn.BatchNorm2d``. On one device the synchronised batch norm computes
  plain batch norm (its forward falls back to ``F.batch_norm`` outside ``DataParallel``), so this is the
  ``spectralspadesyncbatch3x3`` generator on one GPU.
- ``dill`` (only ``util.util``'s pickling helpers use it; not installed here): the standard ``pickle``.

The official VGG19 loads ImageNet weights from the internet (``torchvision.models.vgg19(pretrained=True)``);
here ``torchvision.models.vgg19`` is replaced, for the run, by medgan's documented ``vgg19-random``
stand-in: ``torch.manual_seed(0)`` then torchvision's ``make_layers(cfgs["E"])`` (PyTorch's default conv
init), which ``medgan.models.vgg.load_vgg("vgg19-random")`` rebuilds bit for bit. ``nn.Module.cuda`` is a
no-op during the run (``VGGLoss`` calls ``.cuda()``). Everything runs on the CPU in float32.

Weights are drawn here (seeded), scaled to give O(1) activations, and rounded to float16-representable
values: they are stored as float16 (half the bytes) and load back as exactly the float32 values the
official networks ran with. SPADE's hidden width is hard-coded to 128 upstream, so the generator is kept
small with ngf = 2 (16 ngf = 32 channels at the 1x1 head of a 32x32 image).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden"
SIZE, LABELS, CHANNELS, BATCH = 32, 3, 3, 2
NGF, NDF = 2, 8


def import_upstream(root: Path):
    root = root.resolve()
    sync = types.ModuleType("models.networks.sync_batchnorm")
    sync.SynchronizedBatchNorm2d = nn.BatchNorm2d
    sys.modules["models.networks.sync_batchnorm"] = sync
    sys.modules.setdefault("dill", __import__("pickle"))
    sys.path.insert(0, str(root))
    import models.networks as networks  # noqa: E402  (upstream)
    import models.pix2pix_model as pix2pix_model  # noqa: E402  (upstream)
    from options.train_options import TrainOptions  # noqa: E402  (upstream)

    return networks, pix2pix_model, TrainOptions


def official_opt(networks, TrainOptions, **overrides) -> argparse.Namespace:
    """The official training defaults (``train.py`` with no flags, netG spade, netD multiscale), then
    ``overrides``; ``semantic_nc`` and ``gpu_ids`` as ``BaseOptions.parse`` sets them."""
    parser = TrainOptions().initialize(argparse.ArgumentParser())
    argv, sys.argv = sys.argv, sys.argv[:1]  # modify_commandline_options parses sys.argv
    try:
        networks.modify_commandline_options(parser, True)
        opt = parser.parse_args([])
    finally:
        sys.argv = argv
    opt.isTrain = True
    opt.no_instance = True  # medical label maps have no instance maps
    for k, v in overrides.items():
        setattr(opt, k, v)
    opt.semantic_nc = opt.label_nc + (1 if opt.contain_dontcare_label else 0) + (0 if opt.no_instance else 1)
    opt.gpu_ids = []
    return opt


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def official_counts(networks, TrainOptions) -> None:
    """ACDC-like: 4 labels, 1 image channel (D input 4 + 1; G's conv_img is 3-channel upstream)."""
    for size in (128, 256):
        opt = official_opt(networks, TrainOptions, label_nc=4, output_nc=1, crop_size=size, load_size=size)
        G = networks.SPADEGenerator(opt)
        D = networks.MultiscaleDiscriminator(opt)
        print(f"{size}: G {count(G)} ({count(G) / 1e6:.2f} M), D {count(D)} ({count(D) / 1e6:.2f} M)")


def fp16_exact_(net: nn.Module, gen: torch.Generator) -> None:
    """Every parameter ~ N(0, 1/fan_in) (1x1 for biases/vectors), rounded to float16-representable values;
    spectral-norm ``u``/``v`` vectors redrawn as unit vectors, rounded likewise."""
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = fan_in**-0.5 if p.dim() > 1 else 0.5
            p.copy_((torch.randn(p.shape, generator=gen) * scale).half().float())
        for name, b in net.named_buffers():
            if name.endswith(("weight_u", "weight_v")):
                v = torch.randn(b.shape, generator=gen)
                b.copy_((v / v.norm()).half().float())


def state_arrays(net: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in net.state_dict().items():
        if k.endswith(".weight") and k[: -len(".weight")] + ".weight_orig" in net.state_dict():
            continue  # the old spectral_norm's derived weight: recomputed from weight_orig, u, v
        a = v.detach().cpu().numpy()
        if a.dtype == np.float32:
            assert np.array_equal(a.astype(np.float16).astype(np.float32), a), k
            a = a.astype(np.float16)
        out[f"{prefix}{k}"] = a
    return out


def inputs(gen: torch.Generator):
    coarse = torch.randint(0, LABELS, (BATCH, 1, SIZE // 4, SIZE // 4), generator=gen)
    label = nn.functional.interpolate(coarse.float(), scale_factor=4, mode="nearest").long()
    seg = torch.zeros(BATCH, LABELS, SIZE, SIZE).scatter_(1, label, 1.0)
    image = (torch.rand(BATCH, CHANNELS, SIZE, SIZE, generator=gen) * 2 - 1).half().float()
    return label[:, 0], seg, image


def seeded_vgg19(*args, **kwargs):
    """medgan's ``vgg19-random``: seed 0, torchvision ``make_layers(cfgs["E"])``; stands in for the
    ImageNet download of ``torchvision.models.vgg19(pretrained=True)`` (see the module docstring)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    return types.SimpleNamespace(features=make_layers(cfgs["E"], batch_norm=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("upstream", type=Path, help="a checkout of github.com/NVlabs/SPADE")
    ap.add_argument("--counts", action="store_true", help="only print the official parameter counts")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--commit", default="", help="upstream commit, when the checkout is not a git work tree")
    args = ap.parse_args()
    networks, pix2pix_model, TrainOptions = import_upstream(args.upstream)
    official_counts(networks, TrainOptions)
    if args.counts:
        return
    commit = args.commit or subprocess.run(["git", "-C", str(args.upstream), "rev-parse", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    if not commit:
        ap.error("cannot tell the upstream commit: pass --commit")
    meta = {"upstream": np.array("NVlabs/SPADE"), "commit": np.array(commit),
            "torch": np.array(torch.__version__), "torchvision": np.array(torchvision.__version__)}
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(20190318)
    label, seg, image = inputs(gen)
    opt = official_opt(networks, TrainOptions, label_nc=LABELS, output_nc=CHANNELS, crop_size=SIZE,
                       load_size=SIZE, ngf=NGF, ndf=NDF)

    # 1. one SPADE normalisation ('spadesyncbatch3x3' as in the generator): train, then eval mode
    from models.networks.normalization import SPADE

    norm = SPADE("spadesyncbatch3x3", 8, LABELS)
    fp16_exact_(norm, gen)
    x = (torch.randn(BATCH, 8, 8, 8, generator=gen) * 2 + 0.5).half().float()
    w = state_arrays(norm, "w.")
    out_train = norm(x, seg)
    norm.eval()
    out_eval = norm(x, seg)
    np.savez_compressed(args.out / "spade_norm.npz", **meta, **w, x=x.numpy(), seg=seg.numpy(),
                        out_train=out_train.detach().numpy(), out_eval=out_eval.detach().numpy())

    # 2. the generator (official defaults but ngf; spectral + batch-norm SPADE; 'normal' upsampling)
    G = networks.define_G(opt)
    fp16_exact_(G, gen)
    wG = state_arrays(G, "w.")
    g_train = G(seg)
    G.eval()
    with torch.no_grad():
        g_eval = G(seg)
    np.savez_compressed(args.out / "spade_generator.npz", **meta, **wG, label=label.numpy(), seg=seg.numpy(),
                        out_train=g_train.detach().numpy(), out_eval=g_eval.numpy(),
                        ngf=np.array(NGF), opt=np.array(repr(vars(opt))))

    # 3. the multiscale discriminator on [seg, image] (upstream's channel order)
    D = networks.define_D(opt)
    fp16_exact_(D, gen)
    wD = state_arrays(D, "w.")
    d_in = torch.cat([seg, image], dim=1)
    d_train = [t.detach().numpy() for scale in D(d_in) for t in scale]
    D.eval()
    d_eval = [t.detach().numpy() for scale in D(d_in) for t in scale]
    feats = {f"train_{i}": a for i, a in enumerate(d_train)} | {f"eval_{i}": a for i, a in enumerate(d_eval)}
    np.savez_compressed(args.out / "spade_discriminator.npz", **meta, **wD, seg=seg.numpy(), image=image.numpy(),
                        ndf=np.array(NDF), n_layers=np.array(opt.n_layers_D), num_D=np.array(opt.num_D), **feats)

    # 4. one loss evaluation: Pix2PixModel.compute_generator_loss then compute_discriminator_loss, from
    #    the weights of files 2 and 3 (hinge, feature matching x10, VGG19 x10 on the seeded stand-in)
    torchvision.models.vgg19 = seeded_vgg19
    nn.Module.cuda = lambda self, *a, **k: self
    model = pix2pix_model.Pix2PixModel(opt)
    model.netG.load_state_dict(_torch_state(wG))
    model.netD.load_state_dict(_torch_state(wD))
    g_losses, fake = model.compute_generator_loss(seg, image)
    d_losses = model.compute_discriminator_loss(seg, image)
    losses = {f"G_{k}": v.detach().reshape(()).numpy() for k, v in g_losses.items()}
    losses |= {f"D_{k}": v.detach().reshape(()).numpy() for k, v in d_losses.items()}
    print({k: float(v) for k, v in losses.items()})
    np.savez_compressed(args.out / "spade_loss.npz", **meta, **losses, seg=seg.numpy(), image=image.numpy(),
                        fake=fake.detach().numpy(), lambda_feat=np.array(opt.lambda_feat),
                        lambda_vgg=np.array(opt.lambda_vgg))
    for f in sorted(args.out.glob("spade_*.npz")):
        print(f, f.stat().st_size)


def _torch_state(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.asarray(a))
        out[k[2:]] = t.float() if t.dtype == torch.float16 else t
    return out


if __name__ == "__main__":
    main()
