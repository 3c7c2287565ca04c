"""Prompt learning, CoOp (chapter 4) and CoCoOp (chapter 11): learned context vectors spliced into
the frozen text tower, shared by every image (CoOp) or shifted per image by a small network (CoCoOp).

A prompt "X X X X star." is tokenised once; the embeddings of its start token and of the
class name, full stop and end token are frozen buffers, and the M context vectors take
the place of the X's. The sequence then runs through CLIP's own text transformer
(:func:`clipnotes.models.encode_token_embeddings`), exactly as ``open_clip.CLIP.encode_text``
does after its embedding lookup.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import accuracy, fit_linear_probe
from .models import ClipBundle, encode_token_embeddings
from .profiles import Profile
from .stats import Gap
from .optim import cosine
from .tasks import base_new_classes, draw_seed, few_shot_indices
from .utils import ClipnotesError, frozen, progress
from .zeroshot import zero_shot_head

POSITIONS = ("end", "middle", "front")


#: CoOp's training epochs per shot count (``scripts/coop``: 50 / 100 / 100 / 200 / 200).
COOP_EPOCHS: dict[int, int] = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}


#: The chapter's two CoOp variants: a shared context from "a photo of a" (CoOp's ctxv1 configs)
#: and a class-specific random one (CSC).
COOP_VARIANTS: dict[str, dict] = {"CoOp": dict(init="a photo of a"), "CoOp, class-specific": dict(n_ctx=4, csc=True)}


def _word_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without start/end tokens (works for open_clip's and the word tokenizer)."""
    ids = tokenizer([text])[0].tolist()
    end = ids.index(max(ids))                       # the end-of-text token has the largest id
    return ids[1:end]


class PromptLearner(nn.Module):
    """M learnable context vectors around each class name (CoOp).

    ``init`` (e.g. ``"a photo of a"``) initialises the context from those words' embeddings
    (M = their number, always a shared context, as in CoOp); otherwise ``n_ctx`` vectors
    are drawn from N(0, 0.02²), shared by all classes or one set per class (``csc=True``).
    ``position`` puts the class name at the end, in the middle, or at the front.
    """

    def __init__(self, bundle: ClipBundle, classnames: Sequence[str], n_ctx: int = 4, init: str | None = None,
                 position: str = "end", csc: bool = False, seed: int = 0):
        super().__init__()
        if not classnames:
            raise ClipnotesError("the class list is empty; pass at least one class name")
        if position not in POSITIONS:
            raise ClipnotesError(f"unknown class position {position!r}; use one of {POSITIONS}")
        model, tok = bundle.model, bundle.tokenizer
        emb = model.token_embedding
        init_ids = _word_ids(tok, init) if init else None
        if init_ids is not None:
            n_ctx, csc = len(init_ids), False
        self.n_ctx, self.position, self.csc, self.classnames = n_ctx, position, csc, list(classnames)
        name_ids = [_word_ids(tok, c) for c in classnames]
        self.name_lens = [len(ids) for ids in name_ids]
        placeholder = " ".join(["X"] * n_ctx)
        tokens = tok([f"{placeholder} {c}." for c in classnames])                         # (C, L)
        if tokens[:, 1 + n_ctx:].eq(0).all(1).any():
            raise ClipnotesError("the prompts do not fit the text tower's context length; use fewer context vectors")
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            e = emb(tokens.to(emb.weight.device)).float()                                  # (C, L, W)
        self.register_buffer("prefix", e[:, :1].clone(), persistent=False)                 # start token
        self.register_buffer("suffix", e[:, 1 + n_ctx:].clone(), persistent=False)         # name . end pads
        width = e.shape[-1]
        if init_ids is not None:
            with torch.no_grad():
                ctx = emb(torch.tensor(init_ids, device=emb.weight.device)).float().clone()
        else:
            g = torch.Generator().manual_seed(seed)
            shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
            ctx = (torch.randn(shape, generator=g) * 0.02).to(emb.weight.device)
        self.ctx = nn.Parameter(ctx)

    def embeddings(self) -> torch.Tensor:
        """The spliced prompt embeddings, (C, L, W)."""
        c = len(self.classnames)
        ctx = self.ctx if self.csc else self.ctx.unsqueeze(0).expand(c, -1, -1)
        if self.position == "end":
            return torch.cat([self.prefix, ctx, self.suffix], 1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(self.name_lens):
            name, rest = self.suffix[i:i + 1, :n], self.suffix[i:i + 1, n:]
            if self.position == "middle":
                parts = [self.prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest]
            else:  # front
                parts = [self.prefix[i:i + 1], name, ctx[i:i + 1], rest]
            rows.append(torch.cat(parts, 1))
        return torch.cat(rows)

    def for_classes(self, bundle: ClipBundle, classnames: Sequence[str]) -> "PromptLearner":
        """The same learned (shared) context around other class names: CoOp on new classes."""
        if self.csc:
            raise ClipnotesError("a class-specific context has no vectors for new classes; use a shared context")
        other = PromptLearner(bundle, classnames, n_ctx=self.n_ctx, position=self.position)
        with torch.no_grad():
            other.ctx.copy_(self.ctx)
        return other.eval()

    def forward(self, model) -> torch.Tensor:
        """Unit-norm class embeddings (C, D) through ``model``'s frozen text tower."""
        return encode_token_embeddings(model, self.embeddings(), self.tokens)

    def logits(self, model, features: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale`` × cosine between L2-normalised image features (B, D) and every class prompt: (B, C)."""
        return scale * features @ self(model).float().T


class ConditionalPromptLearner(PromptLearner):
    """CoCoOp (chapter 11): CoOp's shared context plus a shift π(x) that a meta-network computes
    from each image's feature; every context vector of image x is v_m + π(x).

    The meta-network is CoCoOp's ``Linear(D, D/16) → ReLU → Linear(D/16, W)`` (D the image
    feature size, W the token-embedding width), seeded by ``seed``. The text tower then runs
    once per image over all C prompts — the method's cost.
    """

    def __init__(self, bundle: ClipBundle, classnames: Sequence[str], n_ctx: int = 4, init: str | None = None,
                 seed: int = 0, hidden_ratio: int = 16):
        super().__init__(bundle, classnames, n_ctx=n_ctx, init=init, seed=seed)
        dim, width = bundle.model.text_projection.shape[-1], self.prefix.shape[-1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.meta_net = nn.Sequential(nn.Linear(dim, max(1, dim // hidden_ratio)), nn.ReLU(),
                                          nn.Linear(max(1, dim // hidden_ratio), width)).to(self.prefix.device)

    def embeddings_for(self, features: torch.Tensor) -> torch.Tensor:
        """The spliced prompts of every image and class, (B·C, L, W): [start][v + π(x)][name . end]."""
        b, c = len(features), len(self.classnames)
        ctx = self.ctx[None] + self.meta_net(features.float())[:, None]                        # (B, M, W)
        parts = [self.prefix[None].expand(b, -1, -1, -1), ctx[:, None].expand(-1, c, -1, -1),
                 self.suffix[None].expand(b, -1, -1, -1)]
        return torch.cat(parts, 2).flatten(0, 1)

    def class_embeddings(self, model, features: torch.Tensor) -> torch.Tensor:
        """Unit-norm class embeddings conditioned on each image, (B, C, D)."""
        b = len(features)
        out = encode_token_embeddings(model, self.embeddings_for(features), self.tokens.repeat(b, 1))
        return out.view(b, len(self.classnames), -1)

    def logits(self, model, features: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale`` × cosine between each image and its own class prompts: (B, C)."""
        return scale * torch.einsum("bd,bcd->bc", features, self.class_embeddings(model, features).float())

    @torch.no_grad()
    def unconditioned(self, bundle: ClipBundle, features: torch.Tensor) -> PromptLearner:
        """A plain shared context v_m + mean π(x) over ``features``: CoCoOp with the image-dependent
        part of its shift taken out (chapter 11's ablation)."""
        plain = PromptLearner(bundle, self.classnames, n_ctx=self.n_ctx)
        plain.ctx.copy_(self.ctx + self.meta_net(features.float().to(self.ctx.device)).mean(0))
        return plain.eval()

    def for_classes(self, bundle: ClipBundle, classnames: Sequence[str]) -> "ConditionalPromptLearner":
        """The same context and meta-network around other class names: CoCoOp on new classes."""
        other = ConditionalPromptLearner(bundle, classnames, n_ctx=self.n_ctx)
        other.load_state_dict(self.state_dict())
        return other.eval()


def nearest_words(bundle: ClipBundle, vectors: torch.Tensor, k: int = 3) -> list[list[str]]:
    """The vocabulary words whose embeddings are closest (Euclidean) to each context vector."""
    table = bundle.model.token_embedding.weight.detach().float()
    d = torch.cdist(vectors.detach().float().reshape(-1, table.shape[1]), table)
    idx = d.topk(k, largest=False).indices
    itos = getattr(bundle.tokenizer, "itos", None)
    if itos is None:
        from open_clip.tokenizer import _tokenizer as bpe
        return [[bpe.decoder[int(i)] for i in row] for row in idx]
    return [[itos[int(i)] for i in row] for row in idx]


def train_coop(bundle: ClipBundle, learner: PromptLearner, features: torch.Tensor, labels: torch.Tensor,
               epochs: int, lr: float = 0.002, batch_size: int = 32, momentum: float = 0.9,
               weight_decay: float = 5e-4, warmup_lr: float = 1e-5, seed: int = 0) -> list[float]:
    """CoOp's recipe on cached, L2-normalised image features; returns the loss of every step.

    SGD with momentum, one warm-up epoch at the constant rate ``warmup_lr``, then cosine decay
    from ``lr`` over the remaining epochs; batches of ``batch_size`` drawn without replacement
    each epoch. Only the learner trains (CoOp's context; CoCoOp's context and meta-network, with
    its recipe's ``batch_size=1``): the text tower runs, the image tower never does.
    """
    if len(labels) == 0:
        raise ClipnotesError("no training features for CoOp")
    model = bundle.model
    scale = model.logit_scale.exp().item()
    x, y = features.float().to(bundle.device), torch.as_tensor(labels).to(bundle.device)
    opt = torch.optim.SGD(learner.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    losses = []
    learner.train()
    with frozen(model):
        for epoch in range(epochs):
            rate = warmup_lr if epoch == 0 and epochs > 1 else cosine(epoch - 1, epochs - 1, lr)
            for group in opt.param_groups:
                group["lr"] = rate
            for idx in torch.randperm(len(y), generator=g).split(batch_size):
                idx = idx.to(bundle.device)
                loss = F.cross_entropy(learner.logits(model, x[idx], scale), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
    learner.eval()
    return losses


@torch.no_grad()
def prompt_logits(bundle: ClipBundle, learner: PromptLearner, features: torch.Tensor,
                  batch_size: int = 64) -> torch.Tensor:
    """Cosine logits (N, C) of the learned prompts on cached, L2-normalised image features, on the CPU
    (a conditional learner is run ``batch_size`` images at a time: C prompts per image)."""
    if not isinstance(learner, ConditionalPromptLearner):
        text = learner(bundle.model).float()
        return (features.float().to(text.device) @ text.T).cpu()
    x = features.float().to(bundle.device)
    return torch.cat([learner.logits(bundle.model, x[s:s + batch_size], 1.0).cpu()
                      for s in range(0, len(x), batch_size)])


def prompt_accuracy(bundle: ClipBundle, learner: PromptLearner, features: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 64) -> float:
    """Top-1 accuracy of the learned prompts on cached, L2-normalised image features."""
    return accuracy(prompt_logits(bundle, learner, features, batch_size), labels)


def coop_epochs(shots: int, max_epochs: int | None = None) -> int:
    """CoOp's epochs for a shot count (the nearest listed count at or below it), at most ``max_epochs``."""
    epochs = COOP_EPOCHS[max([k for k in COOP_EPOCHS if k <= shots] or [1])]
    return epochs if max_epochs is None else min(epochs, max_epochs)


@dataclass(frozen=True)
class CoopBudget:
    """Chapters 4 and 11's experiment size: shot counts, few-shot draws (chapter 11's base-to-new
    comparison takes ``cocoop_draws``), and a cap on the learners' epochs."""

    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    draws: int = 3
    max_epochs: int | None = None
    cocoop_draws: int = 5


def coop_budget(profile: Profile) -> CoopBudget:
    """Three draws (five for CoCoOp's comparison) at the recipes' epochs; the paper check (ViT-B/16
    on the CPU) two draws of two epochs."""
    return CoopBudget(draws=2, max_epochs=2, cocoop_draws=2) if profile.paper_check else CoopBudget()


def coop_lr(bundle: ClipBundle, lr: float = 0.002) -> float:
    """CoOp's learning rate, rescaled to a model whose logit scale is not real CLIP's 100.

    The gradient on the context vectors is proportional to the logit scale, so SGD's step
    is too: ``lr · 100 / scale`` gives the mini CLIP (scale ≈ 35) the step real CLIP takes
    with 0.002, and leaves 0.002 unchanged for real CLIP.
    """
    return lr * 100.0 / bundle.model.logit_scale.exp().item()


def fit_coop(bundle: ClipBundle, classnames: Sequence[str], features: torch.Tensor, labels: torch.Tensor,
             shots: int, seed: int = 0, max_epochs: int | None = None, **learner_kwargs) -> PromptLearner:
    """A prompt learner trained with CoOp's recipe for ``shots`` shots (epochs, rescaled lr)."""
    learner = PromptLearner(bundle, classnames, seed=seed, **learner_kwargs)
    train_coop(bundle, learner, features, labels, epochs=coop_epochs(shots, max_epochs), lr=coop_lr(bundle),
               seed=seed)
    return learner


#: CoCoOp's recipe (``vit_b16_c4_ep10_batch1_ctxv1``): 10 epochs at batch 1, context from "a photo of a".
COCOOP_EPOCHS, COCOOP_BATCH = 10, 1


def train_on_cocoop_schedule(bundle: ClipBundle, learner: PromptLearner, features: torch.Tensor,
                             labels: torch.Tensor, seed: int = 0, max_epochs: int | None = None,
                             batch_size: int = COCOOP_BATCH) -> PromptLearner:
    """CoCoOp's schedule (chapter 11): CoOp's SGD and rescaled lr for 10 epochs (at most
    ``max_epochs``) at batch 1, whatever the learner."""
    epochs = COCOOP_EPOCHS if max_epochs is None else min(COCOOP_EPOCHS, max_epochs)
    train_coop(bundle, learner, features, labels, epochs=epochs, lr=coop_lr(bundle), batch_size=batch_size,
               seed=seed)
    return learner


def fit_cocoop(bundle: ClipBundle, classnames: Sequence[str], features: torch.Tensor, labels: torch.Tensor,
               shots: int = 16, seed: int = 0, max_epochs: int | None = None, batch_size: int = COCOOP_BATCH,
               init: str = "a photo of a") -> ConditionalPromptLearner:
    """A CoCoOp learner trained with its recipe (chapter 11), whatever the shot count (``shots`` is
    accepted for a common signature)."""
    learner = ConditionalPromptLearner(bundle, classnames, init=init, seed=seed)
    return train_on_cocoop_schedule(bundle, learner, features, labels, seed, max_epochs, batch_size)


def _fit_coop_b2n(bundle, classnames, features, labels, shots, seed=0, max_epochs=None):
    """CoOp as base-to-new runs it: one shared context from "a photo of a"."""
    return fit_coop(bundle, classnames, features, labels, shots, seed=seed, max_epochs=max_epochs,
                    **COOP_VARIANTS["CoOp"])


def fit_coop_cocoop_schedule(bundle: ClipBundle, classnames: Sequence[str], features: torch.Tensor,
                             labels: torch.Tensor, shots: int = 16, seed: int = 0,
                             max_epochs: int | None = None) -> PromptLearner:
    """Chapter 11's control: CoOp's shared context (no meta-network) trained with CoCoOp's schedule,
    10 epochs at batch 1 — what CoCoOp gains from its recipe alone."""
    learner = PromptLearner(bundle, classnames, init="a photo of a", seed=seed)
    return train_on_cocoop_schedule(bundle, learner, features, labels, seed, max_epochs)


#: The prompt learners base-to-new can compare, each ``fit(bundle, names, x, y, shots, seed, max_epochs)``.
BASE_TO_NEW_LEARNERS = {"CoOp": _fit_coop_b2n, "CoCoOp": fit_cocoop,
                        "CoOp, CoCoOp's schedule": fit_coop_cocoop_schedule}


def harmonic_mean(base, new):
    """CoCoOp's H: the harmonic mean of base and new accuracy (floats or pandas columns)."""
    return 2 * base * new / (base + new)


def _relabel(labels: torch.Tensor, keep: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask of the items whose label is in ``keep`` and their labels renumbered 0…len(keep)−1."""
    keep_t = torch.as_tensor(list(keep))
    mask = torch.isin(labels, keep_t)
    return mask, (labels[mask][:, None] == keep_t[None, :]).float().argmax(1)


def few_shot_curves(bundle: ClipBundle, pool, test, classnames: Sequence[str], template: str,
                    shots: Sequence[int] = (1, 2, 4, 8, 16), draws: int = 3, seed: int = 0,
                    variants: dict[str, dict] | None = None, max_epochs: int | None = None) -> pd.DataFrame:
    """Test accuracy of the hand prompt, a linear probe and CoOp variants after k shots per class.

    ``pool`` and ``test`` are cached feature sets (``.features``, ``.labels``); each of ``draws``
    draws picks its own k images per class from the pool. Rows: method, shots, draw, accuracy.
    """
    variants = COOP_VARIANTS if variants is None else variants
    x, y = test.features, test.labels
    hand = accuracy(x @ zero_shot_head(bundle, classnames, [template]).cpu(), y)
    rows = []
    bar = progress(total=len(shots) * draws * (len(variants) + 1), desc="few-shot runs")
    for k in shots:
        for d in range(draws):
            idx = torch.as_tensor(few_shot_indices(pool.labels.numpy(), k, seed=draw_seed(seed, d)))
            fx, fy = pool.features[idx], pool.labels[idx]
            probe = fit_linear_probe(fx, fy, seed=seed)
            rows += [dict(method="hand prompt", shots=k, draw=d, accuracy=hand),
                     dict(method="linear probe", shots=k, draw=d, accuracy=float(probe.score(x.numpy(), y.numpy())))]
            bar.update(1)
            for name, kwargs in variants.items():
                learner = fit_coop(bundle, classnames, fx, fy, k, seed=draw_seed(seed, d), max_epochs=max_epochs,
                                   **kwargs)
                rows.append(dict(method=name, shots=k, draw=d, accuracy=prompt_accuracy(bundle, learner, x, y)))
                bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


@dataclass
class BaseToNew:
    """The runs of CoCoOp's base-to-new protocol (chapters 4 and 11).

    ``table``: one row per draw and method (base, new, H, training seconds); ``learners``: each
    (method, draw)'s learner, trained on the base classes; ``shots``: each draw's training
    (features, labels among the base classes); ``correct``: per-image 0/1 scores, keyed (method,
    draw, part); ``names``/``tests``: each part's class names and (test mask, labels among that
    part's classes).
    """

    table: pd.DataFrame
    learners: dict
    correct: dict
    names: dict
    tests: dict
    test_features: torch.Tensor
    shots: dict = field(default_factory=dict)

    def score(self, bundle: ClipBundle, part: str, learner: PromptLearner) -> np.ndarray:
        """Per-image 0/1 scores of ``learner`` (already moved to ``part``'s classes) on ``part``."""
        mask, labels = self.tests[part]
        pred = prompt_logits(bundle, learner, self.test_features[mask]).argmax(1)
        return (pred == labels).numpy().astype(float)

    def gap(self, a: str, b: str, quantity: str = "H", n_boot: int = 500, seed: int = 0) -> Gap:
        """Mean over draws of ``quantity`` (base, new or H) of method ``a`` minus ``b``, on the same
        draws and images. Its error: the draws' spread (standard error of their mean) and a paired
        bootstrap over the test images (resampled within base and within new), in quadrature."""
        draws = sorted(self.table.draw.unique())
        n = {part: len(self.tests[part][1]) for part in ("base", "new")}
        rng = np.random.default_rng(seed)

        def per_draw(idx: dict) -> np.ndarray:
            out = []
            for d in draws:
                q = {}
                for m in (a, b):
                    acc = {part: self.correct[m, d, part][idx[part]].mean() for part in n}
                    q[m] = acc[quantity] if quantity in acc else harmonic_mean(acc["base"], acc["new"])
                out.append(q[a] - q[b])
            return np.asarray(out)

        diffs = per_draw({part: np.arange(k) for part, k in n.items()})
        boots = [per_draw({part: rng.integers(0, k, k) for part, k in n.items()}).mean() for _ in range(n_boot)]
        spread = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        return Gap(float(diffs.mean()), float(np.hypot(spread, np.std(boots, ddof=1))))


def base_to_new_runs(bundle: ClipBundle, pool, test, classnames: Sequence[str], template: str, shots: int = 16,
                     draws: int = 3, seed: int = 0, split: str = "first-half", max_epochs: int | None = None,
                     methods: Sequence[str] = ("CoOp",)) -> BaseToNew:
    """CoCoOp's base-to-new protocol: each learner in ``methods`` (:data:`BASE_TO_NEW_LEARNERS`)
    learns on the base half of the classes from the same ``shots`` per class, and is tested on base
    and on the unseen new half (each a classification among its own classes), for ``draws`` draws.

    ``split`` is :func:`clipnotes.tasks.base_new_classes`'s; rows of the hand prompt come with every draw.
    """
    unknown = [m for m in methods if m not in BASE_TO_NEW_LEARNERS]
    if unknown:
        raise ClipnotesError(f"unknown prompt learner(s) {unknown}; use some of {list(BASE_TO_NEW_LEARNERS)}")
    base, new = base_new_classes(len(classnames), split)
    names = {"base": [classnames[i] for i in base], "new": [classnames[i] for i in new]}
    pool_mask, pool_y = _relabel(pool.labels, base)
    pool_x = pool.features[pool_mask]
    run = BaseToNew(pd.DataFrame(), {}, {}, names,
                    {part: _relabel(test.labels, keep) for part, keep in (("base", base), ("new", new))},
                    test.features)
    hand_scores = {}
    for part, (mask, yy) in run.tests.items():
        pred = (test.features[mask] @ zero_shot_head(bundle, names[part], [template]).cpu()).argmax(1)
        hand_scores[part] = (pred == yy).numpy().astype(float)
    hand = {part: c.mean() for part, c in hand_scores.items()}
    rows = []
    for d in progress(range(draws), desc="base-to-new runs"):
        idx = torch.as_tensor(few_shot_indices(pool_y.numpy(), shots, seed=draw_seed(seed, d)))
        run.shots[d] = (pool_x[idx], pool_y[idx])
        rows.append(dict(method="hand prompt", draw=d, **hand, seconds=0.0))
        run.correct.update({("hand prompt", d, part): c for part, c in hand_scores.items()})
        for name in methods:
            start = time.perf_counter()
            learner = BASE_TO_NEW_LEARNERS[name](bundle, names["base"], pool_x[idx], pool_y[idx], shots,
                                                 seed=draw_seed(seed, d), max_epochs=max_epochs)
            seconds = time.perf_counter() - start
            run.learners[name, d] = learner
            for part in ("base", "new"):
                on_part = learner if part == "base" else learner.for_classes(bundle, names["new"])
                run.correct[name, d, part] = run.score(bundle, part, on_part)
            rows.append(dict(method=name, draw=d, base=run.correct[name, d, "base"].mean(),
                             new=run.correct[name, d, "new"].mean(), seconds=seconds))
    run.table = pd.DataFrame(rows)
    run.table["H"] = harmonic_mean(run.table["base"], run.table["new"])
    return run


def base_to_new(bundle: ClipBundle, pool, test, classnames: Sequence[str], template: str, shots: int = 16,
                draws: int = 3, seed: int = 0, split: str = "first-half", max_epochs: int | None = None,
                methods: Sequence[str] = ("CoOp",)) -> pd.DataFrame:
    """The table of :func:`base_to_new_runs`: per draw, base, new and H of the hand prompt and each
    learner (chapter 4)."""
    return base_to_new_runs(bundle, pool, test, classnames, template, shots, draws, seed, split, max_epochs,
                            methods).table
