"""Small shared helpers: errors, atomic files, hashing, seeding, freezing, progress bars."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch


class ClipnotesError(RuntimeError):
    """A user-facing error whose message says what to do. The CLI prints it on one line."""


def article(word: str) -> str:
    """The indefinite article before ``word`` ("an" before a vowel letter)."""
    return "an" if word[:1] in "aeiou" else "a"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    An interrupted write leaves no file at ``path`` (and no stray temporary file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically, byte-for-byte reproducible (independent of the file name)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (indented, keys in order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_jsonable) + "\n")
    return Path(path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def load_torch(path: str | os.PathLike, what: str = "file") -> Any:
    """``torch.load(weights_only=True)`` with a one-line error for missing or corrupt files."""
    path = Path(path)
    if not path.exists():
        raise ClipnotesError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        raise ClipnotesError(f"{what} {path} is corrupt or not a torch weights file "
                             f"({type(e).__name__}); delete it and recreate it") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(*parts: Any, n: int = 16) -> str:
    """A short hex digest of the JSON form of ``parts`` (for cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a module's state (names, dtypes, shapes, bytes): equal weights, equal digest."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())      # the buffer itself: no copy of the bytes
    return h.hexdigest()


def code_fingerprint(*modules: str) -> str:
    """A digest of clipnotes source files, for cache keys (paths relative to the package).

    The default covers what turns a dataset into features: the mini world's *behaviour*
    (:func:`clipnotes.world.fingerprint`, not its source), the models, the tokenizer, the
    feature cache and the `paper` loaders. A change to any of them never reuses an old result.
    """
    from .world import fingerprint

    here = Path(__file__).parent
    names = modules or ("models.py", "features.py", "data.py", "tokenizer.py")
    h = hashlib.sha256(fingerprint().encode() if not modules else b"")
    for name in names:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def no_autocast() -> contextlib.AbstractContextManager:
    """The autocast factory of a CPU run (``profile.autocast`` on a GPU): full precision."""
    return torch.autocast("cpu", enabled=False)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Turn off gradients for ``model``'s own weights, and restore its flags afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def progress(iterable: Iterable | None = None, **kwargs):
    """A tqdm progress bar that honours ``TQDM_DISABLE`` (set in CI) and fits notebooks."""
    from tqdm.auto import tqdm

    if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        kwargs["disable"] = True             # an explicit disable=None would otherwise win over the env
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kwargs)
