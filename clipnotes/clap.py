"""CLAP: isolating content from style with contrastive learning on augmented prompts.

Text only, both encoders frozen. Prompts from an attribute grid ("a {style} {type} of a
{size} {colour} {class}") are augmented by deleting attribute words (object size OSD,
object colour OCD, image type ITD, art style ASD), by swapping the order ("X of Y" →
"Y in X style", SPO) and by splicing Gaussian noise tokens into the token embeddings (IGN).
A small residual network on the frozen *raw* text features learns, with SimCLR's NT-Xent,
to map a prompt and its augmented view together and the augmented view to its bare class
name; the augmentations change style and keep content, so what survives is content. At
test time the same network is applied to image *and* text features, its residual scaled
by the inference weight α.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import accuracy_by_group, fit_linear_probe
from .models import ClipBundle, encode_token_embeddings
from .profiles import Profile
from .tasks import few_shot_indices
from .utils import ClipnotesError, article, no_autocast, progress
from .world import WorldDataset
from .zeroshot import check_classnames


# ----------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class PromptGrid:
    """Attribute values that build CLAP's training prompts.

    ``style_before_type``: CLAP's art styles are adjectives of the image type ("a
    realistic painting of ..."); the mini world's styles are background phrases that
    follow the object ("... star on a striped background").
    """

    types: tuple[str, ...]
    sizes: tuple[str, ...]
    colours: tuple[str, ...]
    styles: tuple[str, ...]
    style_before_type: bool = True

    def combos(self) -> list[tuple[str, str, str, str]]:
        """Every (type, size, colour, style) combination."""
        return list(itertools.product(self.types, self.sizes, self.colours, self.styles))

    def __len__(self) -> int:
        return len(self.types) * len(self.sizes) * len(self.colours) * len(self.styles)


#: CLAP's attribute lists (``data/*.yaml`` of the official code): 480 prompts per class.
CLAP_GRID = PromptGrid(
    types=("painting", "sketch", "cartoon", "clipart", "photograph", "infograph", "mosaic art", "sculpture"),
    sizes=("large", "normal sized", "small"),
    colours=("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "brown", "multicolored"),
    styles=("realistic", "impressionistic"),
)


def mini_grid() -> PromptGrid:
    """The mini world's grid: its image-type words, sizes, colours and background phrases.

    Phrases that use a class word ("on a star pattern", "on a diamond background") are left
    out: a style must not name a class.
    """
    from . import world as W

    class_words = set(W.CLASSNAMES) | {w for opts in W.SHAPE_WORDS.values() for w, _ in opts}
    types = ("photo", "picture", "image", *(w for d in W.DOMAINS for w in W.DOMAIN_WORDS[d]))
    styles = ("", *(p for phrases in W.BACKGROUND_PHRASES.values() for p in phrases
                    if not class_words & set(p.split())))
    return PromptGrid(types, W.SIZES, W.COLOURS, styles, style_before_type=False)


def render_prompt(classname: str, attrs: tuple[str, str, str, str], drop: frozenset[str] = frozenset(),
                  swap: bool = False, style_before_type: bool = True) -> str:
    """Write a grid prompt with the attributes in ``drop`` ("size", "colour", "type", "style")
    deleted, optionally in swapped order ("Y in X style")."""
    img_type, size, colour, style = (a if k not in drop else "" for a, k in
                                     zip(attrs, ("type", "size", "colour", "style")))
    lead = style if style_before_type else ""
    trail = "" if style_before_type else style
    if not img_type and lead:                      # no image type left: the style describes the object
        size, lead = f"{lead} {size}".strip(), ""
    phrase = " ".join(w for w in (size, colour, classname) if w)
    obj = " ".join(w for w in (f"{article(phrase)} {phrase}", trail) if w)
    if not img_type:
        return obj
    kind = " ".join(w for w in (lead, img_type) if w)
    return f"{obj} in {kind} style" if swap else f"{article(kind)} {kind} of {obj}"


@dataclass(frozen=True)
class Augment:
    """Probabilities of CLAP's prompt augmentations. Defaults: every archived run of the
    official code (OSD, OCD, SPO 0.5; ITD, ASD off; 4 noise tokens of std 0.02)."""

    size: float = 0.5          # OSD
    colour: float = 0.5        # OCD
    type: float = 0.0          # ITD
    style: float = 0.0         # ASD
    swap: float = 0.5          # SPO
    noise_tokens: int = 4      # IGN length (0: off)
    noise_std: float = 0.02


def augment(classname: str, attrs: tuple[str, str, str, str], aug: Augment, rng: random.Random,
            style_before_type: bool = True) -> str:
    """One random augmented view of a grid prompt (deletions and order swap; noise comes at encoding)."""
    drop = frozenset(k for k, p in (("size", aug.size), ("colour", aug.colour), ("type", aug.type),
                                    ("style", aug.style)) if rng.random() < p)
    return render_prompt(classname, attrs, drop, swap=rng.random() < aug.swap, style_before_type=style_before_type)


# ----------------------------------------------------------------------------- network and loss
class ResMLP(nn.Module):
    """CLAP's disentangling network: x + α · W₂(W₁ SiLU(x) + b₁), W₂ zero-initialised, no bias."""

    def __init__(self, dim: int, latent: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(dim, latent)
        self.fc2 = nn.Linear(latent, dim, bias=False)
        nn.init.zeros_(self.fc2.weight)

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``alpha``: the inference weight of the residual (1 in training)."""
        return x + alpha * self.fc2(self.fc1(F.silu(x)))


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent between two views (N, D): 2N×2N cosine scores, self-pairs masked."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = len(a)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


# ----------------------------------------------------------------------------- text encoding
NOISE_POSITIONS = ("front", "middle", "end")


def encode_with_noise(bundle: ClipBundle, texts: Sequence[str], n_noise: int, std: float = 0.02,
                      generator: torch.Generator | None = None, position: str = "front",
                      normalize: bool = True) -> torch.Tensor:
    """Encode texts with ``n_noise`` Gaussian pseudo-token embeddings spliced in (CLAP's IGN).

    ``position``: "front" (after the start token), "end" (before the end token) or "middle"
    (half before the text, half after it), as in CLAP's code. One noise draw is shared by
    the batch. ``n_noise=0`` is plain encoding.
    """
    if position not in NOISE_POSITIONS:
        raise ClipnotesError(f"unknown noise position {position!r}; use one of {', '.join(NOISE_POSITIONS)}")
    model = bundle.model
    tokens = bundle.tokenizer(list(texts)).to(bundle.device)
    if n_noise == 0:
        return model.encode_text(tokens, normalize=normalize)
    if (tokens[:, -n_noise:] != 0).any():
        raise ClipnotesError("prompts too long for noise tokens; shorten them or use fewer noise tokens")
    emb = model.token_embedding(tokens)
    noise = (torch.randn(n_noise, emb.shape[-1], generator=generator) * std).to(emb.device, emb.dtype)
    before = {"front": n_noise, "middle": n_noise // 2, "end": 0}[position]
    lengths = (tokens != 0).sum(1).tolist()             # start + words + end
    rows, ids = [], []
    for e, t, n in zip(emb, tokens, lengths):
        gap = torch.zeros(n_noise, dtype=t.dtype, device=t.device)
        rows.append(torch.cat([e[:1], noise[:before], e[1:n - 1], noise[before:], e[n - 1:]])[:len(t)])
        ids.append(torch.cat([t[:1], gap[:before], t[1:n - 1], gap[before:], t[n - 1:]])[:len(t)])
    return encode_token_embeddings(model, torch.stack(rows), torch.stack(ids), normalize=normalize)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class ClapConfig:
    """CLAP's PACS recipe: Adam 1e-4, batch 8, 8,000 steps, latent 256, τ 0.5 / 1, λ 1."""

    steps: int = 8000
    batch_size: int = 8
    lr: float = 1e-4
    latent: int = 256
    tau_text: float = 0.5
    tau_class: float = 1.0
    lam: float = 1.0
    seed: int = 0


def clap_recipe(profile: Profile) -> tuple[PromptGrid, Augment, ClapConfig]:
    """Grid, augmentations and optimisation of a profile.

    paper: CLAP's PACS configuration (20 steps in the paper check). mini: the world's own attribute words, and all four
    deletions on (image type and background are the mini world's styles; a style that is
    never deleted is, to the loss, content).
    """
    cfg = ClapConfig(seed=profile.seed)
    if profile.paper_check:                    # the paper check: every line of the loop, a few steps
        cfg = ClapConfig(seed=profile.seed, steps=20)
    if profile.name == "mini":
        return mini_grid(), Augment(type=0.5, style=0.5), cfg
    return CLAP_GRID, Augment(), cfg


@dataclass(frozen=True)
class AttackBudget:
    """Chapter 8's attack experiment: images per (style, class) cell, PGD/CW steps, a cap on the
    images, and the FGSM budgets of the ε curve (the paper check attacks ViT-B/16 on the CPU, so
    it attacks 2 images for 2 steps, at the two smallest ε)."""

    per_cell: int = 4
    steps: int = 20
    max_images: int | None = None
    fgsm_eps: tuple[float, ...] = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255)


def attack_budget(profile: Profile) -> AttackBudget:
    """The attack budget of a profile (chapter 8): 4 per cell and 20 steps, as CLAP's PGD-20 and CW-20."""
    return AttackBudget(1, 2, 2, AttackBudget.fgsm_eps[:2]) if profile.paper_check else AttackBudget()


def train_clap(bundle: ClipBundle, classnames: Sequence[str], grid: PromptGrid, cfg: ClapConfig = ClapConfig(),
               aug: Augment = Augment(), quiet: bool = False, autocast=None) -> tuple[ResMLP, pd.DataFrame]:
    """Train the disentangling network on text alone (chapter 8). CLIP only encodes, under
    ``no_grad``, so it stays as it was. Returns the network and its loss log (the mean loss of
    every 100 steps)."""
    classnames = check_classnames(classnames)
    torch.manual_seed(cfg.seed)
    rng, gen = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    net = ResMLP(bundle.model.text_projection.shape[1], cfg.latent).to(bundle.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    combos, sbt = grid.combos(), grid.style_before_type
    amp = autocast or no_autocast
    with torch.no_grad(), amp():
        class_feats = bundle.encode_texts(classnames, normalize=False).float()
    log, window = [], []
    for step in progress(range(cfg.steps), desc="CLAP", disable=quiet or None):
        cls = [rng.randrange(len(classnames)) for _ in range(cfg.batch_size)]
        attrs = [rng.choice(combos) for _ in cls]
        prompts = [render_prompt(classnames[c], a, style_before_type=sbt) for c, a in zip(cls, attrs)]
        views = [augment(classnames[c], a, aug, rng, sbt) for c, a in zip(cls, attrs)]
        with torch.no_grad(), amp():
            zt = bundle.encode_texts(prompts, normalize=False).float()
            za = encode_with_noise(bundle, views, aug.noise_tokens, aug.noise_std, gen, rng.choice(NOISE_POSITIONS),
                                   normalize=False).float()
        za = net(za)
        loss = nt_xent(net(zt), za, cfg.tau_text) + cfg.lam * nt_xent(za, net(class_feats[cls]), cfg.tau_class)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if len(window) == 100 or step + 1 == cfg.steps:
            log.append({"step": step + 1, "loss": float(np.mean(window))})
            window = []
    net.eval()
    return net, pd.DataFrame(log)


def adapt(net: ResMLP | None, features: torch.Tensor, alpha: float) -> torch.Tensor:
    """Raw CLIP features → the network at inference weight α → unit norm (``net=None``: CLIP alone)."""
    if net is None:
        return F.normalize(features.float(), dim=-1)
    with torch.no_grad():
        out = net(features.float().to(next(net.parameters()).device), alpha)
        return F.normalize(out, dim=-1).to(features.device)            # where the features came from


# ----------------------------------------------------------------------------- evaluation
#: CLAP's zero-shot prompt formats (NC: the class name after 4 Gaussian noise tokens).
PROMPT_FORMATS: dict[str, str] = {"C": "{}", "PC": "a photo of a {}", "CP": "a {} in a photo"}


def format_text_features(bundle: ClipBundle, classnames: Sequence[str], noise_draws: int = 10,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Raw text features of every prompt format: (C, D) each, and (draws, C, D) for NC."""
    classnames = check_classnames(classnames)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = {k: bundle.encode_texts([t.format(c) for c in classnames], normalize=False).float().cpu()
               for k, t in PROMPT_FORMATS.items()}
        out["NC"] = torch.stack([encode_with_noise(bundle, classnames, 4, 0.02, gen, normalize=False).float().cpu()
                                 for _ in range(noise_draws)])
    return out


def format_accuracy(image_features: torch.Tensor, labels: torch.Tensor, groups: Sequence[str],
                    texts: Mapping[str, torch.Tensor], net: ResMLP | None = None, alpha: float = 1.0) -> pd.DataFrame:
    """Zero-shot accuracy (rows: groups such as domains; columns: prompt formats) from raw features.

    NC is averaged over its noise draws, as CLAP redraws the noise for every test batch.
    """
    img = adapt(net, image_features, alpha).cpu()
    table = {}
    for name, feats in texts.items():
        heads = feats if feats.dim() == 3 else feats[None]
        per_draw = [accuracy_by_group(img @ adapt(net, h, alpha).cpu().T, labels, groups) for h in heads]
        table[name] = pd.DataFrame(per_draw).mean().to_dict()
    return pd.DataFrame(table)


def format_correct(image_features: torch.Tensor, labels: torch.Tensor, texts: Mapping[str, torch.Tensor],
                   net: ResMLP | None = None, alpha: float = 1.0) -> dict[str, np.ndarray]:
    """Per image and prompt format, 1 where zero-shot is right (NC: the share of its noise draws
    that are right) — :func:`format_accuracy` before averaging, for the chapter's margins."""
    img = adapt(net, image_features, alpha).cpu()
    y = torch.as_tensor(labels).cpu()
    out = {}
    for name, feats in texts.items():
        heads = feats if feats.dim() == 3 else feats[None]
        out[name] = np.mean([((img @ adapt(net, h, alpha).cpu().T).argmax(1) == y).numpy() for h in heads], axis=0)
    return out


def prompt_robustness(acc: Mapping[str, float], c: str = "C", variants: Sequence[str] = ("C", "PC", "CP"),
                      noisy: str = "NC") -> dict[str, float]:
    """CLAP's metrics from zero-shot accuracies: range and std over prompt formats, and Δ(NC) = C − NC."""
    vals = np.array([acc[v] for v in variants])
    return {"range": float(vals.max() - vals.min()), "std": float(vals.std()), "delta_nc": float(acc[c] - acc[noisy])}


#: The inference weights scanned: CLAP's search grid 10^-1.5 … 1, in quarter decades.
ALPHA_GRID: tuple[float, ...] = tuple(float(a) for a in np.round(10 ** np.arange(-1.5, 0.01, 0.25), 4))


def choose_alpha(net: ResMLP, image_features: torch.Tensor, labels: torch.Tensor,
                 texts: Mapping[str, torch.Tensor], alphas: Sequence[float] = ALPHA_GRID,
                 formats: Sequence[str] = ("C", "PC", "CP"), budget: float = 0.005) -> tuple[float, pd.DataFrame]:
    """The largest α whose mean accuracy over ``formats`` on a held-out *source* split is at
    most ``budget`` below CLIP's (α = 0). CLAP's own search maximises ZS(PC) on the test
    domains. Returns α and the scan, with CLIP as row 0.
    """
    groups = ["source"] * len(labels)
    rows = {a: format_accuracy(image_features, labels, groups, texts, net if a else None, a).iloc[0]
            for a in (0.0, *alphas)}
    scan = pd.DataFrame(rows).T.rename_axis("alpha")
    scan["mean"] = scan[list(formats)].mean(axis=1)
    free = scan.index[scan["mean"] >= scan.loc[0.0, "mean"] - budget]
    return float(max(free)), scan


# ----------------------------------------------------------------------------- what the features hold
def probe_factors(features: torch.Tensor, factors: Mapping[str, np.ndarray], seed: int = 0,
                  train_fraction: float = 0.5) -> dict[str, float]:
    """Held-out accuracy of a linear probe (logistic regression) per known factor of the images."""
    n = len(features)
    order = np.random.default_rng(seed).permutation(n)
    tr, te = order[:int(n * train_fraction)], order[int(n * train_fraction):]
    x = features.numpy()
    return {name: float(fit_linear_probe(features[tr], torch.as_tensor(y[tr]), seed=seed).score(x[te], y[te]))
            for name, y in ((k, np.asarray(v)) for k, v in factors.items())}


def knn_factors(features: torch.Tensor, factors: Mapping[str, np.ndarray], k: int = 10) -> dict[str, float]:
    """Leave-one-out k-nearest-neighbour (cosine) accuracy per factor: what a t-SNE neighbourhood shows."""
    f = F.normalize(features.float(), dim=-1)
    sim = f @ f.T
    sim.fill_diagonal_(-2)
    nn_idx = sim.topk(k, dim=1).indices.numpy()
    out = {}
    for name, y in factors.items():
        y = np.asarray(y)
        votes = y[nn_idx]
        pred = np.array([np.bincount(v).argmax() for v in votes])
        out[name] = float((pred == y).mean())
    return out


def zero_shot_classifier(bundle: ClipBundle, text_features: torch.Tensor, net: ResMLP | None = None,
                         alpha: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in [0, 1] → cosine scores with the class prompts, through the network if given
    (the classifier CLAP's attacks differentiate)."""
    head = adapt(net, text_features, alpha).to(bundle.device)

    def classify(x: torch.Tensor) -> torch.Tensor:
        raw = bundle.encode_images(x, normalize=False).float()
        return F.normalize(raw if net is None else net(raw, alpha), dim=-1) @ head.T

    return classify


def known_factors(dataset, idx: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
    """The factors of items ``idx`` that a probe can try to read: class and domain, and in the
    mini world also colour, size and background."""
    out = {"class": np.asarray(dataset.labels)[idx], "domain": np.unique(np.asarray(groups), return_inverse=True)[1][idx]}
    if isinstance(dataset, WorldDataset):
        out.update({k: np.asarray(getattr(dataset.factors, k))[idx] for k in ("colour", "size", "background")})
    return out


def few_shot_probes(pool: torch.Tensor, pool_labels: torch.Tensor, pool_groups: Sequence[str], test: torch.Tensor,
                    test_labels: torch.Tensor, test_groups: Sequence[str],
                    views: Mapping[str, tuple[ResMLP | None, float]], shots: Sequence[int] = (1, 2, 4, 8, 16),
                    seed: int = 0) -> pd.DataFrame:
    """Per group (domain) and shot count: a linear probe on K labelled pool images per class of
    that group, tested on the group's test images, for each feature view (name → (net, α))."""
    pool_groups, test_groups = np.asarray(pool_groups), np.asarray(test_groups)
    rows = []
    for g in dict.fromkeys(test_groups):
        p_idx, t_idx = np.flatnonzero(pool_groups == g), np.flatnonzero(test_groups == g)
        for k in shots:
            pick = p_idx[few_shot_indices(pool_labels[p_idx].numpy(), k, seed=seed)]
            for name, (net, alpha) in views.items():
                x_tr, x_te = adapt(net, pool[pick], alpha).cpu(), adapt(net, test[t_idx], alpha).cpu()
                probe = fit_linear_probe(x_tr, pool_labels[pick], seed=seed)
                rows.append({"features": name, "domain": g, "shots": k,
                             "accuracy": float(probe.score(x_te.numpy(), test_labels[t_idx].numpy()))})
    return pd.DataFrame(rows)
