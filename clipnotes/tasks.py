"""Every chapter's benchmark, for either profile: the only module that reads the profile's name.

A :class:`Benchmark` is a test set with its class names and templates, plus what a
chapter needs beside it: the images shots or training batches come from (``train``), a
held-out split for choosing hyper-parameters (``val``), OOD test sets (``ood``), per-item
groups such as styles. ``mini`` builds them from the world; ``paper`` from
:mod:`clipnotes.data`'s loaders. Few-shot draws and base-to-new splits live here too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import templates as T
from . import world
from .data import (CIFAR10_CLASSNAMES, PACS_DOMAINS, ImageDataset, concat_files, cifar, cifar10_shift,
                   coop_dataset, pacs, take_files)
from .profiles import Profile
from .utils import ClipnotesError
from .world import CLASSNAMES, DOMAINS, Cycle, World, WorldDataset


@dataclass
class Benchmark:
    """A labelled test set (``dataset``) with its class names, prompt templates and companions."""

    name: str
    dataset: ImageDataset                    # the test set ("ID" where there are OOD sets)
    classnames: list[str]
    templates: list[str]                     # the heads' templates; templates[0] is the hand prompt
    groups: list[str] | None = None          # e.g. the style of every test item
    pool: list[str] | None = None            # a larger template pool for ensembling (chapter 3)
    train: ImageDataset | None = None        # labelled images to draw shots / training batches from
    curated: list[str] | None = None         # better class names, where known
    style_templates: dict[str, str] = field(default_factory=dict)   # a template per group, where one fits
    val: ImageDataset | None = None          # a held-out split for choosing hyper-parameters
    ood: dict[str, ImageDataset] = field(default_factory=dict)      # OOD test sets (chapters 5–7)
    caption_templates: list[str] | None = None   # FLYP's captions, where some templates misname the images
    train_groups: list[str] | None = None    # the group (style) of every ``train`` item, where known

    @property
    def factors(self) -> world.Factors | None:
        """The test items' known factors in the mini world; ``None`` for real datasets."""
        return self.dataset.factors if isinstance(self.dataset, WorldDataset) else None

    @property
    def eval_sets(self) -> dict[str, ImageDataset]:
        """``{"ID": test set, **OOD sets}``: what fine-tuning is evaluated on."""
        return {"ID": self.dataset, **self.ood}

    @property
    def ood_names(self) -> list[str]:
        return list(self.ood)

    @property
    def captions(self) -> list[str]:
        """The templates FLYP writes its training captions with."""
        return self.caption_templates or self.templates


def _mini_test(profile: Profile) -> WorldDataset:
    return World(profile.seed).zero_shot_test(profile.n_test_per_domain)


def _templates(profile: Profile, templates: Sequence[str], n: int = 3) -> list[str]:
    """A benchmark's templates; the paper check keeps the first ``n`` (text-tower passes over
    every template dominate its CPU time, and three exercise every line that uses them)."""
    return list(templates)[:n] if profile.paper_check else list(templates)


def zero_shot_benchmarks(profile: Profile) -> list[Benchmark]:
    """Chapters 2–3: the mini world's five styles, or CIFAR-10 and CIFAR-100 (CLIP's 18 templates)."""
    if profile.name == "mini":
        w, test = World(profile.seed), _mini_test(profile)
        curated = [world.CURATED_CLASSNAMES.get(c, c) for c in CLASSNAMES]
        return [Benchmark("mini world", test, list(CLASSNAMES), [T.PHOTO_TEMPLATE], test.factors.named("domain"),
                          pool=list(T.MINI_TEMPLATES),
                          train=w.dataset("probe-train", 200 * len(CLASSNAMES), shape=Cycle(range(10))),
                          curated=curated, style_templates=dict(T.MINI_DOMAIN_TEMPLATES))]
    root = profile.data_dir
    out = []
    for name, label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
        test = cifar(name, root, train=False, download=profile.download, verify=not profile.paper_check)
        train = cifar(name, root, train=True, download=profile.download, verify=not profile.paper_check)
        out.append(Benchmark(label, test, test.classnames, _templates(profile, T.CIFAR_TEMPLATES),
                             pool=_templates(profile, T.CIFAR_TEMPLATES, 4), train=train))
    return out


def draw_seed(seed: int, draw: int) -> int:
    """The seed of draw ``draw`` under the run's ``seed`` — few-shot draws (chapters 2, 4, 11),
    soup ingredients (chapter 10): one rule, so no two (seed, draw) pairs below 1,000 draws
    share a random stream."""
    if not 0 <= draw < 1000:
        raise ClipnotesError(f"draw {draw} is out of range; draws are numbered 0 to 999")
    return seed * 1000 + draw


def few_shot_indices(labels: Sequence[int], shots: int, seed: int = 0, most: float = 1.0) -> np.ndarray:
    """``shots`` random indices per class (all of a class if it has fewer, at most the share
    ``most`` of it), sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picks.append(rng.permutation(members)[:min(shots, int(len(members) * most))])
    return np.sort(np.concatenate(picks))


BASE_NEW_SPLITS = ("first-half", "alternate")


def base_new_classes(n_classes: int, split: str = "first-half") -> tuple[list[int], list[int]]:
    """A base-to-new split of the labels (chapter 4): CoCoOp's (the first ⌈n/2⌉ are base, the
    rest new), or ``"alternate"`` (even labels base, odd new) where the label order groups
    hard classes."""
    if split == "first-half":
        m = math.ceil(n_classes / 2)
        return list(range(m)), list(range(m, n_classes))
    if split == "alternate":
        return list(range(0, n_classes, 2)), list(range(1, n_classes, 2))
    raise ClipnotesError(f"unknown base-to-new split {split!r}; use one of {BASE_NEW_SPLITS}")


def few_shot_benchmark(profile: Profile, dataset: str = "EuroSAT", pool_per_class: int = 64,
                       n_test: int = 1000) -> Benchmark:
    """Chapter 4's few-shot task: shots come from ``train``, the hand prompt is ``templates[0]``.

    mini: paintings, the style where the hand prompt is weakest; paper: a CoOp dataset
    (train → test) with CoOp's hand prompt (``pool_per_class``/``n_test`` apply to mini only).
    """
    if profile.name == "mini":
        w, n = World(profile.seed), len(CLASSNAMES)
        pool = w.dataset("fewshot-pool", pool_per_class * n, domain="painting", shape=Cycle(range(n)))
        return Benchmark("mini world: paintings", w.domain_split("painting", n_test), list(CLASSNAMES),
                         [T.PHOTO_TEMPLATE], train=pool)
    train, test = (coop_dataset(dataset, profile.data_dir, split) for split in ("train", "test"))
    return Benchmark(dataset, test, test.classnames, [T.COOP_HAND_PROMPTS[dataset]], train=train)


def clap_benchmark(profile: Profile, n_val: int = 1000, shots_pool: int = 16) -> Benchmark:
    """Chapter 8's task: every domain (``groups``), a held-out *source* split (``val``: photos) for
    choosing CLAP's inference weight, and a pool of labelled images for few-shot probes (``train``).

    mini: the world's test images, photos from another stream, and ``shots_pool`` images per
    class and domain. paper: PACS; a fifth of its photos (seeded) is the source split, and
    ``shots_pool`` images per class and domain (at most half a class) are the few-shot pool;
    both leave the test set (CLAP's code draws its few-shot images from the test set itself).
    """
    if profile.name == "mini":
        w, n = World(profile.seed), len(CLASSNAMES)
        test = _mini_test(profile)
        val = w.domain_split("photo", n_val, stream="clap-val")
        pool = w.dataset("clap-fewshot", shots_pool * n * len(DOMAINS), domain=Cycle(DOMAINS),
                         shape=Cycle(range(n), every=len(DOMAINS)))
        return Benchmark("mini world: five styles", test, list(CLASSNAMES), [T.PHOTO_TEMPLATE],
                         test.factors.named("domain"), train=pool, val=val,
                         train_groups=pool.factors.named("domain"))
    domains = {d: pacs(profile.data_dir, d) for d in PACS_DOMAINS}
    photo = domains["photo"]
    held = np.random.default_rng(profile.seed).permutation(len(photo))[:len(photo) // 5]
    val = take_files(photo, held, f"PACS-photo-val-s{profile.seed}")
    tests, pools = {}, {}
    for d, ds in domains.items():               # the few-shot pool leaves the test set (CLAP's code draws from it)
        rest = np.setdiff1d(np.arange(len(ds)), held) if d == "photo" else np.arange(len(ds))
        pool = rest[few_shot_indices(ds.labels[rest], shots_pool, profile.seed, most=0.5)]   # the rest is tested
        pools[d] = take_files(ds, pool, f"PACS-{d}-pool-s{profile.seed}")
        tests[d] = take_files(ds, np.setdiff1d(rest, pool), f"PACS-{d}-test-s{profile.seed}")
    test = concat_files(list(tests.values()), f"PACS-test-s{profile.seed}")
    pool = concat_files(list(pools.values()), f"PACS-pool-s{profile.seed}")
    groups = [d for d, ds in tests.items() for _ in range(len(ds))]
    return Benchmark("PACS", test, test.classnames, [T.PHOTO_TEMPLATE], groups, train=pool, val=val,
                     train_groups=[d for d, ds in pools.items() for _ in range(len(ds))])



def tpt_benchmark(profile: Profile, per_style: int | None = None, shots: int = 16,
                  styles: Sequence[str] | None = None) -> Benchmark:
    """Chapter 12's task: ``per_style`` test images of every style (``groups``), classified one at a
    time, and ``shots`` labelled photos per class (``train``) for the CoOp context TPT can start from.

    mini: a fresh stream of the world's five styles (100 per style by default); paper: PACS's
    four domains, a seeded ``per_style`` (default 500) of chapter 8's test split of each, the
    shots from chapter 8's photo pool. Photos are the source style in both. ``styles``: only
    these styles (another stream of images in mini, so its images are not the default set's).
    """
    known = DOMAINS if profile.name == "mini" else PACS_DOMAINS
    if isinstance(styles, str):
        raise ClipnotesError(f"styles takes a list of style names, e.g. [{styles!r}], not a string")
    unknown = sorted(set(styles or ()) - set(known))
    if unknown or (styles is not None and not styles):
        raise ClipnotesError(f"unknown or no styles {unknown or list(styles or ())}; choose from {', '.join(known)}")
    chosen = tuple(s for s in known if styles is None or s in styles)
    tag = "" if styles is None else "-" + "-".join(chosen)
    if profile.name == "mini":
        w, n = World(profile.seed), len(CLASSNAMES)
        test = w.zero_shot_test(per_style or 100, stream="tpt" + tag, domains=chosen)
        name = "mini world: " + ("five styles" if styles is None else ", ".join(chosen))
        return Benchmark(name, test, list(CLASSNAMES), [T.PHOTO_TEMPLATE], test.factors.named("domain"),
                         train=w.domain_split("photo", shots * n, stream="tpt-shots"))
    pacs_task = clap_benchmark(profile, shots_pool=shots)
    groups, rng = np.array(pacs_task.groups), np.random.default_rng([profile.seed, 12])
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(groups == d))[:per_style or 500]
                                   for d in chosen]))
    photos = np.flatnonzero(np.array(pacs_task.train_groups) == "photo")
    return Benchmark("PACS", take_files(pacs_task.dataset, keep, f"PACS-tpt-s{profile.seed}-{per_style or 500}{tag}"),
                     pacs_task.classnames, pacs_task.templates, groups[keep].tolist(),
                     train=take_files(pacs_task.train, photos, f"PACS-tpt-shots-s{profile.seed}"))


def finetune_benchmark(profile: Profile, n_train: int = 4000, n_eval: int = 1000) -> Benchmark:
    """Chapters 5–7, 9–10: training images (``train``), a held-out ID split (``val``), an ID test
    set (``dataset``) and OOD sets (``ood``).

    mini: photos where colour predicts class (90 %) → the colour shift and four other styles;
    ``val`` is another stream of the same photos. paper: CIFAR-10 → CIFAR-10.1 and CIFAR-10.2;
    ``val`` is a seeded tenth of CIFAR-10's training set, which ``train`` leaves out (model
    soups' held-out split; ``n_train``/``n_eval`` apply to mini only).
    """
    if profile.name == "mini":
        spurious, domain = 0.9, "photo"
        w = World(profile.seed)
        train, evals = w.finetune_sets(n_train, n_eval, spurious, domain)
        id_test = evals.pop("ID")
        return Benchmark(f"mini world: {domain}s, colour-class correlation {spurious:.0%}", id_test,
                         list(CLASSNAMES), list(T.MINI_TEMPLATES), train=train, ood=evals,
                         caption_templates=list(T.MINI_PHOTO_TEMPLATES),
                         val=w.dataset("finetune-val", n_eval, spurious=spurious, domain=domain))
    root = profile.data_dir
    full = cifar("cifar10", root, train=True, download=profile.download, verify=not profile.paper_check)
    test = cifar("cifar10", root, train=False, download=profile.download, verify=not profile.paper_check)
    order = np.random.default_rng([profile.seed, 10]).permutation(len(full))
    held, kept = np.sort(order[:len(full) // 10]), np.sort(order[len(full) // 10:])
    ood = {"CIFAR-10.1": cifar10_shift("cifar10.1", root), "CIFAR-10.2": cifar10_shift("cifar10.2", root)}
    return Benchmark("CIFAR-10 → CIFAR-10.1, CIFAR-10.2", test, CIFAR10_CLASSNAMES,
                     _templates(profile, T.CIFAR_TEMPLATES), train=full.subset(kept, f"{full.cache_key}-train-s{profile.seed}"),
                     ood=ood, val=full.subset(held, f"{full.cache_key}-val-s{profile.seed}"))


def patching_benchmarks(profile: Profile, n_train: int = 4000, n_eval: int = 1000) -> tuple[Benchmark, Benchmark]:
    """Chapter 13 (PAINT): the *patching* task the zero-shot model is bad at (with
    ``train``) and a *supported* task it should keep; each with a held-out split (``val``) for
    choosing the mixing coefficient.

    mini: the object's size (small, medium, large) in photos — "medium" is never said in the
    world's captions — patched; the shapes in all five styles (the start of chapter 2's test
    set, ``n_eval`` images) supported. paper: EuroSAT (CoOp's split and hand prompt) patched,
    CIFAR-10 supported (its held-out split: a seeded 1,000 of its training set), as PAINT pairs
    a satellite task with a generic one; ``n_train``/``n_eval`` apply to mini only.
    """
    if profile.name == "mini":
        w = World(profile.seed)
        size = lambda stream, n: w.dataset(stream, n, domain="photo").relabelled("size")
        patch = Benchmark("mini world: object size (photos)", size("patch-test", n_eval), list(world.SIZES),
                          list(T.MINI_SIZE_TEMPLATES), train=size("patch-train", n_train), val=size("patch-val", n_eval // 2))
        per_style = n_eval // len(DOMAINS)
        supported = Benchmark("mini world: shapes, five styles", w.zero_shot_test(per_style), list(CLASSNAMES),
                              [T.PHOTO_TEMPLATE], val=w.zero_shot_test(per_style // 2, stream="paint-val"))
        return patch, supported
    root = profile.data_dir
    train, val, test = (coop_dataset("EuroSAT", root, split) for split in ("train", "val", "test"))
    patch = Benchmark("EuroSAT", test, test.classnames, [T.COOP_HAND_PROMPTS["EuroSAT"]], train=train, val=val)
    cifar10 = cifar("cifar10", root, train=False, download=profile.download, verify=not profile.paper_check)
    full = cifar("cifar10", root, train=True, download=profile.download, verify=not profile.paper_check)
    held = np.sort(np.random.default_rng([profile.seed, 11]).permutation(len(full))[:1000])
    return patch, Benchmark("CIFAR-10", cifar10, cifar10.classnames, _templates(profile, T.CIFAR_TEMPLATES),
                            val=full.subset(held, f"{full.cache_key}-paint-val-s{profile.seed}"))
