"""Prompt learning, CoOp (chapter 4): learned context vectors spliced into the frozen text tower.

A prompt "X X X X star." is tokenised once; the embeddings of its start token and of the
class name, full stop and end token are frozen buffers, and the M context vectors take
the place of the X's. The sequence then runs through CLIP's own text transformer
(:func:`clipnotes.models.encode_token_embeddings`), exactly as ``open_clip.CLIP.encode_text``
does after its embedding lookup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import accuracy, fit_linear_probe
from .models import ClipBundle, encode_token_embeddings
from .profiles import Profile
from .optim import cosine
from .tasks import base_new_classes, few_shot_indices
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
    each epoch. Only the context vectors train: the text tower runs, the image tower never does.
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
                loss = F.cross_entropy(scale * x[idx] @ learner(model).float().T, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
    learner.eval()
    return losses


@torch.no_grad()
def prompt_accuracy(bundle: ClipBundle, learner: PromptLearner, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the learned prompts on cached, L2-normalised image features."""
    text = learner(bundle.model).float()
    return accuracy((features.float().to(text.device) @ text.T).cpu(), labels)


def coop_epochs(shots: int, max_epochs: int | None = None) -> int:
    """CoOp's epochs for a shot count (the nearest listed count at or below it), at most ``max_epochs``."""
    epochs = COOP_EPOCHS[max([k for k in COOP_EPOCHS if k <= shots] or [1])]
    return epochs if max_epochs is None else min(epochs, max_epochs)


@dataclass(frozen=True)
class CoopBudget:
    """Chapter 4's experiment size: shot counts, few-shot draws, and a cap on CoOp's epochs."""

    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    draws: int = 3
    max_epochs: int | None = None


def coop_budget(profile: Profile) -> CoopBudget:
    """Three draws at CoOp's epochs; the paper check (ViT-B/16 on the CPU) two draws of two epochs."""
    return CoopBudget(draws=2, max_epochs=2) if profile.paper_check else CoopBudget()


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
            idx = torch.as_tensor(few_shot_indices(pool.labels.numpy(), k, seed=seed * 1000 + d))
            fx, fy = pool.features[idx], pool.labels[idx]
            probe = fit_linear_probe(fx, fy, seed=seed)
            rows += [dict(method="hand prompt", shots=k, draw=d, accuracy=hand),
                     dict(method="linear probe", shots=k, draw=d, accuracy=float(probe.score(x.numpy(), y.numpy())))]
            bar.update(1)
            for name, kwargs in variants.items():
                learner = fit_coop(bundle, classnames, fx, fy, k, seed=seed * 1000 + d, max_epochs=max_epochs,
                                   **kwargs)
                rows.append(dict(method=name, shots=k, draw=d, accuracy=prompt_accuracy(bundle, learner, x, y)))
                bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def base_to_new(bundle: ClipBundle, pool, test, classnames: Sequence[str], template: str, shots: int = 16,
                draws: int = 3, seed: int = 0, split: str = "first-half", max_epochs: int | None = None,
                **learner_kwargs) -> pd.DataFrame:
    """CoCoOp's base-to-new protocol: CoOp learns on the base half of the classes, and its context
    is tested on base and on the unseen new half (each a classification among its own classes).

    ``split`` is :func:`clipnotes.tasks.base_new_classes`'s. Rows per draw for the hand prompt
    and CoOp: base, new and their harmonic mean H.
    """
    learner_kwargs = learner_kwargs or COOP_VARIANTS["CoOp"]
    base, new = base_new_classes(len(classnames), split)
    names = {"base": [classnames[i] for i in base], "new": [classnames[i] for i in new]}
    pool_mask, pool_y = _relabel(pool.labels, base)
    pool_x = pool.features[pool_mask]
    tests = {part: _relabel(test.labels, keep) for part, keep in (("base", base), ("new", new))}

    def acc(part: str, text: torch.Tensor) -> float:
        mask, yy = tests[part]
        return accuracy(test.features[mask] @ text.T, yy)

    hand = {part: acc(part, zero_shot_head(bundle, names[part], [template]).cpu().T) for part in tests}
    rows = []
    for d in progress(range(draws), desc="base-to-new runs"):
        idx = torch.as_tensor(few_shot_indices(pool_y.numpy(), shots, seed=seed * 1000 + d))
        learner = fit_coop(bundle, names["base"], pool_x[idx], pool_y[idx], shots, seed=seed * 1000 + d,
                           max_epochs=max_epochs, **learner_kwargs)
        with torch.no_grad():
            coop = {"base": learner(bundle.model).float().cpu(),
                    "new": learner.for_classes(bundle, names["new"])(bundle.model).float().cpu()}
        rows.append(dict(method="hand prompt", draw=d, **hand))
        rows.append(dict(method="CoOp", draw=d, **{part: acc(part, t) for part, t in coop.items()}))
    out = pd.DataFrame(rows)
    out["H"] = 2 * out["base"] * out["new"] / (out["base"] + out["new"])
    return out
