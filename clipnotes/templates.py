"""Prompt templates as data: the mini world's pool, CLIP's CIFAR templates, CoOp's hand prompts.

Kept apart from the code that uses them (as open_clip keeps ``zero_shot_metadata`` apart
from ``build_zero_shot_classifier``); chapters 2–8 read them through :mod:`clipnotes.tasks`.
"""
from __future__ import annotations

from .utils import article

#: The CLIP paper's default prompt.
PHOTO_TEMPLATE = "a photo of a {}."


#: Domain-aware templates of the mini world (one per image type its captions use).
MINI_DOMAIN_TEMPLATES: dict[str, str] = {
    "photo": "a photo of a {}.",
    "sketch": "a sketch of a {}.",
    "cartoon": "a cartoon of a {}.",
    "painting": "a painting of a {}.",
    "pixel": "a pixel art of a {}.",
}


#: The mini world's prompt pool: the ways its captions describe an image (cf. CLIP's 80 ImageNet
#: templates): its three frames, nine style words, and two sizes and ten colours spread evenly
#: over the frames.
_MINI_FRAMES = ("a photo of", "a picture of", "an image of")


_MINI_ATTRIBUTES = ("small", "large", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink",
                    "brown", "gray")


_MINI_NON_PHOTO = ("sketch", "drawing", "cartoon", "illustration", "painting", "watercolor", "pixel art", "sprite")


MINI_TEMPLATES: tuple[str, ...] = (
    *(f"{frame} a {{}}." for frame in _MINI_FRAMES),
    "a photograph of a {}.",
    *(f"{article(w)} {w} of a {{}}." for w in _MINI_NON_PHOTO),
    *(f"{_MINI_FRAMES[i % len(_MINI_FRAMES)]} {article(a)} {a} {{}}." for i, a in enumerate(_MINI_ATTRIBUTES)),
)


#: The pool less the eight templates that call the image something other than a photo: the
#: ones that do not misname a photograph's kind (FLYP's captions for a training set of photos).
MINI_PHOTO_TEMPLATES: tuple[str, ...] = tuple(t for t in MINI_TEMPLATES
                                              if not any(f" {w} of " in t for w in _MINI_NON_PHOTO))


#: Chapter 13's patching task in the mini world: the object's size, whatever its shape.
MINI_SIZE_TEMPLATES: tuple[str, ...] = ("a photo of a {} shape.",)


#: openai/CLIP data/prompts.md: the 18 CIFAR-10/100 templates, in that file's order.
CIFAR_TEMPLATES: tuple[str, ...] = tuple(
    t.replace("{art}", art)
    for art in ("a", "the")
    for t in ("a photo of {art} {}.", "a blurry photo of {art} {}.", "a black and white photo of {art} {}.",
              "a low contrast photo of {art} {}.", "a high contrast photo of {art} {}.", "a bad photo of {art} {}.",
              "a good photo of {art} {}.", "a photo of {art} small {}.", "a photo of {art} big {}.")
)


#: CoOp's hand-crafted prompt for each dataset: the zero-shot baseline it compares with (``trainers/zsclip.py``).
COOP_HAND_PROMPTS: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "Flowers102": "a photo of a {}, a type of flower.",
    "DTD": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "Caltech101": "a photo of a {}.",
}
