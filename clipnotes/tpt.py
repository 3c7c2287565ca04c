"""Test-time prompt tuning, TPT (chapter 12): tune the prompt's context on one unlabelled test image.

For every test image: ``n_views`` augmented views (view 0 is the image itself), the views
whose predictions are most confident (the lowest-entropy share ``keep``), and a few AdamW
steps on the context vectors that lower the entropy of the kept views' *averaged*
prediction; the tuned prompt then classifies view 0, and the context is reset before the
next image (Shu et al., 2022; defaults from their ``tpt_classification.py``).

Both towers stay frozen, so the views' image features are computed once. The context of
every image is a separate copy, and AdamW acts on each element on its own, so :func:`tpt_logits`
tunes a whole batch of images at once with one optimiser and the sum of their losses: the
same numbers as one image at a time (the chapter checks it), at a fraction of the cost.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from .augment import CROP_RATIO, CROP_SCALE, apply_crops, crop_boxes  # noqa: F401 (crop_boxes: the chapter's)
from .coop import PromptLearner
from .data import ImageDataset
from .features import cache_path, writable_dir
from .models import ClipBundle, encode_token_embeddings
from .utils import ClipnotesError, code_fingerprint, frozen, load_torch, no_autocast, progress, save_torch

#: TPT's defaults (``tpt_classification.py``): 64 views, the 10 % most confident kept, one AdamW step at 5e-3.
TPT_VIEWS, TPT_KEEP, TPT_STEPS, TPT_LR = 64, 0.1, 1, 5e-3
def _image_ids(images: torch.Tensor, ids: Sequence[int] | None) -> Sequence[int]:
    """The ids that seed each image's views: ``ids``, one per image, or 0…B−1."""
    if ids is None:
        return range(len(images))
    if len(ids) != len(images):
        raise ClipnotesError(f"{len(ids)} ids for {len(images)} images: pass one id per image")
    return ids


def augmented_views(images: torch.Tensor, n_views: int = TPT_VIEWS, scale: tuple[float, float] = CROP_SCALE,
                    seed: int = 0, ids: Sequence[int] | None = None) -> torch.Tensor:
    """``n_views`` views of each image, (B, n_views, 3, H, W) floats in [0, 1]: view 0 is the image,
    the others random resized crops with flips (bilinear, back to the image's size).

    The crops of an image depend only on ``seed`` and its id (``ids``, default 0…B−1: pass the
    images' indices in their dataset), not on the batch it comes in.
    """
    if n_views < 1:
        raise ClipnotesError(f"n_views must be at least 1 (the image itself), got {n_views}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    b, _, h, w = x.shape
    ids = _image_ids(x, ids)
    theta = torch.stack([crop_boxes(n_views - 1, scale, generator=torch.Generator().manual_seed(
        seed * 1_000_003 + int(i))) for i in ids]).to(x.device)                       # (B, V-1, 2, 3)
    crops = apply_crops(x[:, None].expand(-1, n_views - 1, -1, -1, -1).flatten(0, 1), theta.flatten(0, 1))
    return torch.cat([x[:, None], crops.view(b, n_views - 1, 3, h, w)], 1)


#: The view families :func:`encode_views` makes: TPT's crops for ImageNet, its AugMix ops for the fine-grained sets.
VIEW_KINDS = ("crops", "augmix")


def _augmix_ops(rng: np.random.Generator, size: int, severity: float) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """AugMix's operations as TPT draws them (``augmix_ops``: no colour, contrast, brightness or sharpness),
    at a strength drawn in [0.1, ``severity``] out of 10; translations scale with the image's ``size``."""
    level = lambda: rng.uniform(0.1, severity)
    sign = lambda: float(rng.choice([-1.0, 1.0]))
    shear = lambda: sign() * math.degrees(math.atan(level() * 0.3 / 10))
    shift = lambda: sign() * int(level() * size / 3 / 10)
    # PIL's bilinear resampling, and shears about the top-left corner, as TPT's PIL ops do
    affine = lambda x, move=(0, 0), shear=(0.0, 0.0): TF.affine(
        x, angle=0.0, translate=list(move), scale=1.0, shear=list(shear), center=[0, 0],
        interpolation=TF.InterpolationMode.BILINEAR)
    return [TF.autocontrast, TF.equalize,
            lambda x: TF.rotate(x, sign() * int(level() * 30 / 10), interpolation=TF.InterpolationMode.BILINEAR),
            lambda x: TF.solarize(x, 256 - int(level() * 256 / 10)),
            lambda x: affine(x, shear=(shear(), 0.0)), lambda x: affine(x, shear=(0.0, shear())),
            lambda x: affine(x, move=(shift(), 0)), lambda x: affine(x, move=(0, shift())),
            lambda x: TF.posterize(x, 4 - int(level() * 4 / 10))]


def _augmix(image: torch.Tensor, rng: np.random.Generator, severity: float) -> torch.Tensor:
    """One AugMix view of a uint8 image (3, H, W) -> floats in [0, 1]: three chains of one to three
    random operations, mixed with Dirichlet weights, then with the image by a Beta(1, 1) share."""
    ops = _augmix_ops(rng, image.shape[-1], severity)
    w, m = rng.dirichlet([1.0] * 3), rng.beta(1.0, 1.0)
    mix = torch.zeros(image.shape)
    for wi in w:
        y = image
        for _ in range(rng.integers(1, 4)):
            y = ops[rng.integers(len(ops))](y)
        mix += float(wi) * y.float()
    return ((m * image.float() + (1 - m) * mix) / 255).clamp(0, 1)


def augmix_views(images: torch.Tensor, n_views: int = TPT_VIEWS, seed: int = 0, ids: Sequence[int] | None = None,
                 severity: float = 1.0) -> torch.Tensor:
    """``n_views`` views of each uint8 image, (B, n_views, 3, H, W) floats in [0, 1]: view 0 is the image,
    the others AugMix views (TPT's augmentation for its fine-grained sets, at its severity 1) *without*
    the random crop TPT puts before them, so the outline stays whole. Seeded per image, like
    :func:`augmented_views`."""
    if n_views < 1:
        raise ClipnotesError(f"n_views must be at least 1 (the image itself), got {n_views}")
    if images.dtype != torch.uint8:
        raise ClipnotesError("AugMix views start from uint8 images (0-255), as the datasets give them")
    ids = _image_ids(images, ids)
    out = []
    for image, i in zip(images, ids):
        rng = np.random.default_rng([seed, int(i)])
        out.append(torch.stack([image.float() / 255] + [_augmix(image, rng, severity) for _ in range(n_views - 1)]))
    return torch.stack(out)


@torch.no_grad()
def encode_views(bundle: ClipBundle, dataset: ImageDataset, n_views: int = TPT_VIEWS,
                 scale: tuple[float, float] = CROP_SCALE, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 16, autocast: Callable | None = None, desc: str = "images",
                 kind: str = "crops") -> torch.Tensor:
    """The L2-normalised features of ``n_views`` views of every image of ``dataset``, (N, V, D) on the
    CPU, view 0 the image itself; computed once with both towers frozen, and cached. ``kind``:
    ``"crops"`` (random resized crops at ``scale``, with flips) or ``"augmix"`` (:func:`augmix_views`)."""
    if len(dataset) == 0:
        raise ClipnotesError("the dataset is empty; TPT needs at least one test image")
    if kind not in VIEW_KINDS:
        raise ClipnotesError(f"unknown kind of views {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
    how = f"{scale[0]:g}-{scale[1]:g}" if kind == "crops" else kind
    key = (f"tpt-views|{code_fingerprint()}|{code_fingerprint('tpt.py', 'augment.py')}|{bundle.key}"
           f"|{bundle.preprocess}|{dataset.cache_key}|{n_views}|{how}|s{seed}")
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None:
        writable_dir(path.parent)                    # before encoding, not after
        if path.exists():
            try:
                blob = load_torch(path, "view-feature cache")
                if blob.get("key") == key:
                    return blob["features"]
            except ClipnotesError:
                pass                                  # a corrupt entry is recomputed and overwritten
    was_training = bundle.model.training
    bundle.model.eval()
    out = []
    for s in progress(range(0, len(dataset), batch_size), desc=f"{n_views} views of {desc}"):
        idx = np.arange(s, min(s + batch_size, len(dataset)))
        images = dataset.images(idx)
        views = (augmented_views(images, n_views, scale, seed, ids=idx) if kind == "crops"
                 else augmix_views(images, n_views, seed, ids=idx))
        with (autocast or no_autocast)():
            f = bundle.encode_images(views.flatten(0, 1)).float()
        out.append(F.normalize(f, dim=-1).view(len(idx), n_views, -1).cpu())
    bundle.model.train(was_training)
    features = torch.cat(out)
    if path is not None:
        save_torch({"key": key, "features": features}, path)
    return features


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension."""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def confident_views(logits: torch.Tensor, keep: float = TPT_KEEP) -> torch.Tensor:
    """Indices of the ``max(1, int(V·keep))`` views with the lowest entropy: logits (..., V, C) -> (..., K)."""
    k = max(1, int(logits.shape[-2] * keep))
    return entropy(logits).topk(k, dim=-1, largest=False).indices


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the views' averaged prediction, (..., K, C) -> (...): TPT's loss, in log space."""
    logp = logits.log_softmax(-1)
    avg = torch.logsumexp(logp, dim=-2) - math.log(logits.shape[-2])    # log of the mean probability
    return -(avg.exp() * avg).sum(-1)


def _gather_views(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return features.gather(1, idx[..., None].expand(-1, -1, features.shape[-1]))


def confident_average(bundle: ClipBundle, learner: PromptLearner, views: torch.Tensor,
                      keep: float = TPT_KEEP) -> torch.Tensor:
    """The control TPT's paper lacks: log of the averaged prediction of the same confident views,
    with the prompt *not* tuned, (B, C)."""
    with torch.no_grad():
        text = learner(bundle.model).float()
        x = views.float().to(text.device)
        logits = bundle.model.logit_scale.exp() * x @ text.T                       # (B, V, C)
        kept = logits.gather(1, confident_views(logits, keep)[..., None].expand(-1, -1, logits.shape[-1]))
        return (torch.logsumexp(kept.log_softmax(-1), 1) - math.log(kept.shape[1])).cpu()


def _batched_class_embeddings(model, learner: PromptLearner, ctx: torch.Tensor) -> torch.Tensor:
    """Unit-norm class embeddings of every image's own context ``ctx`` (B, M, W): (B, C, D)."""
    b, c = len(ctx), len(learner.classnames)
    prompts = torch.cat([learner.prefix[None].expand(b, -1, -1, -1), ctx[:, None].expand(-1, c, -1, -1),
                         learner.suffix[None].expand(b, -1, -1, -1)], 2).flatten(0, 1)
    return encode_token_embeddings(model, prompts, learner.tokens.repeat(b, 1)).view(b, c, -1)


def tpt_logits(bundle: ClipBundle, learner: PromptLearner, views: torch.Tensor, steps: int = TPT_STEPS,
               lr: float = TPT_LR, keep: float = TPT_KEEP, batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
    """TPT's prediction for every image, (N, C) logits on the CPU: ``views`` (N, V, D) are the
    views' cached features (view 0 the image itself).

    Per image: keep the confident views under the starting prompt (chosen once, as TPT's code
    does), take ``steps`` AdamW steps (TPT's optimiser and weight decay) on a fresh copy of
    ``learner``'s context to lower the entropy of their averaged prediction, then classify
    view 0 with the tuned context. ``steps=0`` is the starting prompt on view 0.
    """
    if learner.csc or learner.position != "end":
        raise ClipnotesError("TPT here tunes a shared context before the class name (CoOp's default learner)")
    model, out = bundle.model, []
    scale = model.logit_scale.exp().detach()
    x_all = views.float()
    chunks = range(0, len(x_all), batch_size)
    with frozen(model):
        for s in progress(chunks, desc=desc or f"TPT, {steps} step(s)", disable=desc is None and len(chunks) < 4):
            x = x_all[s:s + batch_size].to(learner.ctx.device)
            with torch.no_grad():
                start = scale * x @ learner(model).float().T                                  # (B, V, C)
                kept = _gather_views(x, confident_views(start, keep))                          # (B, K, D)
            ctx = nn.Parameter(learner.ctx.detach().expand(len(x), -1, -1).clone())
            opt = torch.optim.AdamW([ctx], lr=lr)
            for _ in range(steps):
                emb = _batched_class_embeddings(model, learner, ctx).float()
                loss = marginal_entropy(scale * torch.einsum("bkd,bcd->bkc", kept, emb)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                emb = _batched_class_embeddings(model, learner, ctx).float()
                out.append((scale * torch.einsum("bd,bcd->bc", x[:, 0], emb)).cpu())
    return torch.cat(out)


@torch.no_grad()
def view_scores(bundle: ClipBundle, learner: PromptLearner, views: torch.Tensor, labels: torch.Tensor,
                keep: float = TPT_KEEP) -> dict[str, np.ndarray]:
    """Per image, how well the starting prompt reads its views (chapter 12's diagnosis): whether the
    image itself is right (``"image"``), and the share of right answers among all its augmented views
    (``"all views"``) and among the confident views TPT keeps (``"kept views"``)."""
    text = learner(bundle.model).float()
    logits = bundle.model.logit_scale.exp() * views.float().to(text.device) @ text.T          # (N, V, C)
    right = (logits.argmax(-1).cpu() == torch.as_tensor(labels)[:, None]).float()               # (N, V)
    kept = confident_views(logits, keep).cpu()
    return {"image": right[:, 0].numpy(), "all views": right[:, 1:].mean(1).numpy(),
            "kept views": right.gather(1, kept).mean(1).numpy()}


def control_share(control, tpt) -> str:
    """How much of TPT's gain over the hand prompt the untuned confident-view control already
    gives, in words (chapter 12): ``control`` and ``tpt`` are their :class:`clipnotes.stats.Gap`
    over the hand prompt. A share only where TPT's gain clears its margin and the control gains."""
    if not tpt.above():
        return f"not defined, as TPT's gain here is within its noise (the control's: {control.points()})"
    if control.diff <= 0:
        return f"none: the control gains nothing here ({control.points()})"
    return f"{control.diff / tpt.diff:.0%} of it"


@dataclass(frozen=True)
class TptBudget:
    """Chapter 12's experiment size: views per image (TPT's 64), the "few steps" run, the crop
    scales compared on ``sweep_per_style`` images per style with ``sweep_views`` views each, and
    the shifted images per style the crop-pretrained tiny CLIP is tested on (``cause_per_style``;
    ``None``: the main test images, as in ``paper``, where both models are the same CLIP)."""

    views: int = TPT_VIEWS
    few_steps: int = 4
    scales: tuple[tuple[float, float], ...] = ((0.08, 1.0), (0.3, 1.0), (0.75, 1.0), (1.0, 1.5))
    sweep_per_style: int = 40
    sweep_views: int = 16
    cause_per_style: int | None = 200


def tpt_budget(profile) -> TptBudget:
    """TPT's 64 views for the main comparison; in ``paper`` section 4 reuses the main test images;
    the paper check (ViT-B/16 on the CPU) four views, two scales."""
    if profile.paper_check:
        return TptBudget(views=4, few_steps=2, scales=((0.08, 1.0), (1.0, 1.5)), sweep_per_style=1, sweep_views=2,
                         cause_per_style=None)
    return TptBudget() if profile.name == "mini" else TptBudget(cause_per_style=None)
