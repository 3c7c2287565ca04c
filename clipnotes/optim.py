"""The one learning-rate schedule of the book, and open_clip's weight-decay split.

Pretraining (chapter 1), fine-tuning (chapters 5–7) and WiSE-FT's linear head warm up
linearly and decay with a cosine; CoOp (chapter 4) uses the cosine after a constant epoch.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def cosine(t: float, total: float, lr: float) -> float:
    """Cosine decay from ``lr`` at ``t = 0`` to zero at ``t = total`` (held at zero after)."""
    return 0.5 * lr * (1 + math.cos(math.pi * min(1.0, t / max(1, total))))


def warmup_cosine(step: int, steps: int, warmup: int, lr: float) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return cosine(step - warmup, steps - warmup, lr)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in opt.param_groups:
        group["lr"] = lr


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's split: no weight decay on gains, biases, and the temperature."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        excluded = p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
        (no_decay if excluded else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
