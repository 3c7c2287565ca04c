"""Zero-shot classification: class names + templates -> a linear head of text embeddings.

The head is built by open_clip's ``build_zero_shot_classifier``: for every class, fill
each template, encode, L2-normalise, average over templates, renormalise. A prediction is
the class whose column has the largest cosine similarity with the normalised image feature.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import open_clip
import torch

from .models import ClipBundle
from .utils import ClipnotesError, article

#: The CLIP paper's default prompt.
PHOTO_TEMPLATE = "a photo of a {}."
#: Domain-aware templates of the mini world (one per image type its captions use).
MINI_DOMAIN_TEMPLATES: dict[str, str] = {
    "photo": "a photo of a {}.",
    "sketch": "a sketch of a {}.",
    "cartoon": "a cartoon of a {}.",
    "painting": "a painting of a {}.",
    "pixel": "a pixel art of a {}.",
}

#: The mini world's prompt pool: the ways its captions describe an image (cf. CLIP's 80 ImageNet
#: templates): its three frames, nine style words, and two sizes and ten colours spread evenly
#: over the frames.
_MINI_FRAMES = ("a photo of", "a picture of", "an image of")
_MINI_ATTRIBUTES = ("small", "large", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink",
                    "brown", "gray")
_MINI_NON_PHOTO = ("sketch", "drawing", "cartoon", "illustration", "painting", "watercolor", "pixel art", "sprite")
MINI_TEMPLATES: tuple[str, ...] = (
    *(f"{frame} a {{}}." for frame in _MINI_FRAMES),
    "a photograph of a {}.",
    *(f"{article(w)} {w} of a {{}}." for w in _MINI_NON_PHOTO),
    *(f"{_MINI_FRAMES[i % len(_MINI_FRAMES)]} {article(a)} {a} {{}}." for i, a in enumerate(_MINI_ATTRIBUTES)),
)
#: The pool less the eight templates that call the image something other than a photo: the
#: ones that do not misname a photograph's kind (FLYP's captions for a training set of photos).
MINI_PHOTO_TEMPLATES: tuple[str, ...] = tuple(t for t in MINI_TEMPLATES
                                              if not any(f" {w} of " in t for w in _MINI_NON_PHOTO))

#: openai/CLIP data/prompts.md: the 18 CIFAR-10/100 templates, in that file's order.
CIFAR_TEMPLATES: tuple[str, ...] = tuple(
    t.replace("{art}", art)
    for art in ("a", "the")
    for t in ("a photo of {art} {}.", "a blurry photo of {art} {}.", "a black and white photo of {art} {}.",
              "a low contrast photo of {art} {}.", "a high contrast photo of {art} {}.", "a bad photo of {art} {}.",
              "a good photo of {art} {}.", "a photo of {art} small {}.", "a photo of {art} big {}.")
)


def check_classnames(classnames: Sequence[str]) -> list[str]:
    classnames = list(classnames)
    if not classnames:
        raise ClipnotesError("the class list is empty; pass at least one class name")
    if any(not isinstance(c, str) or not c.strip() for c in classnames):
        raise ClipnotesError("class names must be non-empty strings")
    return classnames


def zero_shot_head(bundle: ClipBundle, classnames: Sequence[str],
                   templates: Sequence[str | Callable[[str], str]] = (PHOTO_TEMPLATE,)) -> torch.Tensor:
    """Text-embedding head, (D, C): one unit column per class (template-averaged)."""
    classnames = check_classnames(classnames)
    if not templates:
        raise ClipnotesError("the template list is empty; pass at least one template such as 'a photo of a {}.'")
    was_training = bundle.model.training
    bundle.model.eval()
    head = open_clip.build_zero_shot_classifier(bundle.model, bundle.tokenizer, classnames, list(templates),
                                                num_classes_per_batch=None, device=bundle.device)
    bundle.model.train(was_training)
    return head.float()


def head_by_hand(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """The same head written out (the chapter shows this inline): normalise, mean, renormalise."""
    cols = []
    with torch.no_grad():
        for c in classnames:
            emb = bundle.encode_texts([t.format(c) for t in templates])        # (T, D), unit rows
            mean = emb.mean(0)
            cols.append(mean / mean.norm())
    return torch.stack(cols, 1)                                                 # (D, C)


def template_heads(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str]) -> dict[str, torch.Tensor]:
    """One single-template head per template (what ensembles and template selection combine)."""
    return {t: zero_shot_head(bundle, classnames, [t]) for t in templates}


def ensemble_of_heads(heads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average unit-column heads and renormalise: the embedding-space ensemble of their templates."""
    heads = list(heads)
    if not heads:
        raise ClipnotesError("no heads to ensemble; pass at least one")
    return torch.nn.functional.normalize(sum(heads), dim=0)


def probability_ensemble(features: torch.Tensor, heads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The other ensemble: average the softmax predictions of one classifier per template, (N, C)."""
    return torch.stack([logits(features, h).softmax(1) for h in heads]).mean(0)


def forward_selection(heads: Mapping[str, torch.Tensor], features: torch.Tensor, labels: torch.Tensor,
                      val: torch.Tensor) -> list[dict[str, object]]:
    """Greedy forward selection of templates (the CLIP notebook's way to its 7 ImageNet templates).

    Start empty; repeatedly add the template whose ensemble scores best on the ``val`` rows;
    returns one row per step with the validation and held-out (``~val``) accuracy.
    """
    def score(templates, rows):
        return accuracy(logits(features[rows], ensemble_of_heads([heads[t] for t in templates])), labels[rows])

    chosen: list[str] = []
    history = []
    while len(chosen) < len(heads):
        val_scores = {t: score(chosen + [t], val) for t in heads if t not in chosen}
        best = max(val_scores, key=val_scores.get)
        chosen.append(best)
        history.append({"n": len(chosen), "template": best, "validation": val_scores[best],
                        "test": score(chosen, ~val)})
    return history


def logits(features: torch.Tensor, head: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Scaled cosine similarities, (N, C); ``features`` must be L2-normalised."""
    return scale * features.float() @ head.to(features.device).float()


def accuracy(pred_or_logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy from predictions (N,) or logits (N, C)."""
    p = torch.as_tensor(pred_or_logits)
    if p.ndim == 2:
        p = p.argmax(1)
    y = torch.as_tensor(labels).to(p.device)
    return float((p == y).float().mean()) if len(y) else float("nan")


def accuracy_by_group(pred: torch.Tensor, labels: torch.Tensor, groups: Sequence[str] | np.ndarray) -> dict[str, float]:
    """Accuracy per group value (e.g. per domain), in first-seen order."""
    groups = np.asarray(groups)
    pred = torch.as_tensor(pred)
    if pred.ndim == 2:
        pred = pred.argmax(1)
    out = {}
    for g in dict.fromkeys(groups.tolist()):
        m = torch.from_numpy(groups == g)
        out[str(g)] = accuracy(pred[m], torch.as_tensor(labels)[m])
    return out


def evaluate(features: torch.Tensor, labels: torch.Tensor, head: torch.Tensor,
             groups: Mapping[str, Sequence] | None = None) -> dict[str, object]:
    """Overall accuracy and, for each grouping given, accuracy per group."""
    pred = logits(features, head).argmax(1).cpu()
    out: dict[str, object] = {"accuracy": accuracy(pred, labels)}
    for name, g in (groups or {}).items():
        out[name] = accuracy_by_group(pred, labels, g)
    return out


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k for image->text and text->image retrieval of matched pairs (row i <-> row i)."""
    sim = image_features.float() @ text_features.float().T
    target = torch.arange(len(sim))
    out = {}
    for direction, s in (("image->text", sim), ("text->image", sim.T)):
        ranks = (s > s[target, target][:, None]).sum(1)          # how many beat the true match
        for k in ks:
            out[f"{direction} R@{k}"] = float((ranks < k).float().mean())
    return out


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, c: float = 1.0, seed: int = 0):
    """A logistic-regression probe on frozen features (CLIP's linear-probe protocol, L-BFGS).

    Features are standardised first, so one regularisation strength ``c`` suits any model.
    Returns a fitted scikit-learn pipeline (``.predict``, ``.score``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    return probe.fit(features.cpu().numpy(), labels.cpu().numpy())
