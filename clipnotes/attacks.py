"""L∞ adversarial attacks in pixel space: FGSM, PGD and CW (margin loss), all at budget ε.

``classify(x)`` maps images in [0, 1] (N, 3, H, W) to logits; attacks keep the perturbed
images in [0, 1] and within ε of the originals. (CLAP's code attacks *normalised* images
and clamps them to [0, 1]; pixel space is the textbook setting, so numbers differ.)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Classifier = Callable[[torch.Tensor], torch.Tensor]


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, confidence: float = 50.0) -> torch.Tensor:
    """Carlini–Wagner margin to maximise: best wrong logit minus true logit, capped at ``confidence``."""
    labels = labels.to(logits.device)
    true = logits.gather(1, labels[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).max(1).values
    return (other - true).clamp(max=confidence).sum()


def fgsm(classify: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float = 0.031) -> torch.Tensor:
    """One signed-gradient step of size ε on the cross-entropy."""
    x = x.detach().clone().requires_grad_(True)
    out = classify(x)
    loss = F.cross_entropy(out, y.to(out.device))
    (grad,) = torch.autograd.grad(loss, x)
    return _project(x + eps * grad.sign(), x.detach(), eps).detach()


def pgd(classify: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float = 0.031, steps: int = 20,
        step_size: float | None = None, loss: str = "ce", random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent (``loss="ce"``: PGD; ``loss="cw"``: CW-∞ with the margin loss)."""
    step_size = eps / 10 if step_size is None else step_size
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps
        x_adv = _project(x + noise, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = classify(x_adv)
        obj = F.cross_entropy(out, y.to(out.device)) if loss == "ce" else cw_margin(out, y)
        (grad,) = torch.autograd.grad(obj, x_adv)
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def robust_accuracy(classify: Classifier, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float = 0.031,
                    batch_size: int = 128, seed: int = 0, steps: int = 20) -> float:
    """Accuracy under ``attack`` ("none", "fgsm", "pgd", "cw"; the last two take ``steps`` steps)."""
    g = torch.Generator().manual_seed(seed)
    correct = 0
    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        if attack == "fgsm":
            xb = fgsm(classify, xb, yb, eps)
        elif attack in ("pgd", "cw"):
            xb = pgd(classify, xb, yb, eps, steps=steps, loss="ce" if attack == "pgd" else "cw", generator=g)
        elif attack != "none":
            raise ValueError(f"unknown attack {attack!r}")
        with torch.no_grad():
            correct += int((classify(xb).argmax(1).cpu() == yb.cpu()).sum())
    return correct / len(x)
