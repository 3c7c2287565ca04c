"""Weight-space ensembling (WiSE-FT): θ(α) = (1 − α)·θ₀ + α·θ₁, key by key."""
from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from .utils import ClipnotesError


def interpolate_state_dicts(theta0: Mapping[str, torch.Tensor], theta1: Mapping[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * theta0 + alpha * theta1`` for every tensor; keys and shapes must match."""
    if not 0.0 <= alpha <= 1.0:
        raise ClipnotesError(f"alpha must be in [0, 1], got {alpha}")
    missing, extra = sorted(set(theta0) - set(theta1)), sorted(set(theta1) - set(theta0))
    if missing or extra:
        raise ClipnotesError(f"cannot interpolate: the state dicts have different keys "
                             f"(only in the first: {missing[:3]}, only in the second: {extra[:3]})")
    out = {}
    for k, a in theta0.items():
        b = theta1[k]
        if a.shape != b.shape:
            raise ClipnotesError(f"cannot interpolate: {k} has shape {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.is_floating_point():
            out[k] = (1 - alpha) * a + alpha * b.to(a.dtype)
        else:                                      # integer buffers (e.g. counters) are not averaged
            out[k] = (a if alpha < 0.5 else b).clone()
    return out


def wise(model0: nn.Module, model1: nn.Module, alpha: float) -> nn.Module:
    """A new model whose weights interpolate ``model0`` (zero-shot) and ``model1`` (fine-tuned)."""
    mixed = copy.deepcopy(model0)
    mixed.load_state_dict(interpolate_state_dicts(model0.state_dict(), model1.state_dict(), alpha))
    return mixed.eval()


#: WiSE-FT's default sweep: α = 0, 0.1, …, 1.
ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def wise_sweep(model0: nn.Module, model1: nn.Module, evaluate, alphas=ALPHAS, progress_bar: bool = True) -> list[dict]:
    """``evaluate(θ(α))`` for every α: a list of ``{"alpha": α, **scores}`` rows."""
    from .utils import progress

    rows = []
    for a in progress(alphas, desc="WiSE sweep", disable=not progress_bar or None):
        rows.append({"alpha": float(a), **evaluate(wise(model0, model1, float(a)))})
    return rows
