"""Model soups (chapter 10): average the weights of models fine-tuned from one start.

A *uniform soup* averages every ingredient; a *greedy soup* adds ingredients in order of
held-out accuracy and keeps one only if the held-out accuracy of the running average rises
(Wortsman et al., 2022). The soup is one model; the *logit ensemble* it is compared with runs
every ingredient. Ingredients are chapter 5's fine-tuning recipe with drawn hyper-parameters.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .finetune import FinetuneConfig, recipe
from .profiles import Profile
from .stats import Gap, paired_gap
from .tasks import draw_seed
from .utils import ClipnotesError

#: The weight decays an ingredient draws from (the paper's ingredients span 8e-5 … 0.53).
WEIGHT_DECAYS: tuple[float, ...] = (0.0, 0.1, 0.3)


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of every floating-point tensor over ``state_dicts`` (integer buffers: the first's)."""
    if not state_dicts:
        raise ClipnotesError("a soup needs at least one ingredient")
    keys = list(state_dicts[0])
    for sd in state_dicts[1:]:
        if list(sd) != keys:
            raise ClipnotesError("cannot average: the ingredients' state dicts have different keys "
                                 "(a soup needs one architecture fine-tuned from one start)")
    out = {}
    for k in keys:
        first = state_dicts[0][k]
        if first.is_floating_point():
            out[k] = torch.stack([sd[k].to(first.device, first.dtype) for sd in state_dicts]).mean(0)
        else:
            out[k] = first.clone()
    return out


def uniform_soup(models: Sequence[nn.Module]) -> nn.Module:
    """One model whose weights are the mean of ``models``' weights."""
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    return soup.eval()


@dataclass
class GreedySoup:
    """A greedy soup: the model, the ingredients it kept (indices), and every step's held-out score."""

    model: nn.Module
    kept: list[int]
    log: list[dict]


def greedy_soup(models: Sequence[nn.Module], held_out: Callable[[nn.Module], float]) -> GreedySoup:
    """The paper's greedy soup: sort by ``held_out`` accuracy, start from the best ingredient, and
    add each next one to the average only if the held-out accuracy strictly rises.

    ``held_out`` must score a split that is not the test set; on it the soup is never worse
    than the best ingredient, by construction.
    """
    scores = [held_out(m) for m in models]
    order = sorted(range(len(models)), key=lambda i: -scores[i])
    kept, best = [order[0]], scores[order[0]]
    log = [{"ingredient": order[0], "held-out": best, "kept": True}]
    soup = models[order[0]]
    for i in order[1:]:
        candidate = uniform_soup([models[j] for j in kept + [i]])
        score = held_out(candidate)
        log.append({"ingredient": i, "held-out": score, "kept": score > best})
        if score > best:
            kept, best, soup = kept + [i], score, candidate
    return GreedySoup(soup.eval(), kept, log)


@torch.no_grad()
def ensemble_correct(models: Sequence[nn.Module], evals, autocast: Callable | None = None) -> dict[str, np.ndarray]:
    """Per-image 1/0 of the logit ensemble of ``models`` on every set of ``evals`` (an
    :class:`~clipnotes.evaluate.EvalSets`): the mean of the ingredients' logits, from the
    features ``evals`` already computed for each of them."""
    total: dict[str, torch.Tensor] = {}
    for m in models:
        device = next(m.parameters()).device
        for name, (feats, _) in evals.features(m, autocast).items():
            z = m.classify(feats.to(device)).float().cpu()
            total[name] = total[name] + z if name in total else z
    return {name: (z.argmax(1) == evals.labels[name]).numpy().astype(float) for name, z in total.items()}


def ingredient_recipes(profile: Profile, k: int = 4, lr_spread: float = 3.0) -> list[FinetuneConfig]:
    """Chapter 10's ingredients: chapter 5's recipe first (its run is reused), then ``k − 1``
    runs of half its steps with drawn learning rate (log-uniform within ``lr_spread``× of the
    recipe's), weight decay (:data:`WEIGHT_DECAYS`) and data order, seeded by the profile's
    seed (the paper's ingredients differ in epochs too)."""
    if k < 2:
        raise ClipnotesError("a soup needs at least two ingredients")
    base = recipe(profile, "ce")
    rng = np.random.default_rng([profile.seed, 10])
    out = [base]
    for i in range(1, k):
        lr = float(base.lr * np.exp(rng.uniform(-np.log(lr_spread), np.log(lr_spread))))
        out.append(dataclasses.replace(base, lr=float(f"{lr:.3g}"), weight_decay=float(rng.choice(WEIGHT_DECAYS)),
                                       seed=draw_seed(base.seed, i), steps=max(1, base.steps // 2),
                                       warmup=min(base.warmup, max(1, base.steps // 4))))
    return out


def divergent_recipe(profile: Profile, lr_factor: float = 30.0) -> FinetuneConfig:
    """An ingredient meant to leave the shared basin: a drawn ingredient's recipe at ``lr_factor``×
    chapter 5's learning rate (the lesson of model-soups issue 5: too wide an lr range breaks the soup),
    for half that ingredient's steps — at such a rate the run leaves the basin within them."""
    first = ingredient_recipes(profile, 2)[1]
    steps = max(1, first.steps // 2)
    return dataclasses.replace(first, lr=recipe(profile, "ce").lr * lr_factor, seed=first.seed + 99,
                               steps=steps, warmup=min(first.warmup, max(1, steps // 4)))


def midpoint_loss(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], mid: Mapping[str, np.ndarray],
                  sets: Sequence[str]) -> Gap:
    """The accuracy barrier on a straight path: the mean of the two endpoints' accuracy minus the
    midpoint's, paired on the same images (> 0 is a barrier)."""
    ends = {s: (np.asarray(a[s]) + np.asarray(b[s])) / 2 for s in sets}
    return paired_gap(ends, mid, sets)
