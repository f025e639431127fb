"""Training-time augmentation: make MNIST digits look like other writers and scanners.

Works on whole (N, 1, 28, 28) batches of preprocessed digits in torch, so it costs little
next to the model. Besides geometry (slant, rotation, aspect, position), it imitates
what forms do to ink: thicker or thinner strokes, blur, binarisation, and low-resolution
capture (a 16x16 postal digit scaled up by preprocessing), and digits stretched to fill
their box as postal forms store them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recognizer.data.forms.shape import DigitShape


@dataclass(frozen=True)
class AugmentConfig:
    """How far each transform goes, and how often each scan effect is applied. Other
    writers' shapes (rotation, aspect, elastic wobble) go as far as in the reader's
    synthesized fields: their defaults are :class:`DigitShape`'s."""

    rotate_deg: float = DigitShape.rotate_deg
    shear: float = 0.25
    scale: tuple[float, float] = (0.85, 1.1)
    aspect: tuple[float, float] = DigitShape.aspect
    translate_px: float = 2.0
    #: Elastic distortion (other writers' wobble and proportions) on this share of the
    #: batch: a smooth displacement field from a ``elastic_grid`` x ``elastic_grid``
    #: grid of random moves of up to ``elastic_px`` pixels.
    p_elastic: float = DigitShape.p_elastic
    elastic_px: float = DigitShape.elastic_px
    elastic_grid: int = DigitShape.elastic_grid
    p_thick: float = 0.12
    p_thin: float = 0.08
    p_blur: float = 0.1
    p_binarize: float = 0.1
    p_lowres: float = 0.1
    #: Pixels per side of the low-resolution capture that p_lowres imitates.
    lowres_size: int = 14
    #: Digits stretched to fill their box (postal forms store digits scaled to fill a
    #: 16x16 box, their proportions lost) on this share of the batch.
    p_fill_box: float = 0.1


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def random_affine(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    """Random rotation, shear, scale, aspect and shift of each digit in the batch."""
    n = x.shape[0]
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g) * math.pi / 180
    shear = _uniform(n, -cfg.shear, cfg.shear, g)
    scale = _uniform(n, *cfg.scale, g)
    aspect = _uniform(n, *cfg.aspect, g)
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    t = 2.0 * cfg.translate_px / x.shape[-1]
    tx, ty = _uniform(n, -t, t, g), _uniform(n, -t, t, g)
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input coordinates, so build the inverse-ish transform
    # directly: rotation * shear * scale; exactness of the inverse does not matter for
    # random augmentation.
    a = cos / sx
    b = (-sin + shear * cos) / sx
    c = sin / sy
    d = (cos + shear * sin) / sy
    theta = torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    if cfg.p_elastic > 0:
        grid = grid + _elastic(n, x.shape[-1], cfg, g).to(x)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _elastic(n: int, size: int, cfg: AugmentConfig, g: torch.Generator | None) -> torch.Tensor:
    """(N, size, size, 2) smooth displacements (grid units), zero where not picked."""
    reach = 2.0 * cfg.elastic_px / size
    coarse = (torch.rand(n, 2, cfg.elastic_grid, cfg.elastic_grid, generator=g) * 2 - 1) * reach
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    field = field * _pick(n, cfg.p_elastic, g)[:, None, None, None]
    return field.permute(0, 2, 3, 1)


def _span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of an (N, size) mask: the centre and half extent of its True run, in
    ``affine_grid``'s units (-1 .. 1 across the image)."""
    size = mask.shape[1]
    idx = torch.arange(size, device=mask.device)
    first = torch.where(mask, idx, size).amin(dim=1).float()
    last = torch.where(mask, idx, -1).amax(dim=1).float() + 1
    return (first + last) / size - 1, (last - first) / size


def fill_box(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    """Stretch a random share of the digits so that their ink fills the 20x20 box that
    preprocessing fits digits into, whatever their proportions were."""
    n, size = x.shape[0], x.shape[-1]
    picked = _pick(n, cfg.p_fill_box, g).to(x.device)
    ink = x[:, 0] > 0.1
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    picked &= rows.any(dim=1)
    if not picked.any():
        return x
    cx, hx = _span(cols)
    cy, hy = _span(rows)
    box = 20.0 / size
    zero = torch.zeros_like(cx)
    theta = torch.stack([torch.stack([hx / box, zero, cx], 1), torch.stack([zero, hy / box, cy], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    stretched = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(picked[:, None, None, None], stretched, x)


def _pick(n: int, p: float, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def scan_effects(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    """Thicker or thinner strokes, blur, low resolution and binarisation, each on a
    random share of the batch; every digit is rescaled so its brightest pixel is 1."""
    n = x.shape[0]
    out = x
    thick = _pick(n, cfg.p_thick, g).to(x.device)
    if thick.any():
        out = torch.where(thick[:, None, None, None], F.max_pool2d(out, 3, 1, 1) * 0.5 + out * 0.5, out)
    thin = _pick(n, cfg.p_thin, g).to(x.device)
    if thin.any():
        eroded = -F.max_pool2d(-out, 2, 1, 0)
        eroded = F.pad(eroded, (0, 1, 0, 1))
        out = torch.where(thin[:, None, None, None], 0.5 * eroded + 0.5 * out, out)
    blur = _pick(n, cfg.p_blur, g).to(x.device)
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0], device=x.device)
        k = (k[:, None] * k[None, :] / 16.0)[None, None]
        out = torch.where(blur[:, None, None, None], F.conv2d(out, k, padding=1), out)
    lowres = _pick(n, cfg.p_lowres, g).to(x.device)
    if lowres.any():
        small = F.interpolate(out, size=(cfg.lowres_size, cfg.lowres_size), mode="area")
        up = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out = torch.where(lowres[:, None, None, None], up, out)
    binar = _pick(n, cfg.p_binarize, g).to(x.device)
    if binar.any():
        out = torch.where(binar[:, None, None, None], (out > 0.4).to(out.dtype), out)
    peak = out.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return out / peak


def augment(x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(),
            g: torch.Generator | None = None) -> torch.Tensor:
    """Randomly transform a batch of (N, 1, 28, 28) digits in [0, 1]."""
    return scan_effects(random_affine(fill_box(x, cfg, g), cfg, g), cfg, g)
