"""CLAP: isolating content from style with contrastive learning on augmented prompts.

Text only, encoders frozen. Prompts from an attribute grid ("a {type} of a {size} {colour}
{class} {background}") are augmented by deleting attribute words (object size / colour,
image type, background — OSD, OCD, ITD, ASD), swapping the order ("X of Y" → "Y in X
style", SPO) and inserting Gaussian noise tokens (IGN). A small residual network on top of
the frozen text features learns, with an NT-Xent loss, to map a prompt and its augmented
view together (and the augmented view to its bare class name); since augmentations change
style but keep content, what survives is content. At test time the same network is
applied to image *and* text features, its residual scaled by α.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import ClipBundle
from .prompts import encode_token_embeddings
from .utils import ClipnotesError, progress


# ----------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class PromptGrid:
    """Attribute values that build CLAP's training prompts."""

    types: tuple[str, ...]
    sizes: tuple[str, ...]
    colours: tuple[str, ...]
    backgrounds: tuple[str, ...]

    def prompts(self, classname: str) -> list[tuple[str, str, str, str]]:
        """Every (type, size, colour, background) combination for a class."""
        return list(itertools.product(self.types, self.sizes, self.colours, self.backgrounds))


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def render_prompt(classname: str, attrs: tuple[str, str, str, str], drop: frozenset[str] = frozenset(),
                  swap: bool = False) -> str:
    """Write a grid prompt, with some attributes deleted and optionally in swapped order."""
    img_type, size, colour, bg = attrs
    words = [w for w, k in ((size, "size"), (colour, "colour")) if k not in drop and w]
    obj = " ".join(words + [classname])
    obj = f"{_article(obj)} {obj}"
    if bg and "background" not in drop:
        obj = f"{obj} {bg}"
    if "type" in drop or not img_type:
        return obj
    if swap:
        return f"{obj} in {img_type} style"
    return f"{_article(img_type)} {img_type} of {obj}"


@dataclass(frozen=True)
class Augment:
    """Probabilities of CLAP's prompt augmentations (the repo's PACS run: OSD, OCD, SPO 0.5)."""

    size: float = 0.5          # OSD
    colour: float = 0.5        # OCD
    type: float = 0.0          # ITD
    background: float = 0.0    # ASD (our "art style" is the background)
    swap: float = 0.5          # SPO
    noise_tokens: int = 4      # IGN length (0: off)
    noise_std: float = 0.02


def augment(classname: str, attrs, aug: Augment, rng: random.Random) -> str:
    drop = frozenset(k for k, p in (("size", aug.size), ("colour", aug.colour), ("type", aug.type),
                                    ("background", aug.background)) if rng.random() < p)
    return render_prompt(classname, attrs, drop, swap=rng.random() < aug.swap)


# ----------------------------------------------------------------------------- network
class ResMLP(nn.Module):
    """CLAP's disentangling network: x + α · W₂(W₁ SiLU(x) + b₁), W₂ zero-initialised, no bias."""

    def __init__(self, dim: int, latent: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(dim, latent)
        self.fc2 = nn.Linear(latent, dim, bias=False)
        nn.init.zeros_(self.fc2.weight)
        self.alpha = 1.0                               # 1 in training; the inference weight at test time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.fc2(self.fc1(F.silu(x)))


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent between two views (N, D): 2N×2N cosine scores, self-pairs masked."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = len(a)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


# ----------------------------------------------------------------------------- text encoding
def encode_with_noise(bundle: ClipBundle, texts: Sequence[str], n_noise: int, std: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode texts with ``n_noise`` Gaussian pseudo-token embeddings inserted after the start token.

    One noise draw is shared by the batch, as in CLAP's code. ``n_noise=0`` is plain encoding.
    """
    model, tok = bundle.model, bundle.tokenizer
    tokens = tok(list(texts)).to(bundle.device)
    if n_noise == 0:
        return model.encode_text(tokens, normalize=True)
    if (tokens[:, -n_noise:] != 0).any():
        raise ClipnotesError("prompts too long for noise tokens; shorten them or use fewer noise tokens")
    emb = model.token_embedding(tokens)
    width = emb.shape[-1]
    noise = (torch.randn(1, n_noise, width, generator=generator) * std).to(emb.device, emb.dtype)
    spliced = torch.cat([emb[:, :1], noise.expand(len(texts), -1, -1), emb[:, 1:-n_noise]], 1)
    shifted = torch.cat([tokens[:, :1], torch.zeros_like(tokens[:, :n_noise]), tokens[:, 1:-n_noise]], 1)
    return encode_token_embeddings(model, spliced, shifted)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class ClapConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-4
    latent: int = 128
    tau_text: float = 0.5
    tau_class: float = 1.0
    lam: float = 1.0
    seed: int = 0


def train_clap(bundle: ClipBundle, classnames: Sequence[str], grid: PromptGrid, cfg: ClapConfig = ClapConfig(),
               aug: Augment = Augment(), quiet: bool = False) -> tuple[ResMLP, list[dict[str, float]]]:
    """Train the disentangling network on text alone (CLIP frozen). Returns it and its loss log."""
    if not classnames:
        raise ClipnotesError("the class list is empty; pass at least one class name")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    dim = bundle.model.text_projection.shape[1]
    net = ResMLP(dim, cfg.latent).to(bundle.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    combos = {c: grid.prompts(c) for c in classnames}
    with torch.no_grad():
        class_feats = bundle.encode_texts(list(classnames))
    log = []
    for step in progress(range(cfg.steps), desc="CLAP", disable=quiet or None):
        cls = [rng.randrange(len(classnames)) for _ in range(cfg.batch_size)]
        attrs = [rng.choice(combos[classnames[c]]) for c in cls]
        prompts = [render_prompt(classnames[c], a) for c, a in zip(cls, attrs)]
        augmented = [augment(classnames[c], a, aug, rng) for c, a in zip(cls, attrs)]
        with torch.no_grad():
            zt = bundle.encode_texts(prompts)
            za = encode_with_noise(bundle, augmented, aug.noise_tokens, aug.noise_std, gen)
        loss = nt_xent(net(zt), net(za), cfg.tau_text) + cfg.lam * nt_xent(net(za), net(class_feats[cls]),
                                                                            cfg.tau_class)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append({"step": step + 1, "loss": loss.item()})
    net.eval()
    return net, log


def adapt(net: ResMLP, features: torch.Tensor, alpha: float) -> torch.Tensor:
    """Apply the trained network at inference weight α and renormalise."""
    net.alpha = alpha
    with torch.no_grad():
        out = F.normalize(net(features.to(next(net.parameters()).device)), dim=-1)
    net.alpha = 1.0
    return out


def prompt_robustness(acc: dict[str, float], c: str = "C", variants: Sequence[str] = ("C", "PC", "CP"),
                      noisy: str = "NC") -> dict[str, float]:
    """CLAP's metrics from zero-shot accuracies: range and std over prompt formats, and Δ(NC)."""
    vals = np.array([acc[v] for v in variants])
    return {"range": float(vals.max() - vals.min()), "std": float(vals.std()), "delta_nc": float(acc[c] - acc[noisy])}
