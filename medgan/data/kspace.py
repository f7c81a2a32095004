"""Simulated single-coil k-space undersampling: orthonormal centred FFTs, Cartesian masks, zero-filled images.

The reconstruction experiment (``medgan.losses.pix2pix``, ``medgan.beyond.recon``) corrupts a fully sampled
image the way an accelerated Cartesian MR acquisition would and asks a network to undo it:

- ``fft2c`` / ``ifft2c``: the 2-D DFT over the last two axes with the DC term in the centre
  (``fftshift(fft2(ifftshift(x)))``) and ``norm="ortho"``, so the pair is unitary: Parseval holds and
  ``ifft2c(fft2c(x)) == x`` up to rounding.
- ``cartesian_mask``: fastMRI's ``RandomMaskFunc`` (facebookresearch/fastMRI, ``fastmri/data/subsample.py``):
  the ``round(W * center_fraction)`` central phase-encode lines (columns of the centred k-space) are
  always sampled, every other column with probability ``(W / acceleration - n_low) / (W - n_low)``, so
  the *expected* number of sampled columns is ``W / acceleration``. fastMRI pairs 4x with a centre
  fraction of 0.08 and 8x with 0.04 (``0.32 / acceleration``: ``default_center_fraction``).
- ``zero_filled``: ``|ifft2c(mask * fft2c(x))|``, the magnitude of the undersampled data's inverse DFT with
  the missing lines left at zero (the baseline every learnt reconstruction is compared with).

The images are magnitude images (ACDC stores no phase and one coil), so the simulated k-space is Hermitian;
the zero-filled baseline does not use that symmetry and neither do the networks (book/deviations.md).
Everything is torch on the input's device, float32/complex64; no medgan import but the errors.
"""

from __future__ import annotations

import torch

from medgan.errors import ConfigError

# fastMRI's pairing of acceleration and centre fraction: 4x -> 0.08, 8x -> 0.04
CENTER_FRACTION_TIMES_ACCELERATION = 0.32


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's centre fraction for ``acceleration``: ``0.32 / acceleration`` (0.08 at 4x, 0.04 at 8x)."""
    return CENTER_FRACTION_TIMES_ACCELERATION / acceleration


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D DFT over the last two axes: ``[..., H, W]`` real or complex -> complex64."""
    x = image.to(torch.complex64) if not image.is_complex() else image
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Inverse of ``fft2c``: centred orthonormal inverse DFT over the last two axes (complex out)."""
    x = torch.fft.ifftshift(kspace, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(x, norm="ortho"), dim=(-2, -1))


def center_lines(width: int, center_fraction: float) -> tuple[int, int]:
    """``(start, count)`` of the always-sampled central columns (fastMRI: ``count = round(W * cf)``,
    ``start = (W - count + 1) // 2``, so the DC column ``W // 2`` of the centred k-space is inside)."""
    count = int(round(width * center_fraction))
    return (width - count + 1) // 2, count


def check_mask_args(width: int, acceleration: float, center_fraction: float) -> None:
    """ConfigError (naming the knobs) unless the centre lines fit inside the ``W / acceleration`` budget."""
    if acceleration < 1:
        raise ConfigError(f"loss.acceleration must be >= 1, got {acceleration}")
    if not 0.0 <= center_fraction <= 1.0:
        raise ConfigError(f"loss.center_fraction must be in [0, 1], got {center_fraction}")
    _, count = center_lines(width, center_fraction)
    if count > width / acceleration + 1e-9:
        raise ConfigError(f"loss.center_fraction={center_fraction:g} samples {count} centre lines of {width}, more than "
                          f"the {width / acceleration:g} lines a {acceleration:g}x acceleration allows")


def cartesian_mask(
    n: int,
    width: int,
    acceleration: float,
    center_fraction: float | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` random Cartesian masks as float32 ``[n, 1, 1, W]`` (1 = sampled column), broadcastable over
    ``[n, C, H, W]`` k-space: fastMRI's ``RandomMaskFunc`` with one draw per row of the batch.

    ``center_fraction=None`` takes ``default_center_fraction(acceleration)``. Draws come from ``generator``
    (CPU), so a seeded generator gives the same masks on every device and after a resume.
    """
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    check_mask_args(width, acceleration, center_fraction)
    start, count = center_lines(width, center_fraction)
    prob = (width / acceleration - count) / (width - count) if width > count else 0.0
    mask = (torch.rand(n, width, generator=generator) < prob).float()
    mask[:, start : start + count] = 1.0
    return mask[:, None, None, :]


def seeded_masks(n: int, width: int, acceleration: float, center_fraction: float | None, *, seed: int,
                 index: int) -> torch.Tensor:
    """``cartesian_mask`` drawn from a generator seeded by ``(seed, index)`` alone: the same masks for the same
    pair whatever ran before (the trainer's step, an evaluation slice batch), so a resume replays them."""
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))
    return cartesian_mask(n, width, acceleration, center_fraction, generator=generator)


def undersample(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k-space of ``image [..., H, W]`` with the unsampled columns set to 0: ``mask * fft2c(image)``."""
    return fft2c(image.float()) * mask


def zero_filled(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-filled reconstruction ``|ifft2c(mask * fft2c(image))|``, float32 like ``image [..., H, W]``."""
    return ifft2c(undersample(image, mask)).abs()


def zero_filled_signed(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``zero_filled`` for images stored in [-1, 1] (the prepared format): the magnitude ``(image + 1) / 2``
    is what is undersampled, and the zero-filled magnitude is mapped back by ``2 m - 1``."""
    return 2.0 * zero_filled((image.float() + 1.0) / 2.0, mask) - 1.0


def sampled_fraction(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of sampled columns per mask ``[n, 1, 1, W] -> [n]`` (1 / the realised acceleration)."""
    return mask.flatten(1).mean(1)

