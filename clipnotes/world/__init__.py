"""The mini world: a procedurally generated, captioned image world with known factors (chapter 0).

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

Modules, in the order data flows: :mod:`.factors` (values, words, the seeded hash,
sampling), :mod:`.render` (images), :mod:`.captions` (alt-text and the vocabulary),
:mod:`.datasets` (splits and the chapters' task datasets). :func:`fingerprint` digests
what the world *does*, not its source, so the code can move without invalidating caches.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np

from .captions import caption_one, captions, loose_frame, vocabulary
from .datasets import Split, World, WorldDataset
from .factors import *  # noqa: F401,F403 - the world's factor tables are its public vocabulary
from .factors import DOMAINS, FACTOR_NAMES, WORLD_VERSION, Cycle
from .factors import __all__ as _factor_names
from .render import render, shape_sdf_bank, texture_bank

__all__ = [*_factor_names, "caption_one", "captions", "loose_frame", "vocabulary", "Split", "World", "WorldDataset",
           "render", "shape_sdf_bank", "texture_bank", "fingerprint"]


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """A digest of the world's behaviour: factors, pixels and captions of a fixed probe batch
    (every style, uniform and natural colours, a spurious split) and the vocabulary.

    Part of the pretraining key and of every feature-cache key: any change to what the world
    renders or says changes it; moving or restyling the code does not.
    """
    world = World(0)
    probes = [world.dataset("fingerprint", 60, domain=Cycle(DOMAINS)),
              world.dataset("fingerprint-natural", 60, natural=True, domain=Cycle(DOMAINS)),
              world.dataset("fingerprint-spurious", 30, spurious=0.9, domain="photo")]
    h = hashlib.sha256(WORLD_VERSION.encode())
    for ds in probes:
        for name in FACTOR_NAMES:
            h.update(np.ascontiguousarray(getattr(ds.factors, name)).tobytes())
        h.update(ds.images().numpy().tobytes())
        h.update("\n".join(ds.captions()).encode())
    h.update(" ".join(vocabulary()).encode())
    return h.hexdigest()[:12]
