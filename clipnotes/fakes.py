"""Small fake copies of the `paper` datasets in their real on-disk formats (what the tests load)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import COOP_DATASETS, PACS_DOMAINS

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


#: What the paper check's fake copies hold (small: every chapter's `paper` path in minutes on a CPU).
PAPER_CHECK_SIZES = dict(cifar_train=40, cifar_test=10, shifts=8, coop_classes=6, coop_per_split=4,
                         pacs_per_class=3)


def write_paper_check_data(root: str | Path, seed: int = 0) -> Path:
    """Every dataset the `paper` profile reads, as small fake copies in the real formats, under
    ``root`` (the paper check's data directory; written once per size table and seed, then marked
    complete — a copy written at other sizes is written again)."""
    root = Path(root)
    done = root / ".complete"
    stamp = json.dumps({"sizes": PAPER_CHECK_SIZES, "seed": seed}, sort_keys=True)
    if done.exists() and done.read_text() == stamp:
        return root
    n = PAPER_CHECK_SIZES
    for name in ("cifar10", "cifar100"):
        write_fake_cifar(root, name, n_train=n["cifar_train"], n_test=n["cifar_test"], seed=seed)
    write_fake_cifar10_shifts(root, n=n["shifts"], seed=seed)
    for name in COOP_DATASETS:
        write_fake_coop(root, name, n_classes=n["coop_classes"], per_split=n["coop_per_split"], seed=seed)
    write_fake_pacs(root, ("dog", "elephant", "giraffe", "guitar"), per_class=n["pacs_per_class"], seed=seed)
    done.write_text(stamp)
    return root
