"""The mini world's factors: their values and words, the seeded hash, and factor sampling (chapter 0).

Every factor of item ``i`` of a stream is a pure function of ``(world seed, stream, i)``
through the splitmix64 hash below: nothing is stored, anything can be regenerated.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np

__all__ = [
    "WORLD_VERSION", "IMAGE_SIZE", "CLASSNAMES", "CURATED_CLASSNAMES", "SHAPE_WORDS", "TILT_PROBABILITY",
    "COLOURS", "COLOUR_RGB", "COLOUR_WORDS", "TYPICAL_COLOURS", "SIZES", "SIZE_RADIUS", "SIZE_WORDS",
    "NEVER_CAPTIONED", "POSITIONS", "POSITION_OFFSET", "BACKGROUNDS", "WALLPAPERS", "OBJECT_TAG_P",
    "PATTERN_TAG_P", "BACKGROUND_PHRASES", "DOMAINS", "DOMAIN_WORDS", "DOMAIN_MENTION", "FRAMES",
    "FRAME_PROBS", "LOOSE_STYLES", "UNSAID_P", "LOOSE_FRAME_P", "COLOUR_VISIBLE", "BG_BASE_RGB",
    "BG_PATTERN_RGB", "FACTOR_NAMES", "FACTOR_VALUES", "hash_u64", "uniform", "choice", "Factors", "Cycle",
    "sample_factors",
]

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

