"""Encode a dataset once with a frozen image encoder and cache the features on disk.

The cache key names the weights, the dataset (its exact items) and the preprocessing,
so a second call with the same three is a cache hit, and anything else is a miss.
Files are written atomically: an interrupted run never leaves a half-written cache.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .data import ImageDataset
from .models import ClipBundle
from .utils import ClipnotesError, code_fingerprint, load_torch, no_autocast, progress, save_torch, stable_hash

FEATURES_VERSION = "1"


@dataclass
class FeatureSet:
    """Image features (N, D), L2-normalised unless asked otherwise, with their labels (N,)."""

    features: torch.Tensor
    labels: torch.Tensor
    key: str

    def __len__(self) -> int:
        return len(self.labels)


def writable_dir(folder: Path) -> Path:
    """``folder``, created if needed; a one-line error if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ClipnotesError(f"cannot write the cache folder {folder} ({e.strerror}); set CLIPNOTES_CACHE to a "
                             "writable folder") from None
    return folder


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / "features" / f"{stable_hash(key)}.pt"


_MEMORY: dict[str, FeatureSet] = {}


@torch.no_grad()
def encode_dataset(bundle: ClipBundle, dataset: ImageDataset, cache_dir: str | os.PathLike | None = None,
                   batch_size: int = 512, autocast: Callable | None = None, desc: str | None = None,
                   normalize: bool = True) -> FeatureSet:
    """Features of every image of ``dataset`` under ``bundle``'s image encoder (cached).

    ``autocast`` is a context-manager factory (e.g. ``profile.autocast``): bf16 on a GPU.
    ``normalize=False`` keeps the encoder's raw output (CLAP's network reads it).
    """
    if not isinstance(dataset, ImageDataset):
        raise ClipnotesError(f"{type(dataset).__name__} is not a clipnotes dataset (labels, classnames, cache_key, "
                             "images, batches); wrap it in clipnotes.data.ArrayDataset to cache its features")
    key = f"features-v{FEATURES_VERSION}|{code_fingerprint()}|{bundle.key}|{bundle.preprocess}|{dataset.cache_key}"
    if not normalize:
        key += "|raw"
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None:
        writable_dir(path.parent)            # before encoding a whole dataset, not after
    if path is not None and path.exists():
        try:
            blob = load_torch(path, "feature cache")
            if blob.get("key") == key:
                _MEMORY[key] = FeatureSet(blob["features"].float(), blob["labels"], key)
                return _MEMORY[key]
        except ClipnotesError:
            pass  # a corrupt cache entry is recomputed and overwritten
    was_training = bundle.model.training
    bundle.model.eval()
    feats, labels = [], []
    bar = progress(total=len(dataset), desc=desc or "encoding images", unit="img", leave=False)
    for images, y in dataset.batches(batch_size):
        with (autocast or no_autocast)():
            f = bundle.encode_images(images, normalize=normalize)
        feats.append(f.float().cpu())
        labels.append(y.cpu())
        bar.update(len(y))
    bar.close()
    bundle.model.train(was_training)
    out = FeatureSet(torch.cat(feats), torch.cat(labels).long(), key)
    if path is not None:
        save_torch({"key": key, "features": out.features, "labels": out.labels}, path)
    _MEMORY[key] = out
    return out


def clear_memory() -> None:
    """Forget features held in memory (the disk cache stays)."""
    _MEMORY.clear()
