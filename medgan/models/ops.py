"""Resampling with a low-pass FIR filter, in plain PyTorch (no ``upfirdn2d`` CUDA extension).

StyleGAN2 up- and down-samples through the binomial ``[1, 3, 3, 1]`` filter so that the generator's
feature maps stay (approximately) band-limited; the official code does this with a custom CUDA
kernel, ``upfirdn2d`` (UPsample, FIR filter, DOWNsample). Here the same three steps are written with
ops that exist on every backend and that ``torch.compile`` traces without graph breaks:

- upsample by zero insertion: a reshape + ``F.pad`` (no data-dependent control flow),
- pad / crop: ``F.pad`` then slicing (negative padding crops),
- FIR filter: a depthwise ``F.conv2d`` with the 2-D (outer-product) filter,
- downsample: the stride of that same convolution.

The padding conventions and gains match StyleGAN2-ADA's ``upfirdn2d``/``conv2d_resample`` so that
layer sizes and signal levels are those of the paper's networks: upsampling by ``up`` multiplies
the filter by ``up**2`` (zero insertion divides the mean by ``up**2``), so a constant image stays
constant away from the zero-padded border.

``upfirdn2d`` convolves (flips ``f``, as the official op does with ``flip_filter=False``), so an asymmetric
filter gives the official result too; the binomial filters the networks use are symmetric anyway.
tests/test_stylegan2.py checks these ops against golden vectors from the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Padding = tuple[int, int, int, int]  # (x_before, x_after, y_before, y_after), like F.pad's first 4


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """1-D taps -> normalised 2-D filter ``[k, k]`` (outer product, sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _pad(x: torch.Tensor, pad: Padding) -> torch.Tensor:
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(pad) < 0:  # negative padding crops
        h, w = x.shape[2], x.shape[3]
        x = x[:, :, max(-py0, 0) : h - max(-py1, 0), max(-px0, 0) : w - max(-px1, 0)]
    return x


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    *,
    up: int = 1,
    down: int = 1,
    pad: Padding = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Zero-insert upsample by ``up``, pad by ``pad``, filter with ``f [k, k]``, keep every ``down``-th pixel.

    ``x [N, C, H, W]`` -> ``[N, C, (H*up + px0 + px1 - k)//down + 1, ...]``. ``f`` is applied per channel.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = _pad(x, pad)
    weight = (f.flip([0, 1]) * gain).to(dtype=x.dtype, device=x.device)  # convolution, not correlation
    weight = weight[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``[N, C, H, W] -> [N, C, H*up, W*up]``, zero insertion + low-pass filter (gain ``up**2``)."""
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up**2)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """``[N, C, H, W] -> [N, C, H/down, W/down]``, low-pass filter then decimate."""
    k = f.shape[-1]
    p0, p1 = (k - down + 1) // 2, (k - down) // 2
    return upfirdn2d(x, f, down=down, pad=(p0, p1, p0, p1))


def blur2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Same-size low-pass filter (for even ``k`` the output is shifted by half a pixel, as in StyleGAN2)."""
    k = f.shape[-1]
    p0, p1 = k // 2, (k - 1) // 2
    return upfirdn2d(x, f, pad=(p0, p1, p0, p1))


def conv2d_resample(
    x: torch.Tensor,
    weight: torch.Tensor,
    f: torch.Tensor | None = None,
    *,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` with optional 2x up- or downsampling through the filter ``f``.

    ``padding`` is with respect to the upsampled image, as in StyleGAN2-ADA, so a 3x3 kernel with
    ``padding=1`` maps ``H -> 2H`` (``up=2``) or ``H -> H/2`` (``down=2``). The upsampling path is a
    stride-2 transposed convolution at the low resolution followed by the blur (4x cheaper than
    convolving the zero-inserted image); the downsampling path blurs then convolves with stride 2.
    ``weight [O, I/groups, k, k]``.
    """
    assert not (up > 1 and down > 1), "up and down together are not needed by our networks"
    out_ch, in_per_group, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    if up == 1 and down == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    assert f is not None
    fk = f.shape[-1]
    if down > 1:
        p0 = padding + (fk - down + 1) // 2
        p1 = padding + (fk - down) // 2
        if kh == 1 and kw == 1:  # 1x1: decimate first, then the (cheap) convolution
            x = upfirdn2d(x, f, down=down, pad=(p0, p1, p0, p1))
            return F.conv2d(x, weight, groups=groups)
        x = upfirdn2d(x, f, pad=(p0, p1, p0, p1))
        return F.conv2d(x, weight, stride=down, groups=groups)
    # up > 1: transposed convolution wants [I, O/groups, k, k] per group.
    p0 = padding + (fk + up - 1) // 2 - (kw - 1)
    p1 = padding + (fk - up) // 2 - (kw - up)
    assert p0 >= 0 and p1 >= 0, (p0, p1)
    if groups == 1:
        w_t = weight.transpose(0, 1)
    else:
        w_t = weight.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        w_t = w_t.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    x = F.conv_transpose2d(x, w_t, stride=up, groups=groups)
    return upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=up**2)


def unwrap_module(module):
    """The plain module under ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers.

    Losses call model-specific methods (``G.sample_ws``, ``D.patch_logits``) that wrappers do not forward.
    """
    while True:
        inner = getattr(module, "_orig_mod", None)
        if inner is None and type(module).__name__ == "DistributedDataParallel":
            inner = module.module
        if inner is None:
            return module
        module = inner


def uncompiled(module):
    """``module`` without its ``torch.compile`` wrappers (a DDP wrapper, if any, is kept).

    Double backward (R1's and path length's ``create_graph=True``) is not supported through compiled
    graphs (AOTAutograd), so the lazy regularisers run the eager module, which shares its parameters.
    """
    while getattr(module, "_orig_mod", None) is not None:
        module = module._orig_mod
    return module
