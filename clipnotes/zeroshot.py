"""Zero-shot classification: class names + templates -> a linear head of text embeddings
(chapter 2), and the template ensembles and selection of prompt engineering (chapter 3).

The head is built by open_clip's ``build_zero_shot_classifier``: for every class, fill
each template, encode, L2-normalise, average over templates, renormalise. A prediction is
the class whose column has the largest cosine similarity with the normalised image feature.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import open_clip
import torch

from .evaluate import accuracy, logits
from .models import ClipBundle
from .templates import PHOTO_TEMPLATE
from .utils import ClipnotesError

def check_classnames(classnames: Sequence[str]) -> list[str]:
    classnames = list(classnames)
    if not classnames:
        raise ClipnotesError("the class list is empty; pass at least one class name")
    if any(not isinstance(c, str) or not c.strip() for c in classnames):
        raise ClipnotesError("class names must be non-empty strings")
    return classnames


def zero_shot_head(bundle: ClipBundle, classnames: Sequence[str],
                   templates: Sequence[str | Callable[[str], str]] = (PHOTO_TEMPLATE,)) -> torch.Tensor:
    """Text-embedding head, (D, C): one unit column per class (template-averaged)."""
    classnames = check_classnames(classnames)
    if not templates:
        raise ClipnotesError("the template list is empty; pass at least one template such as 'a photo of a {}.'")
    was_training = bundle.model.training
    bundle.model.eval()
    head = open_clip.build_zero_shot_classifier(bundle.model, bundle.tokenizer, classnames, list(templates),
                                                num_classes_per_batch=None, device=bundle.device)
    bundle.model.train(was_training)
    return head.float()


def template_heads(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str]) -> dict[str, torch.Tensor]:
    """One single-template head per template (what ensembles and template selection combine)."""
    return {t: zero_shot_head(bundle, classnames, [t]) for t in templates}


def ensemble_of_heads(heads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average unit-column heads and renormalise: the embedding-space ensemble of their templates."""
    heads = list(heads)
    if not heads:
        raise ClipnotesError("no heads to ensemble; pass at least one")
    return torch.nn.functional.normalize(sum(heads), dim=0)


def probability_ensemble(features: torch.Tensor, heads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The other ensemble: average the softmax predictions of one classifier per template, (N, C)."""
    return torch.stack([logits(features, h).softmax(1) for h in heads]).mean(0)


def forward_selection(heads: Mapping[str, torch.Tensor], features: torch.Tensor, labels: torch.Tensor,
                      val: torch.Tensor) -> list[dict[str, object]]:
    """Greedy forward selection of templates (the CLIP notebook's way to its 7 ImageNet templates).

    Start empty; repeatedly add the template whose ensemble scores best on the ``val`` rows;
    returns one row per step with the validation and held-out (``~val``) accuracy.
    """
    def score(templates, rows):
        return accuracy(logits(features[rows], ensemble_of_heads([heads[t] for t in templates])), labels[rows])

    chosen: list[str] = []
    history = []
    while len(chosen) < len(heads):
        val_scores = {t: score(chosen + [t], val) for t in heads if t not in chosen}
        best = max(val_scores, key=val_scores.get)
        chosen.append(best)
        history.append({"n": len(chosen), "template": best, "validation": val_scores[best],
                        "test": score(chosen, ~val)})
    return history
