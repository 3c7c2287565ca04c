"""The book's figures: one style, a few plot types every chapter reuses."""
from __future__ import annotations

import itertools

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

PALETTE = "colorblind"


def set_style() -> None:
    """The book's figure style (call once per notebook; `clipnotes.book.setup` does)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "axes.titleweight": "bold",
                         "axes.spines.top": False, "axes.spines.right": False})


def _to_hwc(img: torch.Tensor | np.ndarray) -> np.ndarray:
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    return a if a.dtype == np.uint8 else np.clip(a, 0, 1)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 10,
               size: float = 1.3, row_labels: Sequence[str] | None = None, fontsize: int = 8):
    """Show images (uint8 CHW tensors or HWC arrays) in a grid; returns the figure."""
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.25 if titles else 0) * nrows),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([]), ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        if i < n:
            ax.imshow(_to_hwc(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=fontsize)
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=fontsize + 1)
    fig.tight_layout()
    return fig


def bars(values: Mapping[str, float] | Mapping[str, Mapping[str, float]], ylabel: str = "accuracy",
         title: str | None = None, chance: float | None = None, ax=None, fmt: str = "{:.0%}", ylim=(0, 1)):
    """Bar chart of one series ``{group: value}`` or several ``{series: {group: value}}``."""
    first = next(iter(values.values()))
    series = values if isinstance(first, Mapping) else {"": values}
    groups = list(next(iter(series.values())).keys())
    ax = ax or plt.subplots(figsize=(1.1 * len(groups) * max(1, len(series) ** 0.5) + 1.5, 3.2))[1]
    width = 0.8 / len(series)
    for k, (name, vals) in enumerate(series.items()):
        xs = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        b = ax.bar(xs, [vals[g] for g in groups], width, label=name or None)
        if len(series) <= 3:
            ax.bar_label(b, labels=[fmt.format(vals[g]) for g in groups], fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(groups)), groups)
    if chance is not None:
        ax.axhline(chance, color="0.3", ls="--", lw=1, label="chance")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    if len(series) > 1 or chance is not None:
        ax.legend(fontsize=8, loc="lower right")
    return ax


def confusion(labels, preds, classnames: Sequence[str], ax=None, title: str | None = None, normalize: bool = True):
    """Confusion matrix heat map (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(np.asarray(labels), np.asarray(preds), labels=range(len(classnames)))
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax = ax or plt.subplots(figsize=(0.5 * len(classnames) + 1.8, 0.45 * len(classnames) + 1))[1]
    sns.heatmap(cm, ax=ax, cmap="Blues", vmin=0, vmax=1 if normalize else None, annot=len(classnames) <= 12,
                fmt=".2f" if normalize else "d", annot_kws={"fontsize": 7}, cbar=False,
                xticklabels=classnames, yticklabels=classnames)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return ax


def curves(log: Sequence[Mapping[str, float]], x: str, ys: Sequence[str], ax=None, labels: Sequence[str] | None = None,
           ylabel: str = "", title: str | None = None):
    """Line plot of log entries (e.g. a training log) against ``x``."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    xs = [e[x] for e in log]
    for k, y in enumerate(ys):
        ax.plot(xs, [e[y] for e in log], label=(labels[k] if labels else y), lw=1.6)
    ax.set_xlabel(x), ax.set_ylabel(ylabel)
    if len(ys) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def wise_curve(sweep, ax=None, label: str | None = None, color: str = "C0", title: str | None = None,
               id_col: str = "ID", ood_col: str = "OOD mean"):
    """WiSE-FT's picture: ID accuracy (x) against OOD accuracy (y) along α, ends marked.

    ``sweep`` is a DataFrame indexed by α with ``id_col`` and ``ood_col`` columns.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 4.2))
    x, y = sweep[id_col].to_numpy(), sweep[ood_col].to_numpy()
    ax.plot(x, y, "-o", color=color, ms=3.5, label=label)
    alphas = list(sweep.index)
    ax.scatter([x[0]], [y[0]], marker="*", s=160, color=color, edgecolor="k", zorder=3)
    ax.scatter([x[-1]], [y[-1]], marker="s", s=60, color=color, edgecolor="k", zorder=3)
    ax.annotate("zero-shot", (x[0], y[0]), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.annotate("fine-tuned", (x[-1], y[-1]), textcoords="offset points", xytext=(6, -10), fontsize=8)
    best = int(np.argmax(y))
    if 0 < best < len(alphas) - 1:
        ax.annotate(f"α={alphas[best]:.1f}", (x[best], y[best]), textcoords="offset points", xytext=(0, 7),
                    fontsize=8, ha="center", color=color)
    ax.set(xlabel=f"{id_col} accuracy", ylabel=f"{ood_col} accuracy")
    if title:
        ax.set_title(title)
    if label:
        ax.legend(fontsize=8)
    return ax


def method_map(curves: Mapping[str, "object"], points: Mapping[str, tuple[float, float]], ax=None,
               title: str | None = None, id_col: str = "ID", ood_col: str = "OOD mean"):
    """Every method on one ID–OOD plane: WiSE curves (DataFrames indexed by α) and single points.

    A curve's fine-tuned end is a square, its α = 0 end (the zero-shot model) a star.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 5))
    colours = sns.color_palette(PALETTE, len(curves) + len(points))
    for (name, sweep), c in zip(curves.items(), colours):
        x, y = sweep[id_col].to_numpy(), sweep[ood_col].to_numpy()
        ax.plot(x, y, "-o", ms=3, color=c, label=f"{name} (α = 0 … 1)")
        ax.scatter([x[-1]], [y[-1]], marker="s", s=60, color=c, edgecolor="k", zorder=3)
    for (name, (x, y)), c, m in zip(points.items(), colours[len(curves):], itertools.cycle("*PXD^vhp<>8")):
        ax.scatter([x], [y], marker=m, s=140, color=c, edgecolor="k", zorder=4, label=name)
    ax.set(xlabel=f"{id_col} accuracy", ylabel=f"{ood_col} accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return ax
