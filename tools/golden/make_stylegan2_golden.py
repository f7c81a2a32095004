"""Golden vectors for medgan's StyleGAN2 from the official NVlabs/stylegan2-ada-pytorch code, on CPU.

Usage::

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada   # (or any checkout of it)
    python tools/golden/make_stylegan2_golden.py /tmp/sg2ada tests/golden

The upstream code is imported from the path given on the command line; nothing of it is copied into
medgan/ or tests/. On CPU its custom CUDA ops fall back to their reference implementations
(``bias_act``/``upfirdn2d`` ``impl='ref'``, plain ``conv2d``), so no compiler is needed; it ran unpatched
on torch 2.x. Every file holds float32 arrays: ``w/<official parameter or buffer name>`` (the weights),
``in/<name>`` (inputs) and ``out/<name>`` (what the official code returned), plus ``meta/<name>``
(configuration scalars). tests/test_stylegan2.py loads the weights into medgan's networks and checks
the outputs.

Configuration: 32x32, 5 channels (1 image + 4 label channels, ACDC's joint input), z = w = 32, mapping
8 layers, channel_base 512, channel_max 64 (so the channel counts differ between resolutions: 64, 64,
32, 16), fp32 (``num_fp16_res=0``, ``conv_clamp=None``), minibatch-std group 4 on a batch of 8.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

RES, CH, Z, W = 32, 5, 32, 32
CHANNEL_BASE, CHANNEL_MAX, MBSTD = 512, 64, 4


def arrays(prefix: str, d: dict) -> dict:
    return {f"{prefix}/{k}": v.detach().cpu().float().numpy() if torch.is_tensor(v) else np.asarray(v, np.float32)
            for k, v in d.items()}


def state(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items() if not k.endswith("resample_filter")}


def grads(module: torch.nn.Module) -> dict:
    return {k: p.grad for k, p in module.named_parameters() if p.grad is not None}


def build(networks, seed: int):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=Z, c_dim=0, w_dim=W, img_resolution=RES, img_channels=CH,
                           mapping_kwargs=dict(num_layers=8),
                           synthesis_kwargs=dict(channel_base=CHANNEL_BASE, channel_max=CHANNEL_MAX))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=CH, architecture="resnet",
                               channel_base=CHANNEL_BASE, channel_max=CHANNEL_MAX,
                               epilogue_kwargs=dict(mbstd_group_size=MBSTD))
    with torch.no_grad():  # move the zero / constant inits off their special values so every term shows
        for name, p in list(G.named_parameters()) + list(D.named_parameters()):
            if name.endswith("noise_strength") or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
        G.mapping.w_avg.copy_(torch.randn(W) * 0.3)
    return G, D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("upstream", type=Path, help="checkout of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("out", type=Path, help="folder for the .npz files (tests/golden)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.upstream.resolve()))
    from torch_utils import training_stats
    from torch_utils.ops import conv2d_resample, upfirdn2d
    from training import loss as loss_mod
    from training import networks

    commit = subprocess.run(["git", "-C", str(args.upstream), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"meta/res": RES, "meta/channels": CH, "meta/z_dim": Z, "meta/w_dim": W, "meta/channel_base": CHANNEL_BASE,
            "meta/channel_max": CHANNEL_MAX, "meta/mbstd_group": MBSTD}
    meta = {k: np.asarray(v, np.float32) for k, v in meta.items()}
    written = {}

    def save(name: str, **parts) -> None:
        path = args.out / f"stylegan2_{name}.npz"
        np.savez_compressed(path, **meta, **{k: v for d in parts.values() for k, v in d.items()})
        written[path.name] = path.stat().st_size

    # ---- mapping + synthesis (eval: fused modconv by default; noise_mode='const') ----
    G, D = build(networks, seed=1)
    G.eval()
    torch.manual_seed(2)
    z = torch.randn(4, Z)
    with torch.no_grad():
        ws = G.mapping(z, None)
        ws_trunc = G.mapping(z, None, truncation_psi=0.7)
        ws_in = ws + torch.randn_like(ws) * 0.5  # distinct w per layer, as style mixing makes them
        img_fused = G.synthesis(ws_in, noise_mode="const", fused_modconv=True)
        img_unfused = G.synthesis(ws_in, noise_mode="const", fused_modconv=False)
    save("G", w=arrays("w", state(G)), i=arrays("in", {"z": z, "ws": ws_in}),
         o=arrays("out", {"ws": ws, "ws_trunc07": ws_trunc, "img_fused": img_fused, "img_unfused": img_unfused}))

    # ---- discriminator ----
    torch.manual_seed(3)
    img = torch.randn(8, CH, RES, RES)
    with torch.no_grad():
        logits = D(img, None)
    save("D", w=arrays("w", state(D)), i=arrays("in", {"img": img}), o=arrays("out", {"logits": logits[:, 0]}))

    # ---- modulated conv: fused (grouped) and unfused paths, up 1 / 2, with and without demodulation ----
    torch.manual_seed(4)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(3, 6, 8, 8)
    weight = torch.randn(7, 6, 3, 3)
    styles = torch.randn(3, 6) + 1.0
    outs = {}
    for up in (1, 2):
        for demod in (True, False):
            for fused in (True, False):
                y = networks.modulated_conv2d(x=x, weight=weight, styles=styles, up=up, padding=1, resample_filter=f,
                                              demodulate=demod, flip_weight=(up == 1), fused_modconv=fused)
                outs[f"up{up}_demod{int(demod)}_fused{int(fused)}"] = y
    save("modconv", i=arrays("in", {"x": x, "weight": weight, "styles": styles}), o=arrays("out", outs))

    # ---- resampling: upfirdn2d, upsample2d, downsample2d, conv2d_resample ----
    torch.manual_seed(5)
    x = torch.randn(2, 3, 8, 8)
    f_asym = upfirdn2d.setup_filter(torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0], [2.0, 0.5, 1.0]]))
    w3, w1 = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 1, 1)
    outs = {
        "upsample2d": upfirdn2d.upsample2d(x, f),
        "downsample2d": upfirdn2d.downsample2d(x, f),
        "upfirdn_u2_d1_p2112": upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 1, 2], gain=4),
        "upfirdn_u1_d2_pneg": upfirdn2d.upfirdn2d(x, f, down=2, padding=[1, -1, 0, 2]),
        "upfirdn_asym_u2_d1": upfirdn2d.upfirdn2d(x, f_asym, up=2, padding=[1, 1, 1, 1]),
        "conv_down2_k3": conv2d_resample.conv2d_resample(x=x, w=w3, f=f, down=2, padding=1, flip_weight=True),
        "conv_down2_k1": conv2d_resample.conv2d_resample(x=x, w=w1, f=f, down=2, flip_weight=True),
        "conv_up2_k3": conv2d_resample.conv2d_resample(x=x, w=w3, f=f, up=2, padding=1, flip_weight=False),
    }
    save("resample", i=arrays("in", {"x": x, "f_asym": f_asym, "w3": w3, "w1": w1}), o=arrays("out", outs))

    # ---- losses: one lazy R1 step (gamma 1, gain 16) and one lazy path-length step (weight 2, gain 4) ----
    reported = {}
    training_stats.report = loss_mod.training_stats.report = lambda name, value: reported.setdefault(name, value)
    G, D = build(networks, seed=6)
    G.train().requires_grad_(True)
    D.train().requires_grad_(True)
    loss = loss_mod.StyleGAN2Loss(torch.device("cpu"), G.mapping, G.synthesis, D, style_mixing_prob=0.9,
                                  r1_gamma=1.0, pl_batch_shrink=2, pl_decay=0.01, pl_weight=2.0)
    torch.manual_seed(7)
    real = torch.randn(8, CH, RES, RES)
    gen_z = torch.randn(8, Z)
    loss.accumulate_gradients("Dreg", real, torch.zeros(8, 0), gen_z, torch.zeros(8, 0), sync=True, gain=16)
    save("r1", w=arrays("w", state(D)), i=arrays("in", {"real": real}),
         o=arrays("out", {"r1_penalty": reported["Loss/r1_penalty"], "loss_Dr1": reported["Loss/D/reg"],
                          **{f"grad/{k}": v for k, v in grads(D).items()}}))

    reported.clear()
    w_before = state(G)
    pl_mean0 = torch.tensor(0.05)
    loss.pl_mean.copy_(pl_mean0)
    captured = {}

    def keep_ws(_module, inputs):  # a pre-hook that returns nothing leaves the inputs as they are
        captured["ws"] = inputs[0].detach().clone()

    hook = G.synthesis.register_forward_pre_hook(keep_ws)
    seed = 8  # the RNG draws in order: style-mixing cutoff, its coin, the 2nd z, per-layer noise, the PL noise
    torch.manual_seed(seed)
    loss.accumulate_gradients("Greg", real, torch.zeros(8, 0), gen_z, torch.zeros(8, 0), sync=True, gain=4)
    hook.remove()
    save("pl", w=arrays("w", w_before), i=arrays("in", {"gen_z": gen_z, "seed": seed, "pl_mean": pl_mean0}),
         o=arrays("out", {"pl_penalty": reported["Loss/pl_penalty"], "loss_Gpl": reported["Loss/G/reg"],
                          "pl_mean": loss.pl_mean, "ws": captured["ws"], "w_avg": G.mapping.w_avg,
                          **{f"grad/{k}": v for k, v in grads(G).items()}}))

    print(f"upstream commit {commit}")
    for name, size in written.items():
        print(f"{name}: {size} bytes")


if __name__ == "__main__":
    main()
