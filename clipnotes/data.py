"""`paper` datasets, kept as uint8 arrays so batches go to the GPU without PIL in the loop.

Each loader reads the dataset's real on-disk format (torchvision's where it has one) from
``root``; a missing dataset is downloaded only with permission, otherwise a one-line
error says what to do. ``write_fake_*`` helpers write small fake copies in the same
format, which is what the tests load.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
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

    def images(self, idx) -> torch.Tensor:
        """The images at ``idx`` (an index array or a slice) as one (N, 3, H, W) uint8 tensor."""
        return torch.from_numpy(self.images_hwc[idx]).permute(0, 3, 1, 2).contiguous()

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


CIFAR10_CLASSNAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: The CIFAR-10 reproductions: (folder, files) as distributed by their authors and used by WiSE-FT.
CIFAR10_SHIFTS = {
    "cifar10.1": ("CIFAR-10.1", ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")),
    "cifar10.2": ("CIFAR-10.2", ("cifar102_test.npy",)),
}


def cifar10_shift(name: str, root: str | Path) -> ArrayDataset:
    """CIFAR-10.1 (v6: two ``.npy`` arrays) or CIFAR-10.2 (test: one ``.npy`` holding a dict).

    These files are not in torchvision and are never downloaded: copy them into
    ``root/CIFAR-10.1`` or ``root/CIFAR-10.2`` from the authors' GitHub repositories.
    """
    key = name.lower().replace("-", "").replace("_", "")
    key = {"cifar10.1": "cifar10.1", "cifar101": "cifar10.1", "cifar10.2": "cifar10.2", "cifar102": "cifar10.2"}.get(key)
    if key is None:
        raise ClipnotesError(f"unknown CIFAR-10 shift {name!r}; use 'cifar10.1' or 'cifar10.2'")
    folder, files = CIFAR10_SHIFTS[key]
    paths = [Path(root) / folder / f for f in files]
    if not all(p.exists() for p in paths):
        raise ClipnotesError(f"{folder} is not in {Path(root)}; copy {', '.join(files)} into {Path(root) / folder} "
                             "(github.com/modestyachts/CIFAR-10.1 and github.com/modestyachts/cifar-10.2)")
    try:
        if key == "cifar10.1":
            images, labels = np.load(paths[0]), np.load(paths[1])
        else:   # a pickled dict inside an .npy file: allow_pickle only for this known file
            d = np.load(paths[0], allow_pickle=True).item()
            images, labels = d["images"], d["labels"]
    except (ValueError, KeyError, OSError, AttributeError) as e:
        raise ClipnotesError(f"{folder} in {Path(root)} is not in the expected format ({e}); download it again") from None
    return ArrayDataset(np.asarray(images, dtype=np.uint8), labels, CIFAR10_CLASSNAMES, folder)


def write_fake_cifar10_shifts(root: str | Path, n: int = 12, seed: int = 0) -> Path:
    """Tiny fake CIFAR-10.1 and CIFAR-10.2 test files in their real on-disk formats."""
    rng = np.random.default_rng(seed)
    images = lambda: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = lambda: rng.integers(0, 10, n).astype(np.int64)
    d1 = Path(root) / "CIFAR-10.1"
    d1.mkdir(parents=True, exist_ok=True)
    np.save(d1 / "cifar10.1_v6_data.npy", images())
    np.save(d1 / "cifar10.1_v6_labels.npy", labels())
    d2 = Path(root) / "CIFAR-10.2"
    d2.mkdir(parents=True, exist_ok=True)
    np.save(d2 / "cifar102_test.npy", np.array({"images": images(), "labels": labels()}, dtype=object),
            allow_pickle=True)
    return Path(root)


# ----------------------------------------------------------------------------- benchmarks


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


@dataclass
class FinetuneBenchmark:
    """A fine-tuning task: training data, an ID test set and OOD test sets (chapters 5-7)."""

    name: str
    train: torch.utils.data.Dataset
    eval_sets: dict[str, torch.utils.data.Dataset]     # "ID" first, then every OOD set
    classnames: list[str]
    templates: list[str]

    @property
    def ood_names(self) -> list[str]:
        return [k for k in self.eval_sets if k != "ID"]


def finetune_benchmark(profile, n_train: int = 4000, n_eval: int = 1000) -> FinetuneBenchmark:
    """mini: photos where colour predicts class (90 %) → the colour shift and four other styles.
    paper: CIFAR-10 → CIFAR-10.1 and CIFAR-10.2 (``n_train``/``n_eval`` apply to mini only)."""
    from . import world as W
    from .zeroshot import CIFAR_TEMPLATES, MINI_TEMPLATES

    if profile.name == "mini":
        task = W.World(profile.seed).finetune_task(n_train=n_train, n_eval=n_eval)
        return FinetuneBenchmark(f"mini world: {task.domain}s, colour-class correlation {task.spurious:.0%}",
                                 task.train, task.eval_sets(), list(W.CLASSNAMES), list(MINI_TEMPLATES))
    root = profile.data_dir
    train = cifar("cifar10", root, train=True, download=profile.download)
    evals = {"ID": cifar("cifar10", root, train=False, download=profile.download),
             "CIFAR-10.1": cifar10_shift("cifar10.1", root), "CIFAR-10.2": cifar10_shift("cifar10.2", root)}
    return FinetuneBenchmark("CIFAR-10 → CIFAR-10.1, CIFAR-10.2", train, evals, CIFAR10_CLASSNAMES, list(CIFAR_TEMPLATES))
