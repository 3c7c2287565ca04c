"""Weight-space ensembling, WiSE-FT (chapter 5): θ(α) = (1 − α)·θ₀ + α·θ₁, key by key,
swept over α and read at matched ID accuracy (chapters 6–7 compare their curves)."""
from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch
from torch import nn

from .utils import ClipnotesError, progress, save_json

if TYPE_CHECKING:
    from .evaluate import EvalSets
    from .finetune import FinetuneRun
    from .profiles import Profile


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
            out[k] = (1 - alpha) * a + alpha * b.to(a.device, a.dtype)
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

#: A coarser sweep for the chapters that compare several methods' curves (half the evaluations).
COARSE_ALPHAS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)

#: What every α grid becomes in the paper check (large models at random weights on the CPU):
#: both ends and the middle, so every line of a sweep runs with a few evaluations.
CHECK_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0)


def alphas(profile: "Profile", grid: Sequence[float] = ALPHAS) -> tuple[float, ...]:
    """The α grid a chapter sweeps (chapters 5, 10 and 13): ``grid`` itself, or :data:`CHECK_ALPHAS` in
    the paper check."""
    return CHECK_ALPHAS if profile.paper_check else tuple(float(a) for a in grid)


def wise_sweep(model0: nn.Module, model1: nn.Module, evaluate, alphas=ALPHAS, progress_bar: bool = True) -> list[dict]:
    """``evaluate(θ(α))`` for every α: a list of ``{"alpha": α, **scores}`` rows."""

    rows = []
    for a in progress(alphas, desc="WiSE sweep", disable=not progress_bar or None):
        rows.append({"alpha": float(a), **evaluate(wise(model0, model1, float(a)))})
    return rows


def ood_at_id(sweep, id_value: float, tol: float = 0.0, id_col: str = "ID", ood_col: str = "OOD mean") -> float:
    """The best OOD accuracy a WiSE curve reaches at an ID accuracy of at least ``id_value - tol``.

    The matched-ID reading of a curve: can the baseline, by choosing α, be as good in
    distribution as a method *and* better out of it? ``sweep`` is a DataFrame indexed by α;
    consecutive α points are joined by straight lines. NaN if the curve never gets there.
    """
    ids, oods = sweep[id_col].to_numpy(float), sweep[ood_col].to_numpy(float)
    t = id_value - tol
    reach = [y for x, y in zip(ids, oods) if x >= t]
    for (x0, y0), (x1, y1) in zip(zip(ids[:-1], oods[:-1]), zip(ids[1:], oods[1:])):
        if min(x0, x1) < t <= max(x0, x1):                 # the segment crosses ID = t
            reach.append(y0 + (t - x0) * (y1 - y0) / (x1 - x0))
    return max(reach) if reach else float("nan")


def sweep_run(run: "FinetuneRun", evals: "EvalSets", alphas: Sequence[float] = ALPHAS,
              autocast: Callable | None = None) -> list[dict]:
    """The WiSE α sweep of a run on ``evals`` (rows ``{"alpha": α, set: accuracy, …}``).

    Every evaluated α is cached beside the run, so chapters sharing a run evaluate each
    mixture once; a later sweep over other α evaluates only the new ones.
    """
    path = run.run_dir / f"sweep-{evals.key}.json" if run.run_dir is not None and evals.key else None
    done = json.loads(path.read_text()) if path is not None and path.exists() else {}
    todo = [float(a) for a in alphas if f"{float(a):.4f}" not in done]
    if todo:
        for row in wise_sweep(run.start, run.end, lambda m: evals.accuracy(m, autocast), todo):
            done[f"{row['alpha']:.4f}"] = row
        if path is not None:
            save_json(done, path)
    return [done[f"{float(a):.4f}"] for a in alphas]
