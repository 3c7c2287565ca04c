"""`paper` datasets, and the one interface every dataset of the book has.

Loaders read each dataset's real on-disk format (torchvision's where it has one) from
``root`` and keep images as uint8, so batches go to the GPU without PIL in the loop; a
missing dataset is downloaded only with permission, otherwise a one-line error says what
to do. :mod:`clipnotes.fakes` writes small fake copies in the same formats for the tests.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .utils import ClipnotesError, stable_hash


@runtime_checkable
class ImageDataset(Protocol):
    """What every dataset in the book offers: the mini world's, the `paper` loaders', subsets.

    ``images(idx)`` and ``batches(n)`` give uint8 (N, 3, H, W) tensors; ``cache_key`` names
    the exact items, so features computed from them can be cached.
    """

    labels: np.ndarray
    classnames: list[str]

    @property
    def cache_key(self) -> str: ...

    def __len__(self) -> int: ...

    def images(self, idx: np.ndarray | slice) -> torch.Tensor: ...

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


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

    def subset(self, idx: np.ndarray, key: str) -> "ArrayDataset":
        """The items at ``idx``, named ``key`` (a held-out split of a training set)."""
        return ArrayDataset(self.images_hwc[idx], self.labels[idx], self.classnames, key)

    def batches(self, batch_size: int = 256):
        for s in range(0, len(self), batch_size):
            chunk = torch.from_numpy(self.images_hwc[s:s + batch_size]).permute(0, 3, 1, 2).contiguous()
            yield chunk, torch.from_numpy(self.labels[s:s + batch_size])


def _missing(what: str, root: Path) -> ClipnotesError:
    return ClipnotesError(f"{what} is not in {root}; allow the download with CLIPNOTES_DOWNLOAD=1 "
                          "(or get_profile('paper', download=True)), or copy it there")


def cifar(name: str, root: str | Path, train: bool = False, download: bool = False,
          verify: bool = True) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 through torchvision (its ``cifar-*-batches-py`` / ``cifar-100-python`` layout).

    ``verify=False`` skips torchvision's md5 check of the files (the paper check's fake copies
    are in the real format, with other bytes); a real copy is always verified.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}.get(name.lower().replace("-", ""))
    if cls is None:
        raise ClipnotesError(f"unknown CIFAR dataset {name!r}; use 'cifar10' or 'cifar100'")
    if not verify:                                   # torchvision checks existence only where md5 is None
        cls = type(cls.__name__, (cls,), {"train_list": [[f, None] for f, _ in cls.train_list],
                                          "test_list": [[f, None] for f, _ in cls.test_list],
                                          "meta": {**cls.meta, "md5": None}})
    root = Path(root)
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError:
        raise _missing(f"{cls.__name__} ({'train' if train else 'test'})", root) from None
    split = "train" if train else "test"
    return ArrayDataset(np.asarray(ds.data), ds.targets, cifar_classnames(name, ds.classes), f"{cls.__name__}-{split}")


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
        self.num_workers = 0

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

    def images(self, idx: np.ndarray | slice) -> torch.Tensor:
        """The images at ``idx`` (an index array or a slice) as one (N, 3, size, size) uint8 tensor."""
        return torch.stack([self[int(i)][0] for i in np.arange(len(self))[idx]])

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(uint8 images, labels)`` in order, decoded by ``num_workers`` loader processes."""
        loader = torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
                                             pin_memory=torch.cuda.is_available())
        for images, labels in loader:
            yield images, torch.as_tensor(labels)

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


def take_files(ds: ImageFileDataset, idx: np.ndarray, key: str) -> ImageFileDataset:
    """Items ``idx`` of an image-file dataset, under a new cache key."""
    return ImageFileDataset([ds.paths[i] for i in idx], ds.labels[idx], ds.classnames, key, ds.size)


def concat_files(parts: Sequence[ImageFileDataset], key: str) -> ImageFileDataset:
    """Several image-file datasets with the same classes as one, under a new cache key."""
    return ImageFileDataset([p for d in parts for p in d.paths], np.concatenate([d.labels for d in parts]),
                            parts[0].classnames, key, parts[0].size)
