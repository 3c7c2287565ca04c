"""CAR-FT's context (chapter 7): context directions from the templates, the context
distribution p(context|x) they define, and readouts of which domain it names."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .models import ClipBundle
from .utils import article
from .zeroshot import zero_shot_head

def context_directions(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str],
                       kind: str = "templates", seed: int = 0) -> torch.Tensor:
    """CAR-FT's context weights (K, D): each template's embedding averaged over classes.

    ``kind="random"`` gives as many random unit directions instead (the control).
    """
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        d = bundle.model.text_projection.shape[1]
        return F.normalize(torch.randn(len(templates), d, generator=g), dim=-1).to(bundle.device)
    rows = [zero_shot_head(bundle, classnames, [t]).mean(1) for t in templates]       # (D,) each
    return F.normalize(torch.stack(rows), dim=-1)


def domain_contexts(domain_words: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """Templates "a {domain word} of a {}." and the domain each one names (to read p(context|x))."""
    templates, domains = [], []
    for domain, words in domain_words.items():
        for w in words:
            templates.append(f"{article(w)} {w} of a {{}}.")
            domains.append(domain)
    return templates, domains


def context_logits(features: torch.Tensor, directions: torch.Tensor, scale: float) -> torch.Tensor:
    """Logits of p(context|x): scaled cosine similarity of each image to each context direction."""
    return scale * features.float() @ directions.to(features.device).float().T


def domain_read(ctx_logits: torch.Tensor, ctx_domains: Sequence[str], true_domain: str) -> np.ndarray:
    """Per image, 1 where the domain with the most context probability mass is its true domain."""
    names = sorted(set(ctx_domains))
    member = torch.tensor([[d == n for d in ctx_domains] for n in names], dtype=torch.float32)   # (M, K)
    mass = ctx_logits.softmax(-1) @ member.to(ctx_logits.device).T                              # (N, M)
    return (mass.argmax(1) == names.index(true_domain)).cpu().numpy().astype(float)


def domain_read_accuracy(ctx_logits: torch.Tensor, ctx_domains: Sequence[str], true_domain: str) -> float:
    """How often the domain with the most context probability mass is the image's true domain."""
    return float(domain_read(ctx_logits, ctx_domains, true_domain).mean())
