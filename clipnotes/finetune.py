"""One end-to-end fine-tuning loop for CLIP image classifiers (chapters 5–7); the loss plugs in.

The run starts from :func:`clipnotes.classifiers.zero_shot_classifier` and trains with one of
:mod:`clipnotes.losses` (``ce``, ``flyp``, ``carft``), all called the same way, so the loop
has no branch on the loss. AdamW, linear warm-up then cosine (:mod:`clipnotes.optim`),
gradient clipping, bf16/fp16 autocast on CUDA, a progress bar; the batch of step ``s`` is a
pure function of ``(seed, s)``, and the run state is saved atomically so an interrupted run
resumes to the same result.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .classifiers import zero_shot_classifier
from .data import ImageDataset
from .evaluate import frozen_features
from .losses import build_loss
from .models import ClipBundle
from .optim import set_lr, warmup_cosine
from .profiles import Profile
from .tasks import Benchmark
from .utils import ClipnotesError, code_fingerprint, load_torch, no_autocast, progress, save_torch, stable_hash
from .zeroshot import zero_shot_head

LOSSES = ("ce", "flyp", "carft")
#: Where the classifier's head starts (LP-FT's question): the zero-shot text head, a random
#: head, or a linear probe trained on the frozen features first.
HEAD_INITS = ("zero-shot", "random", "probe")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that determines a fine-tuning run (besides the data and the start model)."""

    loss: str = "ce"
    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup: int = 30
    grad_clip: float | None = 1.0
    seed: int = 0
    carft_beta: float = 10.0
    carft_context: str = "templates"        # "templates" or "random" (the control)
    flyp_mask_same_class: bool = False      # FLYP's optional fix for same-class negatives
    head_init: str = "zero-shot"            # "zero-shot", "random" or "probe" (LP-FT), for ce and carft
    freeze_head: bool = False               # train the image encoder only (PAINT's frozen zero-shot head)
    threads: int = 2

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ClipnotesError(f"unknown fine-tuning loss {self.loss!r}; use one of {LOSSES}")
        if self.carft_context not in ("templates", "random"):
            raise ClipnotesError("carft_context must be 'templates' or 'random'")
        if self.head_init not in HEAD_INITS:
            raise ClipnotesError(f"unknown head_init {self.head_init!r}; use one of {HEAD_INITS}")
        if self.head_init != "zero-shot" and self.loss == "flyp":
            raise ClipnotesError("FLYP builds its head from the text tower: head_init applies to ce and carft only")
        if self.freeze_head and self.loss == "flyp":
            raise ClipnotesError("FLYP builds its head from the text tower: freeze_head applies to ce and carft only")


def recipe(profile: Profile, loss: str = "ce", **overrides) -> FinetuneConfig:
    """Chapters 5–7's fine-tuning recipe for a profile (WiSE-FT's and FLYP's, scaled to each).

    mini: 200 steps of 64 world photos (3.2 epochs of 4,000), lr 1e-4 (the tiny CLIP trained
    at 1e-3). Batch 64 rather than 128 halves the cost and leaves the chapters' effects in
    place (the training accuracy reaches about 98 % within 50 steps either way).
    paper: about 3 epochs of CIFAR-10 at batch 256, lr 3e-5 (WiSE-FT's ImageNet setting); the
    paper check runs 3 steps of its small batch.
    """
    if profile.name == "mini":
        base = dict(steps=200, batch_size=64, lr=1e-4, warmup=20, threads=2)
    elif profile.paper_check:            # the paper check: every line of the loop, a few steps on the CPU
        base = dict(steps=3, batch_size=profile.train_batch_size, lr=3e-5, warmup=1)
    else:
        base = dict(steps=600, batch_size=256, lr=3e-5, warmup=50)
    return FinetuneConfig(loss=loss, seed=profile.seed, **{**base, **overrides})


@dataclass
class FinetuneRun:
    """A finished run: the model at θ₀ and at θ₁, and the training log."""

    start: nn.Module
    end: nn.Module
    config: FinetuneConfig
    log: list[dict[str, float]]
    seconds: float
    run_dir: Path | None = None


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The training items of step ``step``: a pure function of (seed, step)."""
    return np.random.default_rng([seed, step]).integers(0, n, batch_size)


def finetune(bundle: ClipBundle, train: ImageDataset, classnames: Sequence[str], templates: Sequence[str],
             cfg: FinetuneConfig, run_dir: str | Path | None = None, save_every: int = 50,
             stop_after: int | None = None, autocast: Callable | None = None, quiet: bool = False,
             captions: Sequence[str] | None = None, fp16_scaler: bool = False) -> FinetuneRun | None:
    """Fine-tune from ``bundle``'s zero-shot classifier on ``train`` (chapters 5–7).

    ``templates`` build the heads; FLYP writes its training captions with ``captions``
    (default: ``templates``), which should be true of the training images.

    With ``run_dir`` the run is resumable and its result is reused: a finished run is loaded,
    not retrained. ``stop_after`` stops after that many steps of this call (returns None).
    ``fp16_scaler``: scale the loss as fp16 autocast needs (``profile.fp16_scaler``).
    """
    if len(train) == 0:
        raise ClipnotesError("the training set is empty")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = bundle.device
    start = zero_shot_classifier(bundle, classnames, templates, cfg.loss).to(device)
    if cfg.head_init != "zero-shot":
        init_head(start, bundle, train, classnames, templates, cfg, autocast)
    model = copy.deepcopy(start).train()
    if cfg.freeze_head:
        model.head.requires_grad_(False)
    loss_fn = build_loss(cfg, bundle, start, train, classnames, templates, list(captions or templates), autocast)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=fp16_scaler)
    labels_all = np.asarray(train.labels)
    step, log, spent = 0, [], 0.0
    state_path = Path(run_dir) / "state.pt" if run_dir else None
    if state_path is not None and state_path.exists():
        state = load_torch(state_path, "fine-tuning state")
        model.load_state_dict(state["model"])
        if "opt" in state:                       # a finished run keeps no optimizer state
            opt.load_state_dict(state["opt"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, spent = int(state["step"]), float(state["seconds"])
        log = [dict(zip(state["log_keys"], row.tolist())) for row in state["log"]]
    t0 = time.time() - spent
    bar = progress(total=cfg.steps, initial=step, desc=f"fine-tune ({cfg.loss})", disable=quiet or None)
    done_here = 0
    ac = autocast or no_autocast
    while step < cfg.steps:
        idx = batch_indices(len(train), cfg.batch_size, cfg.seed, step)
        x = bundle.preprocess(train.images(idx).to(device))
        y = torch.from_numpy(labels_all[idx]).to(device)
        lr = warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)
        set_lr(opt, lr)
        with ac():
            loss, acc = loss_fn(model, x, y, idx, step)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()            # without fp16: the plain loss.backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        step, done_here = step + 1, done_here + 1
        log.append({"step": step, "loss": loss.item(), "train_acc": acc, "lr": lr, "seconds": time.time() - t0})
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
        if state_path is not None and (step % save_every == 0 or step == cfg.steps):
            save_torch(run_state(model, opt, scaler, step, cfg.steps, time.time() - t0, log), state_path)
        if stop_after is not None and done_here >= stop_after:
            bar.close()
            return None
    bar.close()
    model.eval()
    return FinetuneRun(start.eval(), model, cfg, log, time.time() - t0, Path(run_dir) if run_dir else None)


def run_state(model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, step: int,
              steps: int, seconds: float, log: list[dict]) -> dict:
    """What a fine-tuning checkpoint holds: weights, step, time and log, and, while the run is
    unfinished, the optimizer and scaler to resume it. A finished run is only ever loaded, never
    resumed, so it drops AdamW's two moments — two thirds of the file (a ViT-B/32 run: 1 GB → 0.35 GB)."""
    keys = list(log[0])
    state = {"model": model.state_dict(), "step": step, "seconds": seconds, "log_keys": keys,
             "log": torch.tensor([[e[k] for k in keys] for e in log], dtype=torch.float64)}
    if step < steps:
        state |= {"opt": opt.state_dict(), "scaler": scaler.state_dict()}
    return state


def init_head(start: nn.Module, bundle: ClipBundle, train: ImageDataset, classnames: Sequence[str],
              templates: Sequence[str], cfg: FinetuneConfig, autocast: Callable | None = None) -> None:
    """LP-FT's starting heads: replace ``start``'s zero-shot head in place.

    ``"random"``: random unit directions at the zero-shot head's scale (fine-tuning from a
    random head). ``"probe"``: chapter 5's linear classifier (:func:`train_linear_head`)
    trained on the frozen start encoder's features of ``train`` — the LP of LP-FT.
    """
    weight, bias = start.head.weight, start.head.bias
    if cfg.head_init == "random":
        g = torch.Generator().manual_seed(cfg.seed)
        directions = F.normalize(torch.randn(weight.shape, generator=g), dim=1).to(weight.device)
        new_w, new_b = directions * weight.detach().norm(dim=1, keepdim=True), torch.zeros_like(bias)
    else:
        feats = frozen_features(start, train, bundle.preprocess, autocast)
        lin = train_linear_head(feats, torch.as_tensor(np.asarray(train.labels)),
                                zero_shot_head(bundle, classnames, templates).cpu(),
                                bundle.model.logit_scale.exp().item(), seed=cfg.seed)
        new_w, new_b = lin.weight.detach(), lin.bias.detach()
    with torch.no_grad():
        weight.copy_(new_w.to(weight.device)), bias.copy_(new_b.to(bias.device))


def train_linear_head(features: torch.Tensor, labels: torch.Tensor, head: torch.Tensor, scale: float,
                      steps: int = 300, lr: float = 1e-3, weight_decay: float = 0.1, batch_size: int = 256,
                      seed: int = 0) -> nn.Linear:
    """WiSE-FT's linear-classifier variant (chapter 5): the encoder stays frozen, only the head trains.

    ``features`` are cached, L2-normalised image features; the head starts at the zero-shot
    classifier (``scale`` × text embeddings, bias 0) and trains with AdamW and the warm-up
    cosine schedule.
    """
    if len(features) == 0:
        raise ClipnotesError("no training features for the linear head")
    lin = nn.Linear(head.shape[0], head.shape[1])
    with torch.no_grad():
        lin.weight.copy_(scale * head.T), lin.bias.zero_()
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = F.normalize(features.float(), dim=-1), torch.as_tensor(labels)
    for step in range(steps):
        idx = torch.from_numpy(batch_indices(len(x), batch_size, seed, step))
        set_lr(opt, warmup_cosine(step, steps, max(1, steps // 10), lr))
        loss = F.cross_entropy(lin(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return lin.eval()


def run_key(bundle: ClipBundle, train: ImageDataset, classnames: Sequence[str], templates: Sequence[str],
            cfg: FinetuneConfig,
            captions: Sequence[str] | None = None) -> str:
    """A cache key for a run: the start weights, the data, the names, the templates, FLYP's
    captions and the config."""
    cfg_d = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "threads"}
    captions = list(captions or templates) if cfg.loss == "flyp" else None
    return stable_hash(bundle.key, train.cache_key, list(classnames), list(templates), captions,
                       cfg_d, code_fingerprint(), code_fingerprint("finetune.py", "losses.py", "classifiers.py", "carft.py"))


def run_finetune(profile: Profile, bundle: ClipBundle, bench: Benchmark, cfg: FinetuneConfig,
                 quiet: bool = False) -> FinetuneRun:
    """:func:`finetune` on a benchmark, cached under the profile's cache directory.

    Chapters 5–7 share their runs this way: a run with the same start model, data, names,
    templates, config and code is trained once and loaded afterwards.
    """
    captions = bench.captions                # FLYP's captions, where they differ from the templates
    key = run_key(bundle, bench.train, bench.classnames, bench.templates, cfg, captions)
    return finetune(bundle, bench.train, bench.classnames, bench.templates, cfg, captions=captions,
                    run_dir=Path(profile.cache_dir) / "finetune" / key, autocast=profile.autocast, quiet=quiet,
                    fp16_scaler=profile.fp16_scaler)
