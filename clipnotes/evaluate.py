"""Evaluation shared by every chapter: logits, accuracies, retrieval, linear probes, and
evaluation sets kept in memory for sweeps over models (chapters 1–8)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data import ImageDataset
from .models import ClipBundle
from .utils import ClipnotesError, code_fingerprint, load_torch, no_autocast, save_torch, stable_hash, weights_digest

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


def correct_by_group(pred_or_logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                     groups: Sequence[str] | np.ndarray, keep: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per-image right (1) or wrong (0) for each group value in ``keep`` (default: every group, in
    first-seen order): the per-image scores :func:`clipnotes.stats.paired_gap` pairs (chapter 12)."""
    p = torch.as_tensor(pred_or_logits)
    if p.ndim == 2:
        p = p.argmax(1)
    right = (p.cpu() == torch.as_tensor(labels).cpu()).numpy().astype(float)
    groups = np.asarray(groups)
    seen = list(dict.fromkeys(groups.tolist()))
    missing = [g for g in (keep or ()) if g not in seen]
    if missing:
        raise ClipnotesError(f"no items in group(s) {', '.join(map(str, missing))}; the groups are {', '.join(map(str, seen))}")
    return {str(g): right[groups == g] for g in (keep if keep is not None else seen)}


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


def retrieval_hits(image_features: torch.Tensor, text_features: torch.Tensor, k: int = 1,
                   direction: str = "image->text") -> np.ndarray:
    """Per query, 1 where its matched item (row i <-> row i) ranks in the top ``k`` (chapter 1)."""
    sim = image_features.float() @ text_features.float().T
    s = sim if direction == "image->text" else sim.T
    target = torch.arange(len(s))
    ranks = (s > s[target, target][:, None]).sum(1)               # how many beat the true match
    return (ranks < k).cpu().numpy().astype(float)


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k for image->text and text->image retrieval of matched pairs (row i <-> row i)."""
    return {f"{direction} R@{k}": float(retrieval_hits(image_features, text_features, k, direction).mean())
            for direction in ("image->text", "text->image") for k in ks}


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


#: The regularisation strengths chapter 2's probe chooses from (CLIP's own sweep, appendix A.3
#: of the paper, is far finer; on standardised features the choice falls inside this grid).
PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def tuned_linear_probe(features: torch.Tensor, labels: torch.Tensor, shots: np.ndarray,
                       cs: Sequence[float] = PROBE_CS, n_val: int = 1000, seed: int = 0):
    """Chapter 2's probe, CLIP's protocol: a probe on the pool's ``shots`` (indices) for each
    ``c`` in ``cs``, scored on up to ``n_val`` other images of the pool (the validation split,
    never the test set), and the best kept (the smallest ``c`` on a tie). Returns ``(probe, c)``.

    A pool with no image besides the shots (the paper check's few fake images) leaves nothing to
    choose C on: the probe keeps C = 1, with a warning."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    shots = np.asarray(shots)
    val = np.setdiff1d(np.arange(len(labels)), shots)[:n_val]
    if len(val) == 0:
        warnings.warn("the probe pool holds only the shots, so no image is left to choose C on: C = 1 kept",
                      stacklevel=2)
        return fit_linear_probe(features[shots], labels[shots], 1.0, seed), 1.0
    x_val, y_val = features[val].cpu().numpy(), labels[val].cpu().numpy()
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)    # large C on separable shots: fine
        for c in cs:
            probe = fit_linear_probe(features[shots], labels[shots], c, seed)
            score = probe.score(x_val, y_val)
            if best is None or score > best[0]:
                best = (score, probe, float(c))
    return best[1], best[2]


def linear_head_accuracy(head: nn.Module, features: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    """Accuracy of a linear head on cached feature sets (``.features``, ``.labels``), one per name
    (chapters 5 and 7: WiSE-FT's linear classifier)."""
    with torch.no_grad():
        return {n: (head(features[n].features).argmax(1) == features[n].labels).float().mean().item() for n in names}


def ood_mean(scores: Mapping[str, float] | Any, ood_names: Sequence[str]) -> Any:
    """The mean accuracy over a benchmark's OOD sets (chapters 5–7's y axis): of one dict of
    scores, or of a DataFrame's columns row by row."""
    if isinstance(scores, Mapping):
        return float(np.mean([scores[k] for k in ood_names]))
    return scores[list(ood_names)].mean(axis=1)


@torch.no_grad()
def _encode(model: nn.Module, images, preprocess: Callable, autocast: Callable | None) -> torch.Tensor:
    """L2-normalised features (on CPU) of a classifier's image encoder over uint8 image batches."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for x in images:
        with (autocast or no_autocast)():
            out.append(model.features(preprocess(x.to(device))).float().cpu())
    return torch.cat(out)


_FROZEN: dict[str, torch.Tensor] = {}


def frozen_features(model: nn.Module, dataset: ImageDataset, preprocess: Callable, autocast: Callable | None = None,
                    batch_size: int = 500) -> torch.Tensor:
    """L2-normalised features of every item of ``dataset`` under a frozen classifier's encoder (on CPU).

    Kept in memory by the encoder's weights and the dataset, so CAR-FT's runs and LP-FT's
    probe (chapters 7 and 9) encode the training set once per session.
    """
    key = stable_hash(type(model).__qualname__, weights_digest(model), dataset.cache_key, batch_size,
                      str(preprocess), _autocast_tag(autocast))
    if key not in _FROZEN:
        if len(_FROZEN) >= 2:
            _FROZEN.pop(next(iter(_FROZEN)))
        _FROZEN[key] = _encode(model, (x for x, _ in dataset.batches(batch_size)), preprocess, autocast)
    return _FROZEN[key]


def _nbytes(outputs: dict) -> int:
    """Bytes held by one model's cached outputs (``{"pred": {...}, "features": {...} or None}``)."""
    return sum(t.numel() * t.element_size() for part in outputs.values() if part for t in part.values())


def _autocast_tag(autocast: Callable | None) -> list:
    """What an autocast factory does on each device type (part of cache keys)."""
    with (autocast or no_autocast)():
        return [(d, torch.is_autocast_enabled(d), str(torch.get_autocast_dtype(d))) for d in ("cpu", "cuda")]


class EvalSets:
    """Evaluation datasets, preprocessed once and kept in memory (an α sweep reuses them).

    Each distinct model is evaluated once: its predictions and features are keyed by a digest
    of its weights, kept in memory and, with ``cache_dir``, on disk, so a chapter that asks
    again for a model another chapter (or another α of a sweep) already evaluated reads the
    answer instead of running the encoder. The computation is ``model.classify(model.features(x))``,
    which is the model's ``forward``: the same numbers as evaluating it directly.
    """

    #: Features and predictions kept in memory, oldest model dropped first: every model of a mini
    #: chapter (about 3 MB each), a dozen or more at `paper` size (ViT-B/32 on CIFAR-10 and its shifts: 28 MB).
    MEMO_BYTES = 512 * 2**20

    def __init__(self, bundle: ClipBundle, datasets: Mapping[str, ImageDataset], batch_size: int = 500,
                 cache_dir: str | Path | None = None):
        self.batch_size = batch_size
        self.data = {}
        for name, ds in datasets.items():
            batches = list(ds.batches(batch_size))
            self.data[name] = ([x for x, _ in batches], [y for _, y in batches])
        self.labels = {name: torch.cat(ys) for name, (_, ys) in self.data.items()}
        self.preprocess = bundle.preprocess
        self.device = bundle.device
        self.key = stable_hash(list(datasets), [ds.cache_key for ds in datasets.values()], bundle.key)
        self._code = code_fingerprint(), code_fingerprint("classifiers.py", "evaluate.py")
        self.cache_dir = Path(cache_dir) / "evals" if cache_dir is not None else None
        self._memo: dict[str, dict] = {}

    def _model_key(self, model: nn.Module, autocast: Callable | None) -> str:
        return stable_hash(self.key, type(model).__qualname__, weights_digest(model), _autocast_tag(autocast),
                           getattr(model, "classnames", None), getattr(model, "templates", None), self._code)

    @torch.no_grad()
    def _outputs(self, model: nn.Module, autocast: Callable | None, want_features: bool) -> dict:
        """``{"pred": {set: labels}, "features": {set: features} (if kept)}`` for one model."""
        key = self._model_key(model, autocast)
        hit = self._memo.get(key)
        if hit is not None and (hit.get("features") is not None or not want_features):
            return hit
        path = self.cache_dir / f"{key}.pt" if self.cache_dir is not None else None
        if path is not None and path.exists():
            hit = load_torch(path, "evaluation cache")
            if hit.get("features") is not None or not want_features:
                self._remember(key, hit)
                return hit
        model.eval()
        ac = autocast or no_autocast
        preds, feats = {}, {}
        for name, (chunks, _) in self.data.items():
            p, f = [], []
            for x in chunks:
                with ac():
                    z = model.features(self.preprocess(x.to(self.device)))
                    p.append(model.classify(z).argmax(1).cpu())
                f.append(z.float().cpu())
            preds[name], feats[name] = torch.cat(p), torch.cat(f)
        out = {"pred": preds, "features": feats}
        if path is not None:
            save_torch(out if want_features else {"pred": preds, "features": None}, path)
        self._remember(key, out)
        return out

    def _remember(self, key: str, out: dict) -> None:
        """Keep ``out`` in memory, dropping the oldest models' outputs beyond :attr:`MEMO_BYTES`."""
        self._memo[key] = out
        while len(self._memo) > 1 and sum(_nbytes(o) for o in self._memo.values()) > self.MEMO_BYTES:
            self._memo.pop(next(iter(self._memo)))

    def predictions(self, model: nn.Module, autocast: Callable | None = None) -> dict[str, torch.Tensor]:
        """``{set: predicted labels}`` of a classifier (``forward``'s argmax), evaluated once per weights."""
        return self._outputs(model, autocast, want_features=False)["pred"]

    def features(self, model: nn.Module, autocast: Callable | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{set: (L2-normalised image features, labels)}`` of a classifier's image encoder."""
        feats = self._outputs(model, autocast, want_features=True)["features"]
        return {name: (feats[name], self.labels[name]) for name in self.data}

    def correct(self, model: nn.Module, autocast: Callable | None = None) -> dict[str, np.ndarray]:
        """``{set: per-image 1/0}`` — what :func:`clipnotes.stats.paired_gap` compares."""
        return {name: (pred == self.labels[name]).numpy().astype(float)
                for name, pred in self.predictions(model, autocast).items()}

    def accuracy(self, model: nn.Module, autocast: Callable | None = None) -> dict[str, float]:
        """``{set: top-1 accuracy}`` of a classifier."""
        return {name: int((pred == self.labels[name]).sum()) / len(pred)
                for name, pred in self.predictions(model, autocast).items()}
