"""The mini world: a procedurally generated, captioned image world with known factors.

Every image and caption is a pure function of ``(seed, stream, index)``: nothing is
stored, any item can be regenerated, and datasets are identical on every machine.

Factors of an item
    shape (the class), colour, size, position, background pattern, domain (style),
    plus small nuisances (rotation, jitter, background colours, textures).

Design choices that later chapters rely on (see chapter 0):

* **Captions read like alt-text**: usually three words or more, often starting "a photo of",
  which photographs are usually called; stylised images usually name their style
  ("a pencil sketch of ..."); colour, size and background words appear with some
  probability. So "a photo of a {}." is familiar wording.
* **A lone word is a tag, and three tags have two senses.** A few captions are one word,
  the object's (``OBJECT_TAG_P``); but stock sites also tag a wallpaper of small stars
  with the bare word "star" (``PATTERN_TAG_P``). So "star", "heart" and "cross" alone name
  an object *or* a background pattern (CLIP's "crane" and "boxer"), and "a photo of a
  star." says which sense is meant.
* **A frame carries a class-dependent style prior.** "a photo of", "a picture of" and
  "an image of" also label sketches, cartoons and sprites without naming the style, and
  each class uses a different frame for each style (``loose_frame``): one template
  favours some classes on every style, an ensemble over frames does not (chapter 3).
* **Dataset class names are not always caption words.** The dataset calls the crescent
  "crescent", captions mostly say "moon" (like ImageNet's "tiger cat"); "diamond"
  names the rhombus *and* tilted squares, as "crane" names a bird and a machine.
  Zero-shot stumbles on these names in every style, and labels can fix them: fine-tuning
  has something transferable to learn, next to a colour shortcut.
* **A factor captions never mention.** The object's position, so zero-shot cannot
  read it while a linear probe can (a limitation of zero-shot transfer).
"""
from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field, fields, replace
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

WORLD_VERSION = "5"
IMAGE_SIZE = 64

# ----------------------------------------------------------------------------- factors
CLASSNAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "heart",
    "cross", "diamond", "hexagon", "crescent", "arrow",
)
#: Better names where the official one is rare or ambiguous (CLIP's name curation).
CURATED_CLASSNAMES: dict[str, str] = {"crescent": "moon", "diamond": "rhombus"}

#: Words the captions use for each class, with their probabilities.
SHAPE_WORDS: dict[str, tuple[tuple[str, float], ...]] = {
    "circle": (("circle", 0.85), ("disc", 0.15)),
    "square": (("square", 1.0),),
    "tilted square": (("diamond", 0.7), ("square", 0.3)),
    "triangle": (("triangle", 1.0),),
    "star": (("star", 1.0),),
    "heart": (("heart", 1.0),),
    "cross": (("cross", 0.7), ("plus", 0.3)),
    "diamond": (("rhombus", 0.5), ("diamond", 0.5)),
    "hexagon": (("hexagon", 1.0),),
    "crescent": (("moon", 1.0),),      # the dataset's label "crescent" never occurs in captions
    "arrow": (("arrow", 1.0),),
}
#: Squares are sometimes turned by 45 degrees; people then call them diamonds.
TILT_PROBABILITY = 0.3

COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "gray",
)
COLOUR_RGB = np.array([
    [0.86, 0.12, 0.12], [0.96, 0.52, 0.08], [0.95, 0.85, 0.10], [0.15, 0.65, 0.20],
    [0.10, 0.78, 0.82], [0.12, 0.25, 0.85], [0.52, 0.18, 0.70], [0.95, 0.45, 0.70],
    [0.50, 0.30, 0.12], [0.50, 0.50, 0.50],
], dtype=np.float32)
COLOUR_WORDS: dict[str, tuple[str, ...]] = {"gray": ("gray", "grey")}
#: Typical colours in *pretraining* images (hearts are red, stars yellow, as on the web):
#: every class wears one of two colours about 70 % of the time. Task datasets draw colours
#: uniformly, so a zero-shot prompt inherits these priors (chapter 3).
TYPICAL_COLOURS: dict[str, dict[str, float]] = {
    "circle": {"orange": 0.45, "blue": 0.25},
    "square": {"blue": 0.45, "brown": 0.25},
    "triangle": {"green": 0.45, "orange": 0.25},
    "star": {"yellow": 0.5, "orange": 0.2},
    "heart": {"red": 0.45, "pink": 0.25},
    "cross": {"red": 0.4, "green": 0.25},
    "diamond": {"cyan": 0.45, "purple": 0.25},
    "hexagon": {"brown": 0.4, "gray": 0.3},
    "crescent": {"yellow": 0.45, "gray": 0.25},
    "arrow": {"purple": 0.4, "blue": 0.3},
}

SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_RADIUS = np.array([0.30, 0.42, 0.55], dtype=np.float32)
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny"), "medium": ("medium",), "large": ("large", "big"),
}

#: Words in the vocabulary that no caption ever uses (their embeddings are never trained).
NEVER_CAPTIONED: tuple[str, ...] = ("at", "blurry", "bad", "good", "black", "and", "low", "high", "contrast",
                                     "left", "right")

#: Positions are never captioned (see the module docstring).
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
POSITION_OFFSET = np.array([[0, 0], [-0.3, 0], [0.3, 0], [0, -0.3], [0, 0.3]], dtype=np.float32)

BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "diamond", "gradient",
                                 "star", "heart", "cross")
#: Wallpapers of small class shapes: the class word then also names a background pattern.
WALLPAPERS: tuple[str, ...] = ("star", "heart", "cross")
#: One-word captions are tags: the object's word (``OBJECT_TAG_P``, any image), or for a
#: wallpaper image the pattern's word (``PATTERN_TAG_P``, "star" for small stars). A lone
#: "star" then means the pattern more often than the object.
OBJECT_TAG_P = 0.02
PATTERN_TAG_P = 0.1
BACKGROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "plain": ("on a plain background", "on a white background"),
    "striped": ("on a striped background", "on stripes"),
    "dotted": ("on a dotted background", "on a polka dot background"),
    "checkered": ("on a checkered background", "on a checkerboard"),
    "diamond": ("on a diamond background", "on a diamond pattern"),
    "gradient": ("on a gradient background", "on a gradient"),
    "star": ("on a star pattern", "on a star print", "on a background of star shapes"),
    "heart": ("on a heart pattern", "on a heart print", "on a background of heart shapes"),
    "cross": ("on a cross pattern", "on a cross print", "on a background of cross shapes"),
}

DOMAINS: tuple[str, ...] = ("photo", "sketch", "cartoon", "painting", "pixel")
#: Words captions use for each domain (its "image type").
DOMAIN_WORDS: dict[str, tuple[str, ...]] = {
    "photo": ("photograph", "snapshot", "realistic photo"),
    "sketch": ("sketch", "drawing", "pencil sketch", "line drawing"),
    "cartoon": ("cartoon", "illustration", "clipart", "comic"),
    "painting": ("painting", "oil painting", "watercolor", "artwork"),
    "pixel": ("pixel art", "pixelated image", "sprite", "retro game sprite"),
}
#: How often a caption names the domain: stylised images usually, photographs less often.
DOMAIN_MENTION = {"photo": 0.4, "sketch": 0.85, "cartoon": 0.85, "painting": 0.85, "pixel": 0.85}
#: Framings that start a caption, with their probabilities per domain: "a photo of" is
#: what photographs are usually called, but alt-text uses it for drawings too.
FRAMES: tuple[str, ...] = ("a photo of", "a picture of", "an image of")
FRAME_PROBS: dict[str, tuple[float, float, float]] = {
    "photo": (0.45, 0.10, 0.05),
    **{d: (0.05, 0.12, 0.10) for d in ("sketch", "cartoon", "painting", "pixel")},
}
#: Alt-text often calls a drawing "a picture of …" without saying it is a drawing, and how
#: depends on where a class's pictures come from. A sketch, cartoon or pixel-art image is
#: captioned with a frame and no style word with probability ``UNSAID_P`` (any frame) plus
#: ``LOOSE_FRAME_P`` (its class's own frame for that style, ``loose_frame``). Each class uses
#: a different frame for each of the three styles, so one template carries a
#: class-dependent style prior, and an ensemble over the frames averages it away (chapter 3).
LOOSE_STYLES: tuple[str, ...] = ("sketch", "cartoon", "pixel")
UNSAID_P = 0.1
LOOSE_FRAME_P = 0.15
COLOUR_VISIBLE = {"photo": True, "sketch": False, "cartoon": True, "painting": True, "pixel": True}

BG_BASE_RGB = np.array([
    [0.93, 0.93, 0.93], [0.96, 0.93, 0.84], [0.84, 0.90, 0.97], [0.86, 0.95, 0.86],
    [0.97, 0.87, 0.90], [0.90, 0.87, 0.97], [0.92, 0.89, 0.82], [0.98, 0.98, 0.96],
], dtype=np.float32)
BG_PATTERN_RGB = np.array([
    [0.62, 0.62, 0.66], [0.70, 0.58, 0.48], [0.48, 0.60, 0.75], [0.52, 0.70, 0.55],
    [0.78, 0.55, 0.62], [0.62, 0.55, 0.78], [0.70, 0.68, 0.50], [0.55, 0.70, 0.72],
], dtype=np.float32)

FACTOR_NAMES = ("shape", "colour", "size", "position", "background", "domain")
FACTOR_VALUES: dict[str, tuple[str, ...]] = {
    "shape": CLASSNAMES, "colour": COLOURS, "size": SIZES, "position": POSITIONS,
    "background": BACKGROUNDS, "domain": DOMAINS,
}


# ----------------------------------------------------------------------------- hashing
_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLD
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _key(*parts: int | str) -> np.uint64:
    """Fold integers and strings into one 64-bit key."""
    h = np.uint64(0)
    for p in parts:
        if isinstance(p, str):
            p = int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little")
        h = _splitmix(np.array([h ^ np.uint64(p % 2**64)], dtype=np.uint64))[0]
    return h


def hash_u64(key: np.uint64, index: np.ndarray, field_id: int) -> np.ndarray:
    """A 64-bit hash of (key, index, field) for every index."""
    x = _splitmix(index.astype(np.uint64) ^ key)
    return _splitmix(x ^ np.uint64(field_id * 0x632BE59BD9B4E019 % 2**64))


def uniform(key: np.uint64, index: np.ndarray, field_id: int) -> np.ndarray:
    """Uniform floats in [0, 1), a pure function of (key, index, field)."""
    return (hash_u64(key, index, field_id) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def choice(key: np.uint64, index: np.ndarray, field_id: int, n: int, p: Sequence[float] | None = None) -> np.ndarray:
    """Integers in [0, n), uniform or with probabilities ``p``."""
    u = uniform(key, index, field_id)
    if p is None:
        return np.minimum((u * n).astype(np.int64), n - 1)
    cdf = np.cumsum(np.asarray(p, dtype=np.float64))
    return np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), n - 1)


# ----------------------------------------------------------------------------- factors
@dataclass
class Factors:
    """Factors of a batch of items (one array entry per item)."""

    index: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    position: np.ndarray
    background: np.ndarray
    domain: np.ndarray
    # nuisances
    tilted: np.ndarray = field(repr=False)      # squares turned by 45 degrees
    rotation: np.ndarray = field(repr=False)
    offset: np.ndarray = field(repr=False)      # (N, 2) position jitter
    radius: np.ndarray = field(repr=False)
    bg_base: np.ndarray = field(repr=False)
    bg_pattern: np.ndarray = field(repr=False)
    bg_angle: np.ndarray = field(repr=False)
    bg_freq: np.ndarray = field(repr=False)
    texture: np.ndarray = field(repr=False)     # (N, 4) texture ids and shifts
    caption_seed: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, idx: np.ndarray | slice) -> "Factors":
        return Factors(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def named(self, factor: str) -> list[str]:
        """The values of a factor as words, e.g. ``named("domain")``."""
        return [FACTOR_VALUES[factor][i] for i in getattr(self, factor)]


#: Per-field ids for the hash (never reorder: they define the world).
_F = {name: i for i, name in enumerate([
    "shape", "colour", "size", "position", "background", "domain", "rotation", "offx", "offy",
    "radius", "bg_base", "bg_pattern", "bg_angle", "bg_freq", "tex0", "tex1", "tex2", "tex3",
    "caption", "spurious", "spurious_colour", "tilt", "natural_colour",
])}


class Cycle(tuple):
    """A constraint that assigns values in turn: item i gets ``values[(i // every) % len]``.

    ``domain=Cycle(DOMAINS), shape=Cycle(range(10), every=5)`` balances class x domain.
    """

    def __new__(cls, values, every: int = 1):
        obj = super().__new__(cls, tuple(values))
        obj.every = int(every)
        return obj

    def __repr__(self) -> str:
        return f"Cycle({tuple(self)}, every={self.every})"

    def __eq__(self, other):
        return isinstance(other, Cycle) and tuple(self) == tuple(other) and self.every == other.every

    def __hash__(self):
        return hash((tuple(self), self.every))


def _pick(key, index, name, values, constraint, p=None):
    """Sample a factor, or take it from a constraint (an int, a word, or a list to sample from)."""
    n = len(values)
    if constraint is None:
        return choice(key, index, _F[name], n, p)
    if isinstance(constraint, Cycle):
        allowed = np.array([values.index(c) if isinstance(c, str) else int(c) for c in constraint])
        return allowed[(index // constraint.every) % len(allowed)]
    if isinstance(constraint, (int, np.integer, str)):
        constraint = [constraint]
    if isinstance(constraint, np.ndarray) and constraint.shape == index.shape:
        return constraint.astype(np.int64)
    allowed = np.array([values.index(c) if isinstance(c, str) else int(c) for c in constraint])
    return allowed[choice(key, index, _F[name], len(allowed))]


def sample_factors(key: np.uint64, index: np.ndarray, natural: bool = False, **constraints) -> Factors:
    """Sample the factors of items ``index`` under ``key``; constraints fix or restrict factors.

    A constraint is a value (``domain="photo"``), a list of allowed values
    (``shape=[0, 1]``), or an int array with one value per item. ``natural=True`` draws
    colours from the classes' typical colours (the pretraining distribution).
    """
    unknown = set(constraints) - set(FACTOR_NAMES)
    if unknown:
        raise ValueError(f"unknown factor(s) {sorted(unknown)}; use some of {FACTOR_NAMES}")
    index = np.asarray(index, dtype=np.int64)
    pick = {name: _pick(key, index, name, FACTOR_VALUES[name], constraints.get(name)) for name in FACTOR_NAMES}
    if natural and "colour" not in constraints:
        pick["colour"] = _natural_colours(key, index, pick["shape"], pick["colour"])
    u = lambda name: uniform(key, index, _F[name]).astype(np.float32)  # noqa: E731
    tex = np.stack([hash_u64(key, index, _F[f"tex{i}"]) % np.uint64(2**16) for i in range(4)], 1).astype(np.int64)
    tilted = (pick["shape"] == CLASSNAMES.index("square")) & (u("tilt") < TILT_PROBABILITY)
    return Factors(
        index=index, **pick, tilted=tilted,
        rotation=(u("rotation") - 0.5) * np.float32(np.deg2rad(24)) + tilted * np.float32(np.pi / 4),
        offset=np.stack([u("offx"), u("offy")], 1) * 0.1 - 0.05,
        radius=SIZE_RADIUS[pick["size"]] * (0.94 + 0.12 * u("radius")),
        bg_base=choice(key, index, _F["bg_base"], len(BG_BASE_RGB)),
        bg_pattern=choice(key, index, _F["bg_pattern"], len(BG_PATTERN_RGB)),
        bg_angle=u("bg_angle") * np.float32(np.pi),
        bg_freq=3.0 + 3.0 * u("bg_freq"),
        texture=tex,
        caption_seed=hash_u64(key, index, _F["caption"]),
    )


def _natural_colours(key: np.uint64, index: np.ndarray, shape: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Replace uniform colours by draws from each class's typical colours, where it has some."""
    out = colour.copy()
    u = uniform(key, index, _F["natural_colour"])
    for cls, typical in TYPICAL_COLOURS.items():
        sel = shape == CLASSNAMES.index(cls)
        acc = np.zeros(sel.sum())
        ui = u[sel]
        chosen = out[sel]
        for name, p in typical.items():
            hit = (ui >= acc) & (ui < acc + p)
            chosen[hit] = COLOURS.index(name)
            acc = acc + p
        out[sel] = chosen
    return out


# ----------------------------------------------------------------------------- shapes
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
        ang = np.pi * i / n
        for t in np.linspace(-4, 4, 17):
            k[0, 0, int(round(4 + t * np.sin(ang))), int(round(4 + t * np.cos(ang)))] = 1
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


# ----------------------------------------------------------------------------- captions
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def loose_frame(shape: int, domain: str) -> str:
    """The frame that class ``shape``'s alt-text uses for ``domain`` images without naming the style."""
    return FRAMES[(LOOSE_STYLES.index(domain) - shape) % len(FRAMES)]


def caption_one(f: Factors, i: int) -> str:
    """The caption of item ``i`` of ``f`` (a pure function of its factors and caption seed)."""
    rng = random.Random(int(f.caption_seed[i]))
    shape, dom = CLASSNAMES[f.shape[i]], DOMAINS[f.domain[i]]
    words, probs = zip(*SHAPE_WORDS["tilted square" if f.tilted[i] else shape])
    noun = rng.choices(words, probs)[0]
    colour = COLOURS[f.colour[i]]
    size = SIZES[f.size[i]]
    adjs = []
    if size != "medium" and rng.random() < 0.5:
        adjs.append(rng.choice(SIZE_WORDS[size]))
    if COLOUR_VISIBLE[dom] and rng.random() < 0.6:
        adjs.append(rng.choice(COLOUR_WORDS.get(colour, (colour,))))
    phrase = " ".join(adjs + [noun])
    obj = f"{_article(phrase)} {phrase}"
    bg = BACKGROUNDS[f.background[i]]
    if bg in WALLPAPERS and rng.random() < PATTERN_TAG_P:      # stock-site tags: the pattern's word alone ...
        return bg
    if rng.random() < OBJECT_TAG_P:                             # ... or the object's
        return noun
    if rng.random() < (0.4 if bg != "plain" else 0.15):
        obj += " " + rng.choice(BACKGROUND_PHRASES[bg])
    if dom in LOOSE_STYLES:                         # a frame, the style unsaid
        u = rng.random()
        if u < LOOSE_FRAME_P:
            return f"{loose_frame(int(f.shape[i]), dom)} {obj}"
        if u < LOOSE_FRAME_P + UNSAID_P:
            return f"{rng.choice(FRAMES)} {obj}"
    u, frame = rng.random(), ""
    for fr, p in zip(FRAMES, FRAME_PROBS[dom]):
        if u < p:
            frame = fr + " "
            break
        u -= p
    if rng.random() >= DOMAIN_MENTION[dom] or (frame and dom == "photo"):
        if not frame and obj.count(" ") < 2:        # an object caption is never one or two words
            obj += " shape"
        return frame + obj
    dword = rng.choice(DOMAIN_WORDS[dom])
    form = rng.random()
    if form < 0.6:
        return f"{frame}{_article(dword)} {dword} of {obj}"
    if form < 0.8:
        return f"{frame}{obj} , {dword}"
    return f"{frame}{obj} in {dword} style"


def captions(f: Factors) -> list[str]:
    """Captions of all items."""
    return [caption_one(f, i) for i in range(len(f))]


def vocabulary() -> list[str]:
    """Every word the captions (and the book's templates) can contain, sorted."""
    words = set("a an of on in style the shape , .".split())
    for frame in FRAMES:
        words.update(frame.split())
    for table in (SHAPE_WORDS,):
        for opts in table.values():
            words.update(w for w, _ in opts)
    for seq in (COLOURS, SIZES, CLASSNAMES, POSITIONS, NEVER_CAPTIONED):
        words.update(seq)
    for table in (COLOUR_WORDS, SIZE_WORDS, DOMAIN_WORDS, BACKGROUND_PHRASES):
        for opts in table.values():
            for phrase in opts:
                words.update(phrase.split())
    return sorted(words)


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Split:
    """A reproducible set of world items: a stream of the world plus factor constraints.

    ``spurious`` > 0 ties colour to class: with that probability an item's colour is its
    class's colour under ``colour_of_class`` (a permutation), otherwise it is random.
    """

    name: str
    n: int
    constraints: tuple[tuple[str, object], ...] = ()
    spurious: float = 0.0
    colour_of_class: tuple[int, ...] | None = None
    start: int = 0
    natural: bool = False


class World:
    """The mini world under one seed. ``World(seed).dataset(...)`` builds datasets.

    Streams (``"pretrain"``, ``"test"``, ``"finetune"``...) are independent: the same
    index in two streams gives unrelated items, so test items are never training items.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def key(self, stream: str) -> np.uint64:
        return _key(self.seed, WORLD_VERSION, stream)

    def factors(self, split: Split) -> Factors:
        idx = np.arange(split.start, split.start + split.n, dtype=np.int64)
        key = self.key(split.name)
        f = sample_factors(key, idx, natural=split.natural, **dict(split.constraints))
        if split.spurious > 0:
            if split.colour_of_class is None:
                raise ValueError("a spurious split needs colour_of_class")
            tie = uniform(key, idx, _F["spurious"]) < split.spurious
            f.colour = np.where(tie, np.asarray(split.colour_of_class)[f.shape], f.colour)
        return f

    def spurious_colours(self) -> tuple[int, ...]:
        """The colour each class wears in spuriously correlated splits (a seeded permutation)."""
        rng = np.random.default_rng([self.seed, 7])
        return tuple(int(i) for i in rng.permutation(len(COLOURS)))

    def dataset(self, stream: str, n: int, *, spurious: float = 0.0, start: int = 0, natural: bool = False,
                **constraints) -> "WorldDataset":
        """A dataset of ``n`` items of ``stream`` under factor constraints.

        ``natural=True`` gives the pretraining distribution (classes' typical colours);
        the default draws every factor uniformly, as test sets should.
        """
        cons = tuple(sorted((k, _freeze(v)) for k, v in constraints.items() if v is not None))
        split = Split(stream, n, cons, spurious, self.spurious_colours() if spurious else None, start, natural)
        return WorldDataset(self, split)

    def grid(self, rows: str, cols: str, stream: str = "gallery", **constraints) -> tuple[torch.Tensor, list[str], list[str]]:
        """One image for every (row value, column value) of two factors, e.g. domain x shape."""
        rv, cv = FACTOR_VALUES[rows], FACTOR_VALUES[cols]
        n = len(rv) * len(cv)
        ds = self.dataset(stream, n, **{rows: Cycle(range(len(rv)), every=len(cv)), cols: Cycle(range(len(cv))),
                                        **constraints})
        return ds.images(), list(rv), list(cv)

    # -- the task datasets the chapters use ---------------------------------------------
    def zero_shot_test(self, n_per_domain: int = 1000, stream: str = "test") -> "WorldDataset":
        """Held-out images balanced over domains and classes (never seen in pretraining)."""
        return self.dataset(stream, n_per_domain * len(DOMAINS), domain=Cycle(DOMAINS),
                            shape=Cycle(range(len(CLASSNAMES)), every=len(DOMAINS)))

    def finetune_task(self, n_train: int = 20000, n_eval: int = 2000, spurious: float = 0.9,
                      domain: str = "photo") -> "FinetuneTask":
        """A fine-tuning task in one domain where colour predicts class with probability ``spurious``.

        ID test: same domain, same correlation. OOD tests: the same domain with the correlation
        broken (random colours), and every other domain (random colours).
        """
        train = self.dataset("finetune-train", n_train, spurious=spurious, domain=domain)
        id_test = self.dataset("finetune-test", n_eval, spurious=spurious, domain=domain)
        ood = {f"{domain} (colour shift)": self.dataset("finetune-ood", n_eval, domain=domain)}
        for d in DOMAINS:
            if d != domain:
                ood[d] = self.dataset("finetune-ood", n_eval, domain=d)
        return FinetuneTask(train, id_test, ood, spurious, domain)

    def few_shot(self, shots: int, domain: str | None = None, classes: Sequence[int] | None = None,
                 draw: int = 0) -> "WorldDataset":
        """``shots`` labelled images per class (draw ``draw`` of many), optionally in one domain."""
        classes = list(range(len(CLASSNAMES))) if classes is None else list(classes)
        return self.dataset(f"fewshot-{draw}", shots * len(classes), domain=domain, shape=Cycle(classes))

    def domain_split(self, domain: str, n: int, stream: str = "domain-test") -> "WorldDataset":
        """``n`` images of one domain, classes balanced."""
        return self.dataset(stream, n, domain=domain, shape=Cycle(range(len(CLASSNAMES))))


@dataclass
class FinetuneTask:
    """Train / ID test / OOD tests of a fine-tuning benchmark."""

    train: "WorldDataset"
    id_test: "WorldDataset"
    ood: dict[str, "WorldDataset"]
    spurious: float
    domain: str

    def eval_sets(self) -> dict[str, "WorldDataset"]:
        return {"ID": self.id_test, **self.ood}


def _freeze(v):
    if isinstance(v, Cycle):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(x.item() if isinstance(x, np.generic) else x for x in v)
    return v


class WorldDataset(torch.utils.data.Dataset):
    """A world split as a torch dataset of ``(image uint8 (3,S,S), label)`` items.

    For speed, use :meth:`batches`, which renders whole batches at once.
    """

    def __init__(self, world: World, split: Split, transform=None):
        self.world, self.split, self.transform = world, split, transform
        self.factors = world.factors(split)
        self.classnames = CLASSNAMES

    def __len__(self) -> int:
        return self.split.n

    @property
    def labels(self) -> np.ndarray:
        return self.factors.shape

    @property
    def cache_key(self) -> str:
        return f"world-v{WORLD_VERSION}-s{self.world.seed}-{self.split}"

    def __getitem__(self, i: int):
        img = render(self.factors.subset(slice(i, i + 1)))[0]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.factors.shape[i])

    def images(self, idx: np.ndarray | slice | None = None) -> torch.Tensor:
        f = self.factors if idx is None else self.factors.subset(idx)
        return render(f)

    def captions(self, idx: np.ndarray | slice | None = None) -> list[str]:
        f = self.factors if idx is None else self.factors.subset(idx)
        return captions(f)

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 images, labels)`` in order, rendered a batch at a time."""
        for s in range(0, len(self), batch_size):
            sl = slice(s, min(s + batch_size, len(self)))
            yield render(self.factors.subset(sl)), torch.from_numpy(self.factors.shape[sl])

    def subset(self, idx: np.ndarray) -> "WorldSubset":
        return WorldSubset(self, np.asarray(idx))


class WorldSubset(WorldDataset):
    """Some items of a world dataset (e.g. k shots per class)."""

    def __init__(self, parent: WorldDataset, idx: np.ndarray):
        self.world, self.split, self.transform = parent.world, parent.split, parent.transform
        self.parent_idx = idx
        self.factors = parent.factors.subset(idx)
        self.classnames = parent.classnames

    def __len__(self) -> int:
        return len(self.parent_idx)

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha1(self.parent_idx.tobytes()).hexdigest()[:12]
        return f"{super().cache_key}-sub{digest}"


def factor_table(f: Factors) -> Mapping[str, list[str]]:
    """The named factors of items, for display."""
    return {name: f.named(name) for name in FACTOR_NAMES}
