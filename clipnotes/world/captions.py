"""Captions of the mini world: alt-text-like sentences, tags and loose frames (chapter 0),
and the vocabulary every caption and template is written in."""
from __future__ import annotations

import random

from ..utils import article
from .factors import (BACKGROUND_PHRASES, BACKGROUNDS, CLASSNAMES, COLOUR_VISIBLE, COLOUR_WORDS, COLOURS,
                      DOMAIN_MENTION, DOMAIN_WORDS, DOMAINS, FRAME_PROBS, FRAMES, LOOSE_FRAME_P, LOOSE_STYLES,
                      NEVER_CAPTIONED, OBJECT_TAG_P, PATTERN_TAG_P, POSITIONS, SHAPE_WORDS, SIZE_WORDS, SIZES,
                      UNSAID_P, WALLPAPERS, Factors)


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
    obj = f"{article(phrase)} {phrase}"
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
        return f"{frame}{article(dword)} {dword} of {obj}"
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

