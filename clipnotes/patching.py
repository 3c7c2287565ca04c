"""PAINT, patching by interpolation (chapter 13): fine-tune the image encoder on a task the
zero-shot model is bad at, behind that task's frozen zero-shot head, then move back towards the
zero-shot weights, θ(α) = (1 − α)·θ₀ + α·θ₁ (Ilharco et al., 2022).

Every task keeps its own zero-shot head (the open vocabulary), so one interpolated encoder is
judged on the patched task and on the tasks it already supported.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .profiles import Profile

from .utils import ClipnotesError, progress
from .wise import alphas, wise


#: Chapter 13's grid of PAINT's mixing coefficient α (0 is the zero-shot model, 1 the fine-tuned one).
PAINT_ALPHAS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def alpha_grid(profile: Profile) -> tuple[float, ...]:
    """Chapter 13's α grid (:func:`clipnotes.wise.alphas`: three points in the paper check)."""
    return alphas(profile, PAINT_ALPHAS)


@torch.no_grad()
def correct_by_head(model: nn.Module, evals, heads: Mapping[str, torch.Tensor | None],
                    autocast: Callable | None = None) -> dict[str, np.ndarray]:
    """Per-image 1/0 of ``model``'s encoder on every set of ``evals`` (an
    :class:`~clipnotes.evaluate.EvalSets`), each set judged by its own zero-shot head
    ``heads[set]`` (D, C) on the L2-normalised features; ``None``: the model's own classifier."""
    out = {}
    for name, (feats, labels) in evals.features(model, autocast).items():
        if name not in heads:
            raise ClipnotesError(f"no head for the evaluation set {name!r}; give one per set ({list(heads)})")
        head = heads[name]
        device = next(model.parameters()).device
        logits = model.classify(feats.to(device)) if head is None else feats.to(head.device) @ head.float()
        out[name] = (logits.argmax(1).cpu() == labels).numpy().astype(float)
    return out


def patch_sweep(model0: nn.Module, model1: nn.Module, evals, heads: Mapping[str, torch.Tensor | None],
                alphas: Sequence[float], autocast: Callable | None = None) -> list[dict]:
    """PAINT's curve: for every α, ``{"alpha": α, set: accuracy, …}`` of θ(α) on ``evals``'s
    sets, each judged by its own head (:func:`correct_by_head`)."""
    rows = []
    for a in progress(alphas, desc="PAINT sweep"):
        right = correct_by_head(wise(model0, model1, float(a)), evals, heads, autocast)
        rows.append({"alpha": float(a), **{k: float(v.mean()) for k, v in right.items()}})
    return rows


def choose_alpha(rows: Sequence[Mapping[str, float]], supported: str, tolerance: float = 0.01) -> float:
    """The largest α whose ``supported`` accuracy stays within ``tolerance`` of α = 0's (PAINT's
    "within one point of the zero-shot model"); read it on held-out sets, never on the test sets."""
    by_alpha = {float(r["alpha"]): float(r[supported]) for r in rows}
    if 0.0 not in by_alpha:
        raise ClipnotesError("the sweep needs α = 0 (the zero-shot model) to choose α against")
    keep = [a for a, acc in by_alpha.items() if acc >= by_alpha[0.0] - tolerance]
    return max(keep)
