"""The starting point θ₀ of chapters 5–7: CLIP as an image classifier.

* :class:`ZeroShotClassifier` — the image encoder and a linear head started at the
  zero-shot text embeddings (× the logit scale, features L2-normalised, bias 0), as in WiSE-FT.
* :class:`ClipClassifier` — the whole CLIP, its head rebuilt from its own text tower (FLYP).
"""
from __future__ import annotations

import copy
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .models import ClipBundle
from .zeroshot import zero_shot_head

class ZeroShotClassifier(nn.Module):
    """An image encoder and a linear head started at the zero-shot classifier (WiSE-FT's)."""

    def __init__(self, visual: nn.Module, head: torch.Tensor, scale: float):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(head.shape[0], head.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(scale * head.T)
            self.head.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from L2-normalised features: ``forward(x) == classify(features(x))``."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class ClipClassifier(nn.Module):
    """A whole CLIP used as a classifier: the head is built from its own text tower (FLYP)."""

    def __init__(self, clip: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str]):
        super().__init__()
        self.clip = clip
        self.tokenizer, self.classnames, self.templates = tokenizer, list(classnames), list(templates)
        self._head: torch.Tensor | None = None

    def load_state_dict(self, *args, **kwargs):
        self._head = None
        return super().load_state_dict(*args, **kwargs)

    def train(self, mode: bool = True):
        self._head = None
        return super().train(mode)

    def head(self) -> torch.Tensor:
        if self._head is None or self.training:
            device = next(self.clip.parameters()).device
            with torch.no_grad():
                h = open_clip.build_zero_shot_classifier(self.clip, self.tokenizer, self.classnames, self.templates,
                                                         num_classes_per_batch=None, device=device)
            self._head = h.float()
        return self._head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(x), dim=-1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from L2-normalised features: ``forward(x) == classify(features(x))``."""
        return self.clip.logit_scale.exp() * features @ self.head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def zero_shot_classifier(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str],
                         loss: str = "ce") -> nn.Module:
    """The starting point θ₀ of a run: a fresh copy, never the bundle's own modules."""
    if loss == "flyp":
        return ClipClassifier(copy.deepcopy(bundle.model), bundle.tokenizer, classnames, templates)
    head = zero_shot_head(bundle, classnames, templates)
    return ZeroShotClassifier(copy.deepcopy(bundle.model.visual), head,
                              bundle.model.logit_scale.exp().item()).to(bundle.device)
