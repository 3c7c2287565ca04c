"""Datasets of the mini world: reproducible splits of its streams, and the task datasets
the chapters draw from (chapter 0 introduces them).

A :class:`WorldDataset` has the interface of every dataset in the book
(:class:`clipnotes.data.ImageDataset`): ``labels``, ``classnames``, ``cache_key``,
``images(idx)`` and ``batches(batch_size)``; it also knows each item's ``factors``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .captions import captions
from .factors import (CLASSNAMES, DOMAINS, FACTOR_VALUES, WORLD_VERSION, _F, COLOURS, Cycle, Factors, _key,
                      sample_factors, uniform)
from .render import render


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
    def zero_shot_test(self, n_per_domain: int = 1000, stream: str = "test",
                       domains: Sequence[str] = DOMAINS) -> "WorldDataset":
        """Held-out images balanced over ``domains`` (default: all) and classes (never seen in pretraining)."""
        return self.dataset(stream, n_per_domain * len(domains), domain=Cycle(tuple(domains)),
                            shape=Cycle(range(len(CLASSNAMES)), every=len(domains)))

    def finetune_sets(self, n_train: int = 20000, n_eval: int = 2000, spurious: float = 0.9,
                      domain: str = "photo") -> tuple["WorldDataset", dict[str, "WorldDataset"]]:
        """Training photos where colour predicts class with probability ``spurious``, and the
        evaluation sets ``{"ID": …, "<domain> (colour shift)": …, <other domain>: …}``.

        ID test: same domain, same correlation. OOD tests: the same domain with the correlation
        broken (random colours), and every other domain (random colours).
        """
        train = self.dataset("finetune-train", n_train, spurious=spurious, domain=domain)
        evals = {"ID": self.dataset("finetune-test", n_eval, spurious=spurious, domain=domain),
                 f"{domain} (colour shift)": self.dataset("finetune-ood", n_eval, domain=domain)}
        for d in DOMAINS:
            if d != domain:
                evals[d] = self.dataset("finetune-ood", n_eval, domain=d)
        return train, evals

    def few_shot(self, shots: int, domain: str | None = None, classes: Sequence[int] | None = None,
                 draw: int = 0) -> "WorldDataset":
        """``shots`` labelled images per class (draw ``draw`` of many), optionally in one domain."""
        classes = list(range(len(CLASSNAMES))) if classes is None else list(classes)
        return self.dataset(f"fewshot-{draw}", shots * len(classes), domain=domain, shape=Cycle(classes))

    def domain_split(self, domain: str, n: int, stream: str = "domain-test") -> "WorldDataset":
        """``n`` images of one domain, classes balanced."""
        return self.dataset(stream, n, domain=domain, shape=Cycle(range(len(CLASSNAMES))))


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

    def __init__(self, world: World, split: Split, label: str = "shape"):
        if label not in FACTOR_VALUES:
            raise ValueError(f"unknown label factor {label!r}; use one of {tuple(FACTOR_VALUES)}")
        self.world, self.split, self.label = world, split, label
        self.factors = world.factors(split)
        self.classnames = list(FACTOR_VALUES[label])

    def relabelled(self, factor: str) -> "WorldDataset":
        """The same images labelled by another factor, e.g. ``"size"`` (chapter 13's patching task)."""
        return WorldDataset(self.world, self.split, factor)

    def __len__(self) -> int:
        return self.split.n

    @property
    def labels(self) -> np.ndarray:
        return getattr(self.factors, self.label)

    @property
    def cache_key(self) -> str:
        by = "" if self.label == "shape" else f"-by-{self.label}"
        return f"world-v{WORLD_VERSION}-s{self.world.seed}-{self.split}{by}"

    def __getitem__(self, i: int):
        return render(self.factors.subset(slice(i, i + 1)))[0], int(self.labels[i])

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
            yield render(self.factors.subset(sl)), torch.from_numpy(self.labels[sl])
