"""`paper` datasets, kept as uint8 arrays so batches go to the GPU without PIL in the loop.

Each loader reads the dataset's real on-disk format (torchvision's where it has one) from
``root``; a missing dataset is downloaded only with permission, otherwise a one-line
error says what to do. ``write_fake_*`` helpers write small fake copies in the same
format, which is what the tests load.
"""
from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .utils import ClipnotesError, stable_hash

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


# ----------------------------------------------------------------------------- image folders
class ImageFileDataset(torch.utils.data.Dataset):
    """Image files with integer labels; each image is resized (shorter side) and centre-cropped
    to ``size`` on the CPU, so that batches stack, and yielded as a CHW uint8 tensor."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], classnames: Sequence[str], key: str,
                 size: int = 224):
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classnames = list(classnames)
        self.key, self.size = key, int(size)
        self.cache_key = f"{key}-{size}px"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.paths[i]) as im:
                im = im.convert("RGB")
        except (OSError, UnidentifiedImageError):
            raise ClipnotesError(f"cannot read image {self.paths[i]}; the dataset copy looks incomplete or "
                                 "corrupt — extract it again") from None
        w, h = im.size
        scale = self.size / min(w, h)
        im = im.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BICUBIC)
        left, top = (im.size[0] - self.size) // 2, (im.size[1] - self.size) // 2
        im = im.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1), int(self.labels[i])

    def subset(self, keep: Sequence[int]) -> "ImageFileDataset":
        """The items whose label is in ``keep``, relabelled 0…len(keep)−1 in that order."""
        remap = {int(c): j for j, c in enumerate(keep)}
        idx = [i for i, y in enumerate(self.labels) if int(y) in remap]
        return ImageFileDataset([self.paths[i] for i in idx], [remap[int(self.labels[i])] for i in idx],
                                [self.classnames[int(c)] for c in keep],
                                f"{self.key}-classes{stable_hash(list(map(int, keep)), n=8)}", self.size)


#: CoOp's few-shot datasets that torchvision also provides: folder under ``CLIPNOTES_DATA``,
#: image folder inside it, and CoOp's split file (layout of CoOp's DATASETS.md).
COOP_DATASETS: dict[str, tuple[str, str, str]] = {
    "OxfordPets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "Flowers102": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "DTD": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "EuroSAT": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "Caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
}


def coop_dataset(name: str, root: str | Path, split: str = "train", size: int = 224) -> ImageFileDataset:
    """One split (train / val / test) of a CoOp dataset from its ``split_zhou_*.json`` file.

    The file lists ``[relative image path, label, class name]`` per item; the class names are
    CoOp's (e.g. EuroSAT's "Annual Crop Land"). Neither images nor split files are downloaded.
    """
    if name not in COOP_DATASETS:
        raise ClipnotesError(f"unknown CoOp dataset {name!r}; use one of {', '.join(COOP_DATASETS)}")
    if split not in ("train", "val", "test"):
        raise ClipnotesError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
    folder, images, split_file = COOP_DATASETS[name]
    base = Path(root) / folder
    if not (base / split_file).exists() or not (base / images).is_dir():
        raise ClipnotesError(f"{name} is not in {base}: put its images in {base / images} and {split_file} beside "
                             "them, as CoOp's DATASETS.md describes (github.com/KaiyangZhou/CoOp)")
    try:
        items = json.loads((base / split_file).read_text())[split]
        paths, labels, names = zip(*[(base / images / p, int(y), str(c)) for p, y, c in items]) if items else ((), (), ())
    except (ValueError, KeyError, TypeError) as e:
        raise ClipnotesError(f"{base / split_file} is not a CoOp split file ({e}); download it again") from None
    by_label = dict(zip(labels, names))
    if not by_label:
        raise ClipnotesError(f"{base / split_file} has no {split} items")
    classnames = [by_label.get(i, f"class {i}") for i in range(max(by_label) + 1)]
    return ImageFileDataset(paths, labels, classnames, f"{name}-{split}", size)


#: CoOp's hand-crafted prompt for each dataset: the zero-shot baseline it compares with (``trainers/zsclip.py``).
COOP_HAND_PROMPTS: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "Flowers102": "a photo of a {}, a type of flower.",
    "DTD": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "Caltech101": "a photo of a {}.",
}


BASE_NEW_SPLITS = ("first-half", "alternate")


def base_new_classes(n_classes: int, split: str = "first-half") -> tuple[list[int], list[int]]:
    """A base-to-new split of the labels: CoCoOp's (the first ⌈n/2⌉ are base, the rest new),
    or ``"alternate"`` (even labels base, odd new) where the label order groups hard classes."""
    if split == "first-half":
        m = math.ceil(n_classes / 2)
        return list(range(m)), list(range(m, n_classes))
    if split == "alternate":
        return list(range(0, n_classes, 2)), list(range(1, n_classes, 2))
    raise ClipnotesError(f"unknown base-to-new split {split!r}; use one of {BASE_NEW_SPLITS}")


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


def pacs(root: str | Path, domain: str, size: int = 224) -> ImageFileDataset:
    """One PACS domain from its folder layout ``PACS/<domain>/<class>/<image>`` (classes sorted)."""
    if domain not in PACS_DOMAINS:
        raise ClipnotesError(f"unknown PACS domain {domain!r}; use one of {', '.join(PACS_DOMAINS)}")
    base = Path(root) / "PACS" / domain
    if not base.is_dir():
        raise ClipnotesError(f"PACS is not in {Path(root) / 'PACS'}; extract it there so that {base} holds one "
                             "folder per class (the CLAP and DomainBed layout)")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    items = [(f, y) for y, c in enumerate(classes) for f in sorted((base / c).iterdir())
             if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not items:
        raise ClipnotesError(f"{base} holds no images")
    paths, labels = zip(*items)
    return ImageFileDataset(paths, labels, classes, f"PACS-{domain}", size)


def _write_image(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_fake_coop(root: str | Path, name: str = "DTD", n_classes: int = 4, per_split: int = 2,
                    seed: int = 0) -> Path:
    """A tiny fake copy of a CoOp dataset: random JPEGs of varied sizes and a split file in CoOp's format."""
    folder, images, split_file = COOP_DATASETS[name]
    base, rng = Path(root) / folder, np.random.default_rng(seed)
    split = {}
    for part in ("train", "val", "test"):
        split[part] = []
        for y in range(n_classes):
            for k in range(per_split):
                rel = f"class_{y}/{part}_{k}.jpg"
                _write_image(base / images / rel, rng, (int(rng.integers(40, 80)), int(rng.integers(40, 80))))
                split[part].append([rel, y, f"fake class {y}"])
    (base / split_file).write_text(json.dumps(split))
    return base


def write_fake_pacs(root: str | Path, classes: Sequence[str] = ("dog", "elephant", "guitar"), per_class: int = 2,
                    seed: int = 0) -> Path:
    """A tiny fake PACS: every domain, ``per_class`` random images per class."""
    rng = np.random.default_rng(seed)
    for domain in PACS_DOMAINS:
        for c in classes:
            for k in range(per_class):
                _write_image(Path(root) / "PACS" / domain / c / f"{k}.{'png' if k % 2 else 'jpg'}", rng, (50, 40))
    return Path(root) / "PACS"


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
    val: torch.utils.data.Dataset | None = None     # a held-out split for choosing hyper-parameters


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


def few_shot_benchmark(profile, dataset: str = "EuroSAT", pool_per_class: int = 64, n_test: int = 1000) -> Benchmark:
    """Chapter 4's few-shot task: shots come from ``train``, the hand prompt is ``templates[0]``.

    mini: paintings, the style where the hand prompt is weakest; paper: a CoOp dataset
    (train → test) with CoOp's hand prompt (``pool_per_class``/``n_test`` apply to mini only).
    """
    from . import world as W
    from .zeroshot import PHOTO_TEMPLATE

    if profile.name == "mini":
        world, n = W.World(profile.seed), len(W.CLASSNAMES)
        pool = world.dataset("fewshot-pool", pool_per_class * n, domain="painting", shape=W.Cycle(range(n)))
        return Benchmark("mini world: paintings", world.domain_split("painting", n_test), list(W.CLASSNAMES),
                         [PHOTO_TEMPLATE], train=pool)
    train, test = (coop_dataset(dataset, profile.data_dir, split) for split in ("train", "test"))
    return Benchmark(dataset, test, test.classnames, [COOP_HAND_PROMPTS[dataset]], train=train)


def load_images(dataset, idx: Sequence[int]) -> torch.Tensor:
    """Items ``idx`` of an image dataset as one uint8 batch (N, 3, H, W)."""
    if hasattr(dataset, "images"):
        return dataset.images(np.asarray(idx))
    return torch.stack([dataset[int(i)][0] for i in idx])


def _take(ds: ImageFileDataset, idx: np.ndarray, key: str) -> ImageFileDataset:
    return ImageFileDataset([ds.paths[i] for i in idx], ds.labels[idx], ds.classnames, key, ds.size)


def _concat_files(parts: Sequence[ImageFileDataset], key: str) -> ImageFileDataset:
    return ImageFileDataset([p for d in parts for p in d.paths], np.concatenate([d.labels for d in parts]),
                            parts[0].classnames, key, parts[0].size)


def clap_benchmark(profile, n_val: int = 1000, shots_pool: int = 16) -> Benchmark:
    """Chapter 8's task: every domain (``groups``), a held-out *source* split (``val``: photos) for
    choosing CLAP's inference weight, and a pool of labelled images for few-shot probes (``train``).

    mini: the world's test images, photos from another stream, and ``shots_pool`` images per
    class and domain. paper: PACS; a fifth of its photos (seeded) is the source split and
    leaves the test set; the few-shot pool is the test set itself, as in CLAP's code.
    """
    from . import world as W
    from .zeroshot import PHOTO_TEMPLATE

    if profile.name == "mini":
        world, n = W.World(profile.seed), len(W.CLASSNAMES)
        test = world.zero_shot_test(profile.n_test_per_domain)
        val = world.domain_split("photo", n_val, stream="clap-val")
        pool = world.dataset("clap-fewshot", shots_pool * n * len(W.DOMAINS), domain=W.Cycle(W.DOMAINS),
                             shape=W.Cycle(range(n), every=len(W.DOMAINS)))
        return Benchmark("mini world: five styles", test, list(W.CLASSNAMES), [PHOTO_TEMPLATE],
                         test.factors.named("domain"), train=pool, val=val)
    domains = {d: pacs(profile.data_dir, d) for d in PACS_DOMAINS}
    photo = domains["photo"]
    held = np.random.default_rng(profile.seed).permutation(len(photo))[:len(photo) // 5]
    keep = np.setdiff1d(np.arange(len(photo)), held)
    val = _take(photo, held, f"PACS-photo-val-s{profile.seed}")
    domains["photo"] = _take(photo, keep, f"PACS-photo-test-s{profile.seed}")
    test = _concat_files(list(domains.values()), f"PACS-test-s{profile.seed}")
    groups = [d for d, ds in domains.items() for _ in range(len(ds))]
    return Benchmark("PACS", test, test.classnames, [PHOTO_TEMPLATE], groups, train=test, val=val)


@dataclass
class FinetuneBenchmark:
    """A fine-tuning task: training data, an ID test set and OOD test sets (chapters 5-7)."""

    name: str
    train: torch.utils.data.Dataset
    eval_sets: dict[str, torch.utils.data.Dataset]     # "ID" first, then every OOD set
    classnames: list[str]
    templates: list[str]                               # the heads' templates
    caption_templates: list[str] | None = None         # FLYP's captions, where some templates misname the training images

    @property
    def captions(self) -> list[str]:
        """The templates FLYP writes its training captions with."""
        return self.caption_templates or self.templates

    @property
    def ood_names(self) -> list[str]:
        return [k for k in self.eval_sets if k != "ID"]


def finetune_benchmark(profile, n_train: int = 4000, n_eval: int = 1000) -> FinetuneBenchmark:
    """mini: photos where colour predicts class (90 %) → the colour shift and four other styles.
    paper: CIFAR-10 → CIFAR-10.1 and CIFAR-10.2 (``n_train``/``n_eval`` apply to mini only)."""
    from . import world as W
    from .zeroshot import CIFAR_TEMPLATES, MINI_PHOTO_TEMPLATES, MINI_TEMPLATES

    if profile.name == "mini":
        task = W.World(profile.seed).finetune_task(n_train=n_train, n_eval=n_eval)
        return FinetuneBenchmark(f"mini world: {task.domain}s, colour-class correlation {task.spurious:.0%}",
                                 task.train, task.eval_sets(), list(W.CLASSNAMES), list(MINI_TEMPLATES),
                                 list(MINI_PHOTO_TEMPLATES))
    root = profile.data_dir
    train = cifar("cifar10", root, train=True, download=profile.download)
    evals = {"ID": cifar("cifar10", root, train=False, download=profile.download),
             "CIFAR-10.1": cifar10_shift("cifar10.1", root), "CIFAR-10.2": cifar10_shift("cifar10.2", root)}
    return FinetuneBenchmark("CIFAR-10 → CIFAR-10.1, CIFAR-10.2", train, evals, CIFAR10_CLASSNAMES, list(CIFAR_TEMPLATES))
