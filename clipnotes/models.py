"""Creating and loading CLIP models for both profiles, all through open_clip.

* ``mini``: ``clipnotes-mini``, a real ``open_clip.CLIP`` from a small config registered
  with open_clip (``assets/model_configs``), a word-level tokenizer, and the checkpoint
  shipped in the package (sha256-checked, loaded with ``weights_only=True``).
* ``paper``: ``ViT-B-32-quickgelu`` / ``ViT-B-16-quickgelu`` with OpenAI weights through
  ``open_clip.create_model_and_transforms``; ``pretrained=None`` gives random weights
  (what the tests use).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .profiles import Profile
from .tokenizer import WordTokenizer
from .utils import ClipnotesError, load_torch, sha256_file

ASSETS = Path(__file__).parent / "assets"
MINI_MODEL = "clipnotes-mini"
MINI_CHECKPOINT = ASSETS / "mini_clip.pt"
MINI_CARD = ASSETS / "mini_clip.json"      # sha256, training config and log of the shipped checkpoint
#: The second shipped tiny CLIP, pretrained with crops (``pretrain-mini --crops``), for chapter 12.
CROPS_CHECKPOINT = ASSETS / "mini_clip_crops.pt"
CROPS_CARD = ASSETS / "mini_clip_crops.json"
SHIPPED_MINIS = ("shipped", "crops")
PAPER_MODELS = ("ViT-B-32-quickgelu", "ViT-B-16-quickgelu")

open_clip.add_model_config(ASSETS / "model_configs")


def mini_vocabulary() -> list[str]:
    """The tiny CLIP's word list (``assets/mini_vocab.txt``)."""
    return (ASSETS / "mini_vocab.txt").read_text().split("\n")[:-1]


def mini_tokenizer() -> WordTokenizer:
    cfg = open_clip.get_model_config(MINI_MODEL)
    return WordTokenizer(mini_vocabulary(), context_length=cfg["text_cfg"]["context_length"])


class DevicePreprocess(nn.Module):
    """uint8 (or [0, 1] float) images -> normalised float, resized to the model's size.

    Runs wherever the images are, so on a GPU the upscaling (e.g. CIFAR 32 px -> 224 px)
    and normalisation cost nothing on the CPU data loader.
    """

    def __init__(self, image_size: int, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD):
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                              align_corners=False, antialias=True).clamp(0, 1)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}"


@dataclass
class ClipBundle:
    """A CLIP model with what it needs: its tokenizer and its on-device preprocessing."""

    model: open_clip.CLIP
    tokenizer: Callable[..., torch.Tensor]
    preprocess: DevicePreprocess
    name: str
    pretrained: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.preprocess(images.to(self.device, non_blocking=True))
        return self.model.encode_image(x, normalize=normalize)

    def encode_texts(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=normalize)

    @property
    def key(self) -> str:
        """Identifies the weights (for caches)."""
        return f"{self.name}:{self.pretrained}"


@contextlib.contextmanager
def _quiet_open_clip():
    """Silence open_clip's 'no pretrained weights loaded' warning for deliberate random inits."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# ----------------------------------------------------------------------------- mini
def shipped_files(name: str) -> tuple[Path, Path, str]:
    """Weights, card and the command that remakes them, for a shipped tiny CLIP."""
    if name == "shipped":
        return MINI_CHECKPOINT, MINI_CARD, "python -m clipnotes pretrain-mini"
    if name == "crops":
        return CROPS_CHECKPOINT, CROPS_CARD, "python -m clipnotes pretrain-mini --crops"
    raise ClipnotesError(f"no shipped tiny CLIP is called {name!r}; choose one of {', '.join(SHIPPED_MINIS)}")


def mini_card(name: str = "shipped") -> dict[str, Any]:
    """A shipped checkpoint's card (``"shipped"``, or chapter 12's ``"crops"``): sha256, training config, log."""
    _, card, remake = shipped_files(name)
    if not card.exists():
        raise ClipnotesError(f"the checkpoint card {card} is missing; reinstall clipnotes or run `{remake}`")
    return json.loads(card.read_text())


def verify_shipped_checkpoint(name: str = "shipped") -> str:
    """Check a shipped checkpoint against its card's sha256; return the hash."""
    weights, _, remake = shipped_files(name)
    if not weights.exists():
        raise ClipnotesError(f"the shipped checkpoint {weights} is missing; reinstall clipnotes or run `{remake}`")
    expected, actual = mini_card(name)["sha256"], sha256_file(weights)
    if actual != expected:
        raise ClipnotesError(f"the shipped checkpoint {weights} fails its sha256 check (corrupt or "
                             f"modified); reinstall clipnotes or run `{remake}`")
    return actual


def load_state_dict_checked(model: nn.Module, state: Any, source: str) -> None:
    """Load ``state`` into ``model`` or raise a one-line error naming what does not fit."""
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipnotesError(f"{source} is not a model state dict (foreign file)")
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or bad:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"shape mismatch at {bad[:3]}")
        raise ClipnotesError(f"{source} does not fit {type(model).__name__} ({detail}); "
                             "is it a checkpoint of another model?")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def create_mini(checkpoint: str | os.PathLike | None = "shipped", device: str | torch.device = "cpu",
                seed: int = 0) -> ClipBundle:
    """The tiny CLIP: ``"shipped"`` weights, chapter 12's ``"crops"`` (pretrained with crops), a
    checkpoint file, or ``None`` for a fresh random init drawn from ``seed``. The global random
    stream is left where the chapter's seed put it."""
    with _quiet_open_clip(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(MINI_MODEL, pretrained=None)
    if checkpoint in SHIPPED_MINIS:
        weights, sha = shipped_files(checkpoint)[0], verify_shipped_checkpoint(checkpoint)
        load_state_dict_checked(model, load_torch(weights, "shipped checkpoint"), str(weights))
        tag = f"{checkpoint}-{sha[:12]}"
    elif checkpoint is not None:
        load_state_dict_checked(model, load_torch(checkpoint, "checkpoint"), str(checkpoint))
        tag = f"file-{sha256_file(checkpoint)[:12]}"
    else:
        tag = f"random-{seed}"
    model.eval().to(device)
    size = open_clip.get_model_config(MINI_MODEL)["vision_cfg"]["image_size"]
    return ClipBundle(model, mini_tokenizer(), DevicePreprocess(size).to(device), MINI_MODEL, tag)


# ----------------------------------------------------------------------------- paper
def paper_weights(model_name: str, tag: str, cache_dir: Path, download: bool) -> str:
    """Path of open_clip's pretrained weights, downloading them only if allowed."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise ClipnotesError(f"open_clip has no weights {tag!r} for {model_name}; "
                             f"see open_clip.list_pretrained()")
    hub = cfg.get("hf_hub", "")
    model_id, filename = os.path.split(hub)
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(model_id, filename or "open_clip_pytorch_model.bin",
                               cache_dir=str(cache_dir / "weights"), local_files_only=not download)
    except Exception:  # noqa: BLE001 - offline, missing, or no permission
        if download:
            raise ClipnotesError(f"could not download {model_name}/{tag} weights from the Hugging Face hub; "
                                 "check the internet connection") from None
        raise ClipnotesError(f"the {model_name}/{tag} weights are not in {cache_dir / 'weights'}; allow the "
                             "download with CLIPNOTES_DOWNLOAD=1 (or get_profile('paper', download=True))") from None


def create_paper(model_name: str, pretrained: str | None = "openai", device: str | torch.device = "cpu",
                 cache_dir: Path | None = None, download: bool = False, seed: int | None = None) -> ClipBundle:
    """A real open_clip architecture; ``pretrained=None`` gives random weights (tests, the paper
    check), drawn from ``seed`` without touching the global random stream when one is given."""
    if model_name not in open_clip.list_models():
        raise ClipnotesError(f"unknown open_clip model {model_name!r}; e.g. {', '.join(PAPER_MODELS)}")
    path = None
    if pretrained is not None:
        path = paper_weights(model_name, pretrained, Path(cache_dir or "."), download)
    try:
        with _quiet_open_clip(), torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = open_clip.create_model(model_name, pretrained=path, device=device)
    except Exception as e:  # noqa: BLE001 - torch and pickle raise many kinds for a bad file
        if path is None:
            raise
        raise ClipnotesError(f"the {model_name}/{pretrained} weights at {path} are corrupt or not this model's "
                             f"({type(e).__name__}); delete the file and download it again") from None
    model.eval()
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    prep = DevicePreprocess(size, pp["mean"], pp["std"]).to(device)
    tag = pretrained or ("random" if seed is None else f"random-{seed}")
    return ClipBundle(model, open_clip.get_tokenizer(model_name), prep, model_name, tag)


def load_model(profile: Profile, frozen: bool = False, mini: str = "shipped") -> ClipBundle:
    """The profile's model (``frozen=True``: the backbone of frozen-encoder chapters). ``mini`` picks
    the shipped tiny CLIP in ``mini`` (chapter 12's ``"crops"``); ``paper`` has one CLIP, trained on
    web images that already show objects at every scale, and ignores it."""
    shipped_files(mini)                        # an unknown name fails here, in either profile
    if profile.name == "mini":
        return create_mini(mini, profile.device)
    name = profile.frozen_model if frozen else profile.model
    if profile.random_weights:                 # the paper check: the architecture, seeded, no weights
        return create_paper(name, None, profile.device, seed=profile.seed)
    return create_paper(name, profile.pretrained, profile.device, profile.cache_dir, profile.download)


# ----------------------------------------------------------------------------- text tower
def _pool_takes_eos() -> bool:
    import inspect

    from open_clip.transformer import text_global_pool
    return "eos_token_id" in inspect.signature(text_global_pool).parameters


_POOL_TAKES_EOS = _pool_takes_eos()


def encode_token_embeddings(model, embeddings: torch.Tensor, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``model.encode_text`` from token embeddings (N, L, W) instead of token ids (unit norm if ``normalize``).

    ``tokens`` (N, L) are only used to find the end-of-text position, as open_clip does. In a
    causal text tower nothing after the last end token reaches the pooled output, so those
    positions are cut off first: CLIP pads every prompt to 77 tokens, and short prompts then
    cost a fraction of that (the output is the same).
    """
    from open_clip.transformer import text_global_pool

    cast = model.transformer.get_cast_dtype()
    mask, length = model.attn_mask, embeddings.shape[1]
    if mask is not None and model.text_pool_type == "argmax":
        length = int(tokens.argmax(dim=-1).max()) + 1
        mask = mask[:length, :length]
    x = embeddings[:, :length].to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=mask)
    x = model.ln_final(x)
    eos = {"eos_token_id": getattr(model, "text_eos_id", None)} if _POOL_TAKES_EOS else {}   # open_clip ≥ 3.0
    x = text_global_pool(x, tokens[:, :length], model.text_pool_type, **eos)
    x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return F.normalize(x, dim=-1) if normalize else x
