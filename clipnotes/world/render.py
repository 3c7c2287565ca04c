"""Rendering the mini world: signed distance fields of the shapes, background patterns,
and one painter per style (photo, sketch, cartoon, painting, pixel art) (chapter 0)."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .factors import (BACKGROUNDS, BG_BASE_RGB, BG_PATTERN_RGB, CLASSNAMES, COLOUR_RGB, IMAGE_SIZE,
                      POSITION_OFFSET, WALLPAPERS, Factors)

def _polygon(n: int, start: float = -np.pi / 2) -> np.ndarray:
    a = start + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _heart(n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y + 2.5], 1)
    return pts / np.abs(pts).max()


def _cross(w: float = 0.36) -> np.ndarray:
    return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                     [-w, w], [-1, w], [-1, -w], [-w, -w]]) * 0.95


def _polygon_sdf(pts: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance from points (M, 2) to a closed polygon (negative inside)."""
    d = np.full(len(pts), np.inf)
    inside = np.zeros(len(pts), dtype=bool)
    for i in range(len(verts)):
        a, b = verts[i], verts[(i + 1) % len(verts)]
        e, w = b - a, pts - a
        t = np.clip((w @ e) / (e @ e), 0, 1)
        d = np.minimum(d, np.linalg.norm(w - t[:, None] * e, axis=1))
        cond = (pts[:, 1] >= a[1]) != (pts[:, 1] >= b[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = a[0] + (pts[:, 1] - a[1]) * e[0] / e[1]
        inside ^= cond & (pts[:, 0] < xint)
    return np.where(inside, -d, d)


_SDF_RES, _SDF_EXTENT = 160, 1.6


@functools.lru_cache(maxsize=1)
def shape_sdf_bank() -> torch.Tensor:
    """Canonical signed distance fields of the classes, (C, 1, R, R) over [-1.6, 1.6]^2."""
    g = (np.arange(_SDF_RES) + 0.5) / _SDF_RES * 2 * _SDF_EXTENT - _SDF_EXTENT
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    r = np.linalg.norm(pts, axis=1)
    sdfs = {
        "circle": r - 0.9,
        "square": _polygon_sdf(pts, _polygon(4, np.pi / 4) * 1.1),
        "triangle": _polygon_sdf(pts, _polygon(3) * 1.05 + [0, 0.15]),
        "star": _polygon_sdf(pts, _star() * 1.05),
        "heart": _polygon_sdf(pts, _heart()),
        "cross": _polygon_sdf(pts, _cross()),
        "diamond": _polygon_sdf(pts, np.array([[0, -1.05], [0.68, 0], [0, 1.05], [-0.68, 0]])),
        "hexagon": _polygon_sdf(pts, _polygon(6, 0) * 0.97),
        "crescent": np.maximum(r - 0.95, -(np.linalg.norm(pts - [0.45, -0.25], axis=1) - 0.78)),
        "arrow": _polygon_sdf(pts, np.array([[-1, -0.28], [0.15, -0.28], [0.15, -0.7], [1, 0], [0.15, 0.7],
                                             [0.15, 0.28], [-1, 0.28]])),
    }
    bank = np.stack([sdfs[c].reshape(_SDF_RES, _SDF_RES) for c in CLASSNAMES])
    return torch.from_numpy(bank).float()[:, None]


@functools.lru_cache(maxsize=1)
def texture_bank(n: int = 24) -> torch.Tensor:
    """Fixed noise textures (the world's 'physics', not seed-dependent): (2n, S, S).

    The first n are smooth blobs, the last n are directional brush strokes.
    """
    g = torch.Generator().manual_seed(12345)
    s = IMAGE_SIZE
    smooth = F.interpolate(torch.randn(n, 1, 8, 8, generator=g), size=(s, s), mode="bicubic", align_corners=False)
    noise = torch.randn(n, 1, s, s, generator=g)
    brush = []
    for i in range(n):
        k = torch.zeros(1, 1, 9, 9)
        # math's sin and cos, not numpy's: numpy's differ in the last bit between releases and
        # CPUs (sin(pi/6) = 0.5 or 0.5000000000000001), which moves a pixel where 4 + t*sin is a tie
        sin, cos = math.sin(math.pi * i / n), math.cos(math.pi * i / n)
        for t in np.linspace(-4, 4, 17).tolist():
            k[0, 0, round(4 + t * sin), round(4 + t * cos)] = 1
        brush.append(F.conv2d(F.pad(noise[i:i + 1], (4, 4, 4, 4), mode="circular"), k / k.sum()))
    brush = torch.cat(brush)
    norm = lambda t: (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)  # noqa: E731
    return torch.cat([norm(smooth), norm(brush)])[:, 0]


# ----------------------------------------------------------------------------- rendering
def _grid(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    return xx.expand(n, size, size), yy.expand(n, size, size)


def _textures(f: Factors, slot: int, kind: int, size: int) -> torch.Tensor:
    """A shifted texture per item: kind 0 = smooth, 1 = brush; (N, S, S)."""
    bank = texture_bank()
    nb = bank.shape[0] // 2
    ids = torch.from_numpy(f.texture[:, slot] % nb + kind * nb)
    sx = torch.from_numpy((f.texture[:, slot] // nb) % size)
    sy = torch.from_numpy((f.texture[:, (slot + 1) % 4]) % size)
    ar = torch.arange(size)
    rows = (ar[None, :] + sy[:, None]) % size
    cols = (ar[None, :] + sx[:, None]) % size
    flat = (ids[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]      # one gather
    return bank.reshape(-1)[flat]


def _object_sdf(f: Factors, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """Signed distance to each item's object in image units, (N, S, S)."""
    n = len(f)
    c = torch.from_numpy(POSITION_OFFSET[f.position] + f.offset)
    r = torch.from_numpy(f.radius)[:, None, None]
    cos, sin = torch.from_numpy(np.cos(f.rotation))[:, None, None], torch.from_numpy(np.sin(f.rotation))[:, None, None]
    dx, dy = xx - c[:, 0, None, None], yy - c[:, 1, None, None]
    lx, ly = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
    grid = torch.stack([lx, ly], -1) / _SDF_EXTENT
    bank = shape_sdf_bank()
    out = torch.empty(n, *xx.shape[1:])
    shapes = torch.from_numpy(f.shape)
    for k in torch.unique(shapes).tolist():
        sel = (shapes == k).nonzero(as_tuple=True)[0]
        src = bank[k:k + 1].expand(len(sel), -1, -1, -1)
        out[sel] = F.grid_sample(src, grid[sel], mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
    return out * r


def _pattern(f: Factors, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """Background pattern intensity in [0, 1], (N, S, S); computed per pattern type."""
    out = torch.zeros_like(xx)
    bgs = torch.from_numpy(f.background)
    for k in torch.unique(bgs).tolist():
        if BACKGROUNDS[k] == "plain":
            continue
        sel = (bgs == k).nonzero(as_tuple=True)[0]
        x, y = xx[sel], yy[sel]
        ang = torch.from_numpy(f.bg_angle)[sel, None, None]
        freq = torch.from_numpy(f.bg_freq)[sel, None, None]
        out[sel] = _PATTERNS[BACKGROUNDS[k]](x, y, ang, freq)
    return out


def _stripes(x, y, ang, freq):
    return (torch.sin((torch.cos(ang) * x + torch.sin(ang) * y) * freq * np.pi) > 0).float()


def _dots(x, y, ang, freq):
    gx, gy = x * freq * 1.3, y * freq * 1.3
    return ((gx - gx.round()) ** 2 + (gy - gy.round()) ** 2 < 0.09).float()


def _checks(x, y, ang, freq):
    return ((torch.floor(x * freq) + torch.floor(y * freq)) % 2).float()


def _diamonds(x, y, ang, freq):
    return ((torch.floor((x + y) * freq * 0.8) + torch.floor((x - y) * freq * 0.8)) % 2).float()


def _gradient(x, y, ang, freq):
    return ((torch.cos(ang) * x + torch.sin(ang) * y + 1.2) / 2.4).clamp(0, 1)


def _wallpaper(shape: str):
    """Small copies of a class shape tiled over the background."""
    k = CLASSNAMES.index(shape)

    def pattern(x, y, ang, freq):
        n = x.shape[0]
        f = freq * 0.42
        lx = torch.remainder(x * f + 0.5 * torch.cos(ang), 1.0) * 2 - 1       # tile coordinates in [-1, 1]
        ly = torch.remainder(y * f + 0.5 * torch.sin(ang), 1.0) * 2 - 1
        grid = torch.stack([lx, ly], -1) / (0.5 * _SDF_EXTENT)
        sdf = F.grid_sample(shape_sdf_bank()[k:k + 1].expand(n, -1, -1, -1), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)[:, 0]
        px = 2.0 / x.shape[-1]
        return _alpha(sdf * 0.5 / f, px)

    return pattern


_PATTERNS = {"striped": _stripes, "dotted": _dots, "checkered": _checks, "diamond": _diamonds, "gradient": _gradient,
             **{w: _wallpaper(w) for w in WALLPAPERS}}


def _alpha(sdf: torch.Tensor, width: float) -> torch.Tensor:
    """Antialiased coverage of sdf < 0 with an edge of ``width`` image units."""
    return (0.5 - sdf / width).clamp(0, 1)


def render(f: Factors, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Render items to uint8 images, (N, 3, size, size). Vectorised over the batch."""
    n = len(f)
    if n == 0:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    if size != IMAGE_SIZE:
        return F.interpolate(render(f).float(), size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False).round().clamp(0, 255).to(torch.uint8)
    xx, yy = _grid(n, size)
    px = 2.0 / size
    sdf = _object_sdf(f, xx, yy)
    pat = _pattern(f, xx, yy)[:, None]
    smooth = _textures(f, 0, 0, size)[:, None]
    brush = _textures(f, 2, 1, size)[:, None]
    col = torch.from_numpy(COLOUR_RGB[f.colour])[:, :, None, None]
    base = torch.from_numpy(BG_BASE_RGB[f.bg_base])[:, :, None, None]
    patc = torch.from_numpy(BG_PATTERN_RGB[f.bg_pattern])[:, :, None, None]
    dom = torch.from_numpy(f.domain)
    out = torch.empty(n, 3, size, size)
    painters = (_paint_photo, _paint_sketch, _paint_cartoon, _paint_painting, _paint_pixel)
    for d, painter in enumerate(painters):
        sel = (dom == d).nonzero(as_tuple=True)[0]
        if len(sel):
            out[sel] = painter(sdf[sel, None], pat[sel], smooth[sel], brush[sel], col[sel], base[sel], patc[sel],
                               xx[sel, None], yy[sel, None], px)
    return out.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


def _paint_photo(sdf, pat, smooth, brush, col, base, patc, xx, yy, px):
    bg = torch.lerp(base, patc, pat * 0.55) * (0.9 + 0.06 * smooth) + 0.02 * brush
    shadow = _alpha(_shift_sdf(sdf, 2, 3) - 0.02, 0.12)
    bg = bg * (1 - 0.35 * shadow)
    inside = _alpha(sdf, px)
    light = (1.05 - 0.25 * (xx + yy) - 0.45 * sdf.clamp(-0.4, 0)).clamp(0.6, 1.3)
    obj = col * light + 0.03 * smooth
    return torch.lerp(bg, obj, inside)


def _paint_sketch(sdf, pat, smooth, brush, col, base, patc, xx, yy, px):
    paper = 0.95 + 0.015 * smooth
    bg = paper - 0.13 * pat * (0.8 + 0.2 * brush)
    wobbly = sdf + 0.012 * brush
    stroke = _alpha(wobbly.abs() - 0.025, px)
    hatch = (torch.sin((xx + yy) * 40) > 0.55).float() * _alpha(sdf + 0.04, px) * 0.35
    ink = (stroke + hatch).clamp(0, 1)
    img = bg * (1 - ink) + 0.18 * ink
    return img.expand(-1, 3, -1, -1)


def _paint_cartoon(sdf, pat, smooth, brush, col, base, patc, xx, yy, px):
    bright = (col - col.mean(1, keepdim=True)) * 1.25 + col.mean(1, keepdim=True) + 0.05
    bg = torch.lerp(base, patc, pat * 0.8)
    img = torch.lerp(bg, bright, _alpha(sdf, px))
    outline = _alpha(sdf.abs() - 0.045, px)
    return img * (1 - outline) + 0.05 * outline


def _paint_painting(sdf, pat, smooth, brush, col, base, patc, xx, yy, px):
    rough = sdf + 0.025 * smooth + 0.012 * brush
    bg = torch.lerp(base, patc, pat * 0.45) * (1 + 0.06 * brush) + 0.03 * smooth
    obj = col * (1 + 0.15 * brush) + 0.04 * smooth
    return torch.lerp(bg, obj, _alpha(rough, 2.5 * px))


def _paint_pixel(sdf, pat, smooth, brush, col, base, patc, xx, yy, px):
    bg = torch.lerp(base, patc, pat * 0.7)
    img = torch.lerp(bg, col, _alpha(sdf, px))
    img = img * (1 - 0.8 * _alpha(sdf.abs() - 0.04, px))
    n, _, s, _ = img.shape
    small = F.avg_pool2d(img, 4)
    small = (small * 4).round() / 4
    return F.interpolate(small, size=(s, s), mode="nearest")


def _shift_sdf(sdf: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """The sdf moved by (dx, dy) pixels (for drop shadows), edges replicated."""
    padded = F.pad(sdf, (dx, 0, dy, 0), mode="replicate")
    return padded[..., : sdf.shape[-2], : sdf.shape[-1]]

