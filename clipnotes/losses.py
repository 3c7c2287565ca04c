"""The fine-tuning objectives of chapters 5–7, one call shape for all three.

A loss is built once per run (:func:`build_loss`) and then called every step as
``loss(model, x, y, idx, step) -> (loss, train accuracy)``: ``x`` the preprocessed batch,
``y`` its labels, ``idx`` the items' indices in the training set, ``step`` the step number.

* :class:`CrossEntropy` — chapter 5 (WiSE-FT's end-to-end fine-tuning).
* :class:`FLYP` — chapter 6: CLIP's contrastive loss between images and class captions.
* :class:`CARFT` — chapter 7: cross-entropy + β · KL(p₀(context|x) ‖ p_θ(context|x)).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .carft import context_directions, context_logits
from .evaluate import frozen_features
from .models import ClipBundle

Step = tuple[torch.Tensor, float]


def flyp_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's loss on (image, class caption) pairs; with ``labels``, same-class pairs are not negatives."""
    logits = scale * image_features @ text_features.T
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        logits = logits.masked_fill(same & ~torch.eye(len(labels), dtype=torch.bool, device=logits.device),
                                    float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def context_kl(p0_logits: torch.Tensor, p_logits: torch.Tensor, per_item: bool = False) -> torch.Tensor:
    """KL(p₀ ‖ p_θ) between context distributions given as logits, averaged over the batch
    (``per_item``: one value per row, for a paired margin)."""
    if per_item:
        return F.kl_div(F.log_softmax(p_logits, -1), F.log_softmax(p0_logits, -1), log_target=True,
                        reduction="none").sum(-1)
    return F.kl_div(F.log_softmax(p_logits, -1), F.log_softmax(p0_logits, -1), log_target=True,
                    reduction="batchmean")


class CrossEntropy:
    """Cross-entropy of the classifier's logits (chapter 5)."""

    def scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        feats = model.features(x)
        out = model.head(feats)
        return feats, F.cross_entropy(out, y), (out.argmax(1) == y).float().mean().item()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, step: int) -> Step:
        _, loss, acc = self.scores(model, x, y)
        return loss, acc


class FLYP:
    """FLYP (chapter 6): each image against a caption of its class, a random template per image
    and step; every (class, template) caption is tokenised once (row ``class · T + template``)."""

    def __init__(self, bundle: ClipBundle, classnames: Sequence[str], captions: Sequence[str],
                 labels: np.ndarray, seed: int, mask_same_class: bool = False):
        self.captions, self.labels, self.seed, self.mask = list(captions), labels, seed, mask_same_class
        self.tokens = bundle.tokenizer([t.format(c) for c in classnames for t in self.captions]).to(bundle.device)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, step: int) -> Step:
        pick = np.random.default_rng([self.seed, step, 1]).integers(len(self.captions), size=len(idx))
        rows = torch.from_numpy(self.labels[idx] * len(self.captions) + pick).to(x.device)
        img = F.normalize(model.clip.encode_image(x), dim=-1)
        txt = F.normalize(model.clip.encode_text(self.tokens[rows]), dim=-1)
        return flyp_loss(img, txt, model.clip.logit_scale.exp(), y if self.mask else None), float("nan")


class CARFT(CrossEntropy):
    """CAR-FT (chapter 7): p₀(context|x) from the frozen start encoder's features, computed once
    for the whole training set, against p_θ(context|x) of the model being trained."""

    def __init__(self, bundle: ClipBundle, start: nn.Module, train, classnames: Sequence[str],
                 templates: Sequence[str], beta: float, context: str, seed: int, autocast: Callable | None):
        self.frozen = frozen_features(start, train, bundle.preprocess, autocast)
        self.ctx = context_directions(bundle, classnames, templates, context, seed)
        self.scale, self.beta = bundle.model.logit_scale.exp().item(), beta

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, step: int) -> Step:
        feats, loss, acc = self.scores(model, x, y)
        p0 = context_logits(self.frozen[torch.from_numpy(idx)].to(x.device), self.ctx, self.scale)
        return loss + self.beta * context_kl(p0, context_logits(feats, self.ctx, self.scale)), acc


def build_loss(cfg, bundle: ClipBundle, start: nn.Module, train, classnames: Sequence[str],
               templates: Sequence[str], captions: Sequence[str], autocast: Callable | None = None):
    """The loss ``cfg.loss`` names, ready for the training loop (``cfg``: a ``FinetuneConfig``)."""
    if cfg.loss == "flyp":
        return FLYP(bundle, classnames, captions, np.asarray(train.labels), cfg.seed, cfg.flyp_mask_same_class)
    if cfg.loss == "carft":
        return CARFT(bundle, start, train, classnames, templates, cfg.carft_beta, cfg.carft_context, cfg.seed,
                     autocast)
    return CrossEntropy()
