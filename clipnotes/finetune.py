"""One end-to-end fine-tuning loop for CLIP image classifiers; the loss plugs in.

* ``ce`` — cross-entropy on an image encoder + linear head initialised from the zero-shot
  text embeddings (× the logit scale, image features L2-normalised, bias 0), as in WiSE-FT.
* ``flyp`` — FLYP: the CLIP contrastive loss between images and class-prompt captions (a
  random template per image and step); both towers and the temperature train; the
  classifier is rebuilt from the fine-tuned text tower.
* ``carft`` — CAR-FT: cross-entropy + β · KL(p₀(context|x) ‖ p_θ(context|x)), the context
  distribution read by a frozen copy of the zero-shot image encoder (p₀) and by the
  fine-tuned one (p_θ) against context directions — the templates' text embeddings
  averaged over classes (or, as a control, random directions).

AdamW, linear warm-up then cosine, gradient clipping, bf16/fp16 autocast on CUDA, a
progress bar; the batch of step ``s`` is a pure function of ``(seed, s)``, and the run
state is saved atomically so an interrupted run resumes to the same result.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .features import iter_batches
from .models import ClipBundle
from .utils import ClipnotesError, article, code_fingerprint, load_torch, progress, save_json, save_torch, stable_hash
from .wise import ALPHAS, wise_sweep
from .zeroshot import zero_shot_head

LOSSES = ("ce", "flyp", "carft")


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
    threads: int = 2

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ClipnotesError(f"unknown fine-tuning loss {self.loss!r}; use one of {LOSSES}")
        if self.carft_context not in ("templates", "random"):
            raise ClipnotesError("carft_context must be 'templates' or 'random'")


def recipe(profile, loss: str = "ce", **overrides) -> FinetuneConfig:
    """The chapters' fine-tuning recipe for a profile (methods.md §4.3, scaled to each).

    mini: 200 steps of 128 world photos (about 6 epochs), lr 1e-4 (the tiny CLIP trained at 1e-3).
    paper: about 3 epochs of CIFAR-10 at batch 256, lr 3e-5 (WiSE-FT's ImageNet setting).
    """
    if profile.name == "mini":
        base = dict(steps=200, batch_size=128, lr=1e-4, warmup=20, threads=2)
    else:
        base = dict(steps=600, batch_size=256, lr=3e-5, warmup=50)
    return FinetuneConfig(loss=loss, seed=profile.seed, **{**base, **overrides})


# ----------------------------------------------------------------------------- models
class ZeroShotClassifier(nn.Module):
    """An image encoder and a linear head started at the zero-shot classifier (WiSE-FT's)."""

    def __init__(self, visual: nn.Module, head: torch.Tensor, scale: float):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(head.shape[0], head.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(scale * head.T)
            self.head.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ClipClassifier(nn.Module):
    """A whole CLIP used as a classifier: the head is built from its own text tower (FLYP)."""

    def __init__(self, clip: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str]):
        super().__init__()
        self.clip = clip
        self.tokenizer, self.classnames, self.templates = tokenizer, list(classnames), list(templates)
        self._head: torch.Tensor | None = None

    def load_state_dict(self, *args, **kwargs):
        self._head = None
        return super().load_state_dict(*args, **kwargs)

    def train(self, mode: bool = True):
        self._head = None
        return super().train(mode)

    def head(self) -> torch.Tensor:
        if self._head is None or self.training:
            device = next(self.clip.parameters()).device
            with torch.no_grad():
                h = open_clip.build_zero_shot_classifier(self.clip, self.tokenizer, self.classnames, self.templates,
                                                         num_classes_per_batch=None, device=device)
            self._head = h.float()
        return self._head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale.exp() * self.features(x) @ self.head()


def zero_shot_classifier(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str],
                         loss: str = "ce") -> nn.Module:
    """The starting point θ₀ of a run: a fresh copy, never the bundle's own modules."""
    if loss == "flyp":
        return ClipClassifier(copy.deepcopy(bundle.model), bundle.tokenizer, classnames, templates)
    head = zero_shot_head(bundle, classnames, templates)
    return ZeroShotClassifier(copy.deepcopy(bundle.model.visual), head, bundle.model.logit_scale.exp().item())


# ----------------------------------------------------------------------------- losses
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


def domain_read_accuracy(ctx_logits: torch.Tensor, ctx_domains: Sequence[str], true_domain: str) -> float:
    """How often the domain with the most context probability mass is the image's true domain."""
    names = sorted(set(ctx_domains))
    member = torch.tensor([[d == n for d in ctx_domains] for n in names], dtype=torch.float32)   # (M, K)
    mass = ctx_logits.softmax(-1) @ member.T                                                     # (N, M)
    return float((mass.argmax(1) == names.index(true_domain)).float().mean())


def context_kl(p0_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """KL(p₀ ‖ p_θ) between context distributions given as logits, averaged over the batch."""
    return F.kl_div(F.log_softmax(p_logits, -1), F.log_softmax(p0_logits, -1), log_target=True,
                    reduction="batchmean")


def flyp_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's loss on (image, class caption) pairs; with ``labels``, same-class pairs are not negatives."""
    logits = scale * image_features @ text_features.T
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        logits = logits.masked_fill(same & ~torch.eye(len(labels), dtype=torch.bool, device=logits.device),
                                    float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ----------------------------------------------------------------------------- training
@dataclass
class FinetuneRun:
    """A finished run: the model at θ₀ and at θ₁, and the training log."""

    start: nn.Module
    end: nn.Module
    config: FinetuneConfig
    log: list[dict[str, float]]
    seconds: float
    run_dir: Path | None = None


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, t)))


def batch_indices(n: int, cfg: FinetuneConfig, step: int) -> np.ndarray:
    """The training items of step ``step``: a pure function of (seed, step)."""
    return np.random.default_rng([cfg.seed, step]).integers(0, n, cfg.batch_size)


def _images(dataset, idx: np.ndarray) -> torch.Tensor:
    if hasattr(dataset, "images"):
        return dataset.images(idx)
    return torch.stack([dataset[int(i)][0] for i in idx])


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def _encode(model: nn.Module, images, preprocess: Callable, autocast: Callable | None) -> torch.Tensor:
    """L2-normalised features (on CPU) of a classifier's image encoder over uint8 image batches."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for x in images:
        with (autocast or _no_autocast)():
            out.append(model.features(preprocess(x.to(device))).float().cpu())
    return torch.cat(out)


def frozen_features(model: nn.Module, dataset, preprocess: Callable, autocast: Callable | None = None,
                    batch_size: int = 500) -> torch.Tensor:
    """L2-normalised features of every item of ``dataset`` under a frozen classifier's encoder (on CPU)."""
    return _encode(model, (x for x, _ in iter_batches(dataset, batch_size)), preprocess, autocast)


def finetune(bundle: ClipBundle, train, classnames: Sequence[str], templates: Sequence[str], cfg: FinetuneConfig,
             run_dir: str | Path | None = None, save_every: int = 50, stop_after: int | None = None,
             autocast: Callable | None = None, quiet: bool = False,
             captions: Sequence[str] | None = None) -> FinetuneRun | None:
    """Fine-tune from ``bundle``'s zero-shot classifier on ``train`` (items ``(uint8 image, label)``).

    ``templates`` build the heads; FLYP writes its training captions with ``captions``
    (default: ``templates``), which should be true of the training images.

    With ``run_dir`` the run is resumable and its result is reused: a finished run is loaded,
    not retrained. ``stop_after`` stops after that many steps of this call (returns None).
    """
    if len(train) == 0:
        raise ClipnotesError("the training set is empty")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = bundle.device
    start = zero_shot_classifier(bundle, classnames, templates, cfg.loss).to(device)
    model = copy.deepcopy(start).train()
    frozen_feats, ctx = None, None
    if cfg.loss == "carft":       # p₀(context|x) needs the frozen encoder's features: computed once, not per step
        frozen_feats = frozen_features(start, train, bundle.preprocess, autocast)
        ctx = context_directions(bundle, classnames, templates, cfg.carft_context, cfg.seed)
        ctx_scale = bundle.model.logit_scale.exp().item()
    caption_tokens, captions = None, list(captions or templates)
    if cfg.loss == "flyp":     # every (class, template) caption, tokenised once: row c · T + t
        caption_tokens = bundle.tokenizer([t.format(c) for c in classnames for t in captions]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels_all = np.asarray(train.labels if hasattr(train, "labels") else [train[i][1] for i in range(len(train))])
    step, log, spent = 0, [], 0.0
    state_path = Path(run_dir) / "state.pt" if run_dir else None
    if state_path is not None and state_path.exists():
        state = load_torch(state_path, "fine-tuning state")
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
        step, spent = int(state["step"]), float(state["seconds"])
        log = [dict(zip(state["log_keys"], row.tolist())) for row in state["log"]]
    t0 = time.time() - spent
    bar = progress(total=cfg.steps, initial=step, desc=f"fine-tune ({cfg.loss})", disable=quiet or None)
    done_here = 0
    ac = autocast or _no_autocast
    while step < cfg.steps:
        idx = batch_indices(len(train), cfg, step)
        x = bundle.preprocess(_images(train, idx).to(device))
        y = torch.from_numpy(labels_all[idx]).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with ac():
            if cfg.loss == "flyp":
                pick = np.random.default_rng([cfg.seed, step, 1]).integers(len(captions), size=len(idx))
                rows = torch.from_numpy(labels_all[idx] * len(captions) + pick).to(device)
                img = F.normalize(model.clip.encode_image(x), dim=-1)
                txt = F.normalize(model.clip.encode_text(caption_tokens[rows]), dim=-1)
                loss = flyp_loss(img, txt, model.clip.logit_scale.exp(), y if cfg.flyp_mask_same_class else None)
                acc = float("nan")
            else:
                feats = model.features(x)
                out = model.head(feats)
                loss = F.cross_entropy(out, y)
                acc = (out.argmax(1) == y).float().mean().item()
                if cfg.loss == "carft":
                    p0 = context_logits(frozen_feats[torch.from_numpy(idx)].to(device), ctx, ctx_scale)
                    loss = loss + cfg.carft_beta * context_kl(p0, context_logits(feats, ctx, ctx_scale))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step, done_here = step + 1, done_here + 1
        log.append({"step": step, "loss": loss.item(), "train_acc": acc, "lr": lr_at(step - 1, cfg),
                    "seconds": time.time() - t0})
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
        if state_path is not None and (step % save_every == 0 or step == cfg.steps):
            keys = list(log[0])
            save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "seconds": time.time() - t0, "log_keys": keys,
                        "log": torch.tensor([[e[k] for k in keys] for e in log], dtype=torch.float64)}, state_path)
        if stop_after is not None and done_here >= stop_after:
            bar.close()
            return None
    bar.close()
    model.eval()
    return FinetuneRun(start.eval(), model, cfg, log, time.time() - t0, Path(run_dir) if run_dir else None)


def train_linear_head(features: torch.Tensor, labels: torch.Tensor, head: torch.Tensor, scale: float,
                      steps: int = 300, lr: float = 1e-3, weight_decay: float = 0.1, batch_size: int = 256,
                      seed: int = 0) -> nn.Linear:
    """WiSE-FT's linear-classifier variant: the encoder stays frozen, only the head trains.

    ``features`` are cached, L2-normalised image features; the head starts at the zero-shot
    classifier (``scale`` × text embeddings, bias 0) and trains with AdamW and a cosine schedule.
    """
    if len(features) == 0:
        raise ClipnotesError("no training features for the linear head")
    lin = nn.Linear(head.shape[0], head.shape[1])
    with torch.no_grad():
        lin.weight.copy_(scale * head.T), lin.bias.zero_()
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=weight_decay)
    cfg = FinetuneConfig(steps=steps, lr=lr, warmup=max(1, steps // 10), batch_size=batch_size, seed=seed)
    x, y = F.normalize(features.float(), dim=-1), torch.as_tensor(labels)
    for step in range(steps):
        idx = torch.from_numpy(batch_indices(len(x), cfg, step))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = F.cross_entropy(lin(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return lin.eval()


def run_key(bundle: ClipBundle, train, classnames, templates, cfg: FinetuneConfig,
            captions: Sequence[str] | None = None) -> str:
    """A cache key for a run: the start weights, the data, the names, the templates, FLYP's
    captions and the config."""
    cfg_d = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "threads"}
    captions = list(captions or templates) if cfg.loss == "flyp" else None
    return stable_hash(bundle.key, getattr(train, "cache_key", None), list(classnames), list(templates), captions,
                       cfg_d, code_fingerprint(), code_fingerprint("finetune.py"))


def run_finetune(profile, bundle: ClipBundle, bench, cfg: FinetuneConfig, quiet: bool = False) -> FinetuneRun:
    """:func:`finetune` on a benchmark, cached under the profile's cache directory.

    Chapters 5–7 share their runs this way: a run with the same start model, data, names,
    templates, config and code is trained once and loaded afterwards.
    """
    captions = getattr(bench, "captions", None)          # FLYP's captions, where they differ from the templates
    key = run_key(bundle, bench.train, bench.classnames, bench.templates, cfg, captions)
    return finetune(bundle, bench.train, bench.classnames, bench.templates, cfg, captions=captions,
                    run_dir=Path(profile.cache_dir) / "finetune" / key, autocast=profile.autocast, quiet=quiet)


def sweep_run(run: FinetuneRun, evals: "EvalSets", alphas: Sequence[float] = ALPHAS,
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


# ----------------------------------------------------------------------------- evaluation
class EvalSets:
    """Evaluation datasets, preprocessed once and kept in memory (an α sweep reuses them)."""

    def __init__(self, bundle: ClipBundle, datasets: Mapping[str, Any], batch_size: int = 500):
        self.batch_size = batch_size
        self.data = {}
        for name, ds in datasets.items():
            batches = list(iter_batches(ds, batch_size))
            self.data[name] = ([x for x, _ in batches], [y for _, y in batches])
        self.preprocess = bundle.preprocess
        self.device = bundle.device
        keys = [getattr(ds, "cache_key", None) for ds in datasets.values()]
        self.key = None if None in keys else stable_hash(list(datasets), keys, bundle.key)

    def features(self, model: nn.Module, autocast: Callable | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{set: (L2-normalised image features, labels)}`` of a classifier's image encoder."""
        return {name: (_encode(model, chunks, self.preprocess, autocast), torch.cat(labels))
                for name, (chunks, labels) in self.data.items()}

    @torch.no_grad()
    def accuracy(self, model: nn.Module, autocast: Callable | None = None) -> dict[str, float]:
        model.eval()
        ac = autocast or _no_autocast
        out = {}
        for name, (chunks, labels) in self.data.items():
            correct = 0
            for x, y in zip(chunks, labels):
                with ac():
                    pred = model(self.preprocess(x.to(self.device))).argmax(1).cpu()
                correct += int((pred == y).sum())
            out[name] = correct / sum(len(y) for y in labels)
        return out
