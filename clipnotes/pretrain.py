"""Pretraining the tiny CLIP from scratch on the mini world (``python -m clipnotes pretrain-mini``).

The recipe is CLIP's: symmetric InfoNCE (``open_clip.ClipLoss``) over a batch of
image-caption pairs, a learnable temperature initialised to ln(1/0.07) and clamped at
ln(100) after every step, AdamW (beta2 0.98, eps 1e-6, weight decay 0.2 on matrices),
linear warmup then cosine decay. Batch ``b`` of step ``s`` holds items
``s*b ... s*b+b-1`` of the world's ``pretrain`` stream, so a run is a pure function of
its config and a killed run resumes exactly where it stopped.

``crop_share`` > 0 (``pretrain-mini --crops``) shows that share of every batch as random
resized crops with flips (TPT's views), the rest whole. The mini world draws every shape whole,
while real CLIP's web images show objects at every scale and often cut off by the frame; the
crops stand in for that variety, at a price: a crop can cut away the shape its caption names, or
make a "small" one look large. Chapter 12 compares test-time prompt tuning on both models.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from . import world as W
from .augment import apply_crops, crop_boxes
from .models import MINI_MODEL, create_mini, mini_tokenizer
from .evaluate import accuracy_by_group, logits
from .optim import param_groups, set_lr, warmup_cosine
from .templates import PHOTO_TEMPLATE
from .utils import (ClipnotesError, code_fingerprint, load_torch, progress, save_json, save_torch, seed_everything,
                    sha256_file, stable_hash)
from .zeroshot import zero_shot_head


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a pretraining run."""

    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.2
    warmup: int = 300
    world_seed: int = 0
    init_seed: int = 0
    eval_every: int = 250
    eval_per_domain: int = 200
    threads: int = 2
    # chapter 12's second model: this share of every batch shown as random resized crops
    crop_share: float = 0.0
    crop_scale_min: float = 0.08

    def __post_init__(self):
        if not 0 <= self.crop_share <= 1 or not 0 < self.crop_scale_min <= 1:
            raise ClipnotesError(f"crop_share must lie in [0, 1] and crop_scale_min in (0, 1], got "
                                 f"{self.crop_share} and {self.crop_scale_min}")

    @property
    def key(self) -> str:
        cfg = dict(dataclasses.asdict(self), model=open_clip.get_model_config(MINI_MODEL), world=W.WORLD_VERSION,
                   world_fingerprint=W.fingerprint(),
                   code=code_fingerprint("pretrain.py", "tokenizer.py", *(("augment.py",) if self.crop_share else ())))
        cfg.pop("eval_every"), cfg.pop("threads")
        if not self.crop_share:                  # without crops, the fields hashed are those of before crops
            cfg.pop("crop_share"), cfg.pop("crop_scale_min")
        return stable_hash(cfg)


#: The share of each batch ``pretrain-mini --crops`` shows as crops.
CROPS_SHARE = 0.75
#: Crops of pretraining step ``s`` are drawn from a generator seeded ``CROP_SEED + s``.
CROP_SEED = 1_000_003


def pretraining_images(images: torch.Tensor, cfg: PretrainConfig, step: int) -> torch.Tensor:
    """The images of step ``step``'s batch as the model sees them: the first ``crop_share`` of them
    as random resized crops (area share ``crop_scale_min`` to 1, with flips), the rest whole."""
    n = round(cfg.crop_share * len(images))
    if n == 0:
        return images
    theta = crop_boxes(n, (cfg.crop_scale_min, 1.0), generator=torch.Generator().manual_seed(CROP_SEED + step))
    x = images.float() / 255.0
    return torch.cat([apply_crops(x[:n], theta), x[n:]])


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """The learning rate of pretraining step ``step``: warm-up, then cosine."""
    return warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)


class HeldOut:
    """A small held-out probe of zero-shot accuracy per domain, for the training log."""

    def __init__(self, cfg: PretrainConfig):
        self.ds = W.World(cfg.world_seed).dataset("pretrain-heldout", cfg.eval_per_domain * len(W.DOMAINS),
                                                  domain=W.Cycle(W.DOMAINS))
        self.images = self.ds.images()
        self.labels = torch.from_numpy(self.ds.labels)
        self.domains = self.ds.factors.named("domain")

    @torch.no_grad()
    def __call__(self, bundle) -> dict[str, float]:
        bundle.model.eval()
        feats = torch.cat([bundle.encode_images(self.images[i:i + 500]) for i in range(0, len(self.images), 500)])
        head = zero_shot_head(bundle, W.CLASSNAMES, [PHOTO_TEMPLATE])
        acc = accuracy_by_group(logits(feats, head), self.labels, self.domains)
        # image -> caption retrieval among the held-out captions (R@1)
        txt = bundle.encode_texts(self.ds.captions())
        r1 = (feats @ txt.T).argmax(1).eq(torch.arange(len(feats))).float().mean().item()
        bundle.model.train()
        return {**{f"zs_{k}": v for k, v in acc.items()}, "zs_mean": float(np.mean(list(acc.values()))),
                "retrieval_r1": r1}


def pretrain(cfg: PretrainConfig, run_dir: str | Path, out: str | Path | None = None,
             save_every: int = 250, stop_after: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) a run in ``run_dir``; write the final weights and card to ``out``.

    ``stop_after`` stops early after that many steps of this call (used to test resuming).
    Returns the card: config, sha256 of the weights, training log, wall time.
    """
    torch.set_num_threads(cfg.threads)
    run_dir = Path(run_dir)
    state_path = run_dir / "state.pt"
    seed_everything(cfg.init_seed)
    bundle = create_mini(None, seed=cfg.init_seed)
    model, tok = bundle.model, mini_tokenizer()
    model.train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    step, log, elapsed = 0, [], 0.0
    if state_path.exists():
        state = load_torch(state_path, "pretraining state")
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
        step, log, elapsed = int(state["step"]), _unpack_log(state["log"]), float(state["elapsed"])
    heldout = HeldOut(cfg)
    world = W.World(cfg.world_seed)
    key = world.key("pretrain")
    bar = progress(total=cfg.steps, initial=step, desc="pretrain-mini", disable=quiet or None)
    t0, run_loss, n_loss, done_here = time.time() - elapsed, 0.0, 0, 0
    while step < cfg.steps:
        idx = np.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        f = W.sample_factors(key, idx, natural=True)
        images = bundle.preprocess(pretraining_images(W.render(f), cfg, step))
        texts = tok(W.captions(f))
        set_lr(opt, lr_at(step, cfg))
        img_f, txt_f, scale = model(images, texts)
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step, done_here = step + 1, done_here + 1
        run_loss, n_loss = run_loss + loss.item(), n_loss + 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            entry = {"step": step, "loss": run_loss / n_loss, "logit_scale": model.logit_scale.exp().item(),
                     "lr": lr_at(step - 1, cfg), "minutes": (time.time() - t0) / 60, **heldout(bundle)}
            log.append(entry)
            run_loss, n_loss = 0.0, 0
            bar.set_postfix(loss=f"{entry['loss']:.2f}", scale=f"{entry['logit_scale']:.1f}",
                            zs=f"{entry['zs_mean']:.2f}")
        if step % save_every == 0 or step == cfg.steps:
            save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "log": _pack_log(log), "elapsed": time.time() - t0}, state_path)
        if stop_after is not None and done_here >= stop_after:
            bar.close()
            return {"stopped_at": step}
    bar.close()
    out = Path(out) if out else run_dir / "mini_clip.pt"
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_torch(weights, out)
    card = {"model": MINI_MODEL, "config": dataclasses.asdict(cfg), "config_key": cfg.key,
            "world_version": W.WORLD_VERSION, "sha256": sha256_file(out), "vocab_size": tok.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, "open_clip": open_clip.__version__,
            "minutes": (time.time() - t0) / 60, "log": log}
    save_json(card, out.with_suffix(".json"))
    return card


def _pack_log(log: list[dict[str, float]]) -> dict[str, list[float]]:
    """Logs travel in checkpoints as tensors so ``weights_only=True`` can load them."""
    keys = list(log[0]) if log else []
    return {k: torch.tensor([e[k] for e in log], dtype=torch.float64) for k in keys}


def _unpack_log(packed: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    keys = list(packed)
    n = len(packed[keys[0]]) if keys else 0
    return [{k: (int(packed[k][i]) if k == "step" else float(packed[k][i])) for k in keys} for i in range(n)]
