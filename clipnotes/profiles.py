"""The two profiles: ``mini`` (CPU, offline, minutes) and ``paper`` (one GPU, real weights).

Chapters never branch on the profile: they read its settings. Choose one with an
argument or ``CLIPNOTES_PROFILE``; ``CLIPNOTES_SEED`` fixes every number of a run,
``CLIPNOTES_CACHE`` is where features and checkpoints are cached,
``CLIPNOTES_DATA`` where `paper` datasets live, and ``CLIPNOTES_DOWNLOAD=1`` allows
downloads (never in ``mini``).

``CLIPNOTES_PAPER_CHECK=1`` turns ``paper`` into *the paper check*: the same chapters and
code path on the CPU, with the real open_clip architectures at random weights, small fake
datasets in the real on-disk formats (:func:`clipnotes.fakes.write_paper_check_data`) and
tiny counts, so every cell of every chapter's `paper` path executes in CI without a GPU or a
download. Its numbers mean nothing, and chapters say so instead of asserting their claims.
With ``CLIPNOTES_PRETEND_GPU=1`` as well, the model lives on :mod:`clipnotes.pretend_gpu`'s
device, where a CPU tensor meeting it fails as it would on CUDA.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .utils import ClipnotesError

PROFILES = ("mini", "paper")
#: What a chapter's settings may ask for: a profile, or ``"auto"`` (``paper`` on a CUDA GPU, else ``mini``).
CHOICES = ("auto", *PROFILES)


@dataclass(frozen=True)
class Profile:
    """Settings of one profile. Every size a chapter uses lives here."""

    name: str
    seed: int
    device: str
    precision: str                 # "fp32" or "bf16"/"fp16" autocast on CUDA
    model: str                     # open_clip model name
    pretrained: str                # "shipped" (mini) or an open_clip tag
    frozen_model: str              # backbone for frozen-encoder chapters (CoOp, CLAP)
    cache_dir: Path
    data_dir: Path
    download: bool
    eval_batch_size: int
    train_batch_size: int
    n_test_per_domain: int         # mini: held-out images per domain
    paper_check: bool = False      # paper at random weights on fake data, tiny counts, CPU (CI)

    @property
    def random_weights(self) -> bool:
        """Whether the weights are random (the paper check): claims cannot hold, so they are not checked."""
        return self.paper_check

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """A context manager: bf16/fp16 autocast on CUDA, nothing on CPU."""
        enabled = self.device.startswith("cuda") and self.autocast_dtype is not None
        return torch.autocast("cuda", dtype=self.autocast_dtype, enabled=enabled) if enabled \
            else torch.autocast("cpu", enabled=False)

    @property
    def fp16_scaler(self) -> bool:
        """Whether training needs a gradient scaler (fp16 autocast on CUDA; bf16 does not)."""
        return self.device.startswith("cuda") and self.precision == "fp16"

    @property
    def world_cache_dir(self) -> Path:
        """Where runs that depend on the mini world alone are kept (chapter 1's pretraining runs):
        one place for every profile, so the paper check reuses what the `mini` run trained (it
        keeps its own features, runs and fake data apart, in ``cache_dir``)."""
        return self.cache_dir.parent if self.paper_check else self.cache_dir

    def with_seed(self, seed: int) -> "Profile":
        return replace(self, seed=int(seed))


def native_bf16() -> bool:
    """Whether the GPU computes in bfloat16 natively (Ampere and later). ``is_bf16_supported()``
    also answers True on a T4 (Colab's free GPU), where bf16 is emulated and slow: fp16 there."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clipnotes"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ClipnotesError(f"{name}={raw!r} is not an integer; set it to e.g. 0") from None


def resolve_profile_name(name: str | None = None) -> str:
    """The profile a chapter runs: ``name``, else ``CLIPNOTES_PROFILE``, else ``mini``.

    ``"auto"`` (the Colab form's default) defers to ``CLIPNOTES_PROFILE`` where it is set, and
    otherwise picks ``paper`` on a machine with a CUDA GPU and ``mini`` elsewhere.
    """
    raw = (name or "").strip().lower()
    if raw in ("", "auto"):
        raw = (os.environ.get("CLIPNOTES_PROFILE") or raw or "mini").strip().lower()
    if raw == "auto":
        raw = "paper" if torch.cuda.is_available() else "mini"
    if raw not in PROFILES:
        raise ClipnotesError(f"unknown profile {raw!r}; choose one of {', '.join(CHOICES)} "
                             "(argument or CLIPNOTES_PROFILE)")
    return raw


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes")


def get_profile(name: str | None = None, *, seed: int | None = None, download: bool | None = None,
                check: bool = True) -> Profile:
    """The settings of profile ``name`` (see :func:`resolve_profile_name`; default ``mini``).

    ``check=False`` skips the hardware check (tests build `paper` settings on CPU).
    """
    name = resolve_profile_name(name)
    seed = _env_int("CLIPNOTES_SEED", 0) if seed is None else int(seed)
    cache = Path(os.environ.get("CLIPNOTES_CACHE") or default_cache_dir()).expanduser()
    data = Path(os.environ.get("CLIPNOTES_DATA") or cache / "data").expanduser()
    if download is None:
        download = os.environ.get("CLIPNOTES_DOWNLOAD", "0").lower() in ("1", "true", "yes")
    if name == "mini":
        return Profile("mini", seed, "cpu", "fp32", "clipnotes-mini", "shipped", "clipnotes-mini",
                       cache, data, False, eval_batch_size=512, train_batch_size=128,
                       n_test_per_domain=1000)
    if _flag("CLIPNOTES_PAPER_CHECK"):
        root = cache / "paper-check"           # never mixed with a real paper run's features or data
        device = "meta" if _flag("CLIPNOTES_PRETEND_GPU") else "cpu"    # meta: clipnotes.pretend_gpu's device
        return Profile("paper", seed, device, "fp32", "ViT-B-32-quickgelu", "random", "ViT-B-16-quickgelu",
                       root, root / "data", False, eval_batch_size=16, train_batch_size=4,
                       n_test_per_domain=0, paper_check=True)
    if check and not torch.cuda.is_available():
        raise ClipnotesError("profile 'paper' needs a CUDA GPU and none was found; use profile 'mini' "
                             "or open the chapter in Colab with a GPU runtime")
    precision = "bf16" if (not check or native_bf16()) else "fp16"
    return Profile("paper", seed, "cuda", precision, "ViT-B-32-quickgelu", "openai", "ViT-B-16-quickgelu",
                   cache, data, download, eval_batch_size=512, train_batch_size=256,
                   n_test_per_domain=0)
