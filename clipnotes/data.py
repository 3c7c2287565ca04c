"""`paper` datasets, kept as uint8 arrays so batches go to the GPU without PIL in the loop.

Each loader reads the dataset's real on-disk format (torchvision's where it has one) from
``root``; a missing dataset is downloaded only with permission, otherwise a one-line
error says what to do. ``write_fake_*`` helpers write small fake copies in the same
format, which is what the tests load.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .utils import ClipnotesError

#: CIFAR-100 class names as in openai/CLIP data/prompts.md (torchvision's, with spaces for "_").
def cifar_classnames(name: str, raw: Sequence[str]) -> list[str]:
    return [c.replace("_", " ") for c in raw]


class ArrayDataset(torch.utils.data.Dataset):
    """Images as a uint8 array (N, H, W, 3) with integer labels; yields CHW uint8 tensors."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classnames: Sequence[str], key: str):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ClipnotesError(f"{key}: expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images_hwc = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classnames = list(classnames)
        self.cache_key = key

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.images_hwc[i]).permute(2, 0, 1), int(self.labels[i])

    def batches(self, batch_size: int = 256):
        for s in range(0, len(self), batch_size):
            chunk = torch.from_numpy(self.images_hwc[s:s + batch_size]).permute(0, 3, 1, 2).contiguous()
            yield chunk, torch.from_numpy(self.labels[s:s + batch_size])


def _missing(what: str, root: Path) -> ClipnotesError:
    return ClipnotesError(f"{what} is not in {root}; allow the download with CLIPNOTES_DOWNLOAD=1 "
                          "(or get_profile('paper', download=True)), or copy it there")


def cifar(name: str, root: str | Path, train: bool = False, download: bool = False) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 through torchvision (its ``cifar-*-batches-py`` / ``cifar-100-python`` layout)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}.get(name.lower().replace("-", ""))
    if cls is None:
        raise ClipnotesError(f"unknown CIFAR dataset {name!r}; use 'cifar10' or 'cifar100'")
    root = Path(root)
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError:
        raise _missing(f"{cls.__name__} ({'train' if train else 'test'})", root) from None
    split = "train" if train else "test"
    return ArrayDataset(np.asarray(ds.data), ds.targets, cifar_classnames(name, ds.classes), f"{cls.__name__}-{split}")


def write_fake_cifar(root: str | Path, name: str = "cifar10", n_train: int = 20, n_test: int = 10,
                     seed: int = 0) -> Path:
    """A tiny fake CIFAR in torchvision's on-disk format (pickled batches + meta)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    rng = np.random.default_rng(seed)
    folder = Path(root) / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = 10 if cls is CIFAR10 else 100
    label_key = "labels" if cls is CIFAR10 else "fine_labels"
    files = [(f, n_train // len(cls.train_list)) for f, _ in cls.train_list] + [(f, n_test) for f, _ in cls.test_list]
    for fname, n in files:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, n_classes, n).tolist()}
        with open(folder / fname, "wb") as fh:
            pickle.dump(batch, fh)
    names = [f"class_{i}" for i in range(n_classes)]
    with open(folder / cls.meta["filename"], "wb") as fh:
        pickle.dump({cls.meta["key"]: names}, fh)
    return Path(root)


# ----------------------------------------------------------------------------- benchmarks
from dataclasses import dataclass, field  # noqa: E402


@dataclass
class Benchmark:
    """A labelled evaluation set with its class names, prompt templates and optional groups."""

    name: str
    dataset: torch.utils.data.Dataset
    classnames: list[str]
    templates: list[str]
    groups: list[str] | None = None          # e.g. the domain of every item
    pool: list[str] | None = None            # a larger template pool for ensembling (chapter 3)
    train: torch.utils.data.Dataset | None = None   # where few-shot examples come from
    curated: list[str] | None = None         # better class names, where known
    style_templates: dict[str, str] = field(default_factory=dict)   # a template per group, where one fits


def zero_shot_benchmarks(profile) -> list[Benchmark]:
    """The chapter-2/3 benchmarks of a profile: the mini world, or CIFAR-10 and CIFAR-100."""
    from . import world as W
    from .zeroshot import CIFAR_TEMPLATES, MINI_DOMAIN_TEMPLATES, MINI_TEMPLATES, PHOTO_TEMPLATE

    if profile.name == "mini":
        world = W.World(profile.seed)
        test = world.zero_shot_test(profile.n_test_per_domain)
        curated = [W.CURATED_CLASSNAMES.get(c, c) for c in W.CLASSNAMES]
        return [Benchmark("mini world", test, list(W.CLASSNAMES), [PHOTO_TEMPLATE], test.factors.named("domain"),
                          pool=list(MINI_TEMPLATES),
                          train=world.dataset("probe-train", 200 * len(W.CLASSNAMES), shape=W.Cycle(range(10))),
                          curated=curated, style_templates=dict(MINI_DOMAIN_TEMPLATES))]
    root = profile.data_dir
    out = []
    for name, label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
        test = cifar(name, root, train=False, download=profile.download)
        train = cifar(name, root, train=True, download=profile.download)
        out.append(Benchmark(label, test, test.classnames, list(CIFAR_TEMPLATES), pool=list(CIFAR_TEMPLATES),
                             train=train))
    return out


def few_shot_indices(labels: Sequence[int], shots: int, seed: int = 0) -> np.ndarray:
    """``shots`` random indices per class (all of a class if it has fewer), sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))
