"""Every chapter's `paper` work on one GPU: wall time, images/s, peak GPU memory, precision.

The real architectures (ViT-B/32, ViT-B/16) at random weights, fake datasets in the real
on-disk formats, full batch sizes and 224 px images: what a Colab or workstation reader's
GPU will be asked to do, chapter by chapter, without downloading anything. Each row times
one chapter's heavy step through the package's own functions (the same code the chapters
call), after the model is built and the data written:

    python benchmarks/gpu_check.py            # on a CUDA machine (a few minutes on an H100)
    python benchmarks/gpu_check.py --tiny     # the CPU smoke test: a few images, a step each
    python benchmarks/gpu_check.py --tiny --device pretend-gpu   # the same on a pretend GPU: a CPU
                                              # tensor meeting the model fails, as on CUDA

The numbers say whether a chapter fits a GPU's memory (a Colab T4 has 15 GiB) and how long
its `paper` run takes; they are not accuracies (the weights are random).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

from clipnotes import attacks, clap, coop, fakes, tasks, templates as T, tpt
from clipnotes.classifiers import zero_shot_classifier
from clipnotes.evaluate import EvalSets, frozen_features
from clipnotes.features import encode_dataset
from clipnotes.finetune import finetune, recipe
from clipnotes.models import create_paper
from clipnotes.pretend_gpu import pretend_gpu
from clipnotes.profiles import get_profile, native_bf16


@dataclasses.dataclass(frozen=True)
class Size:
    """How much work each row does: ``full`` on a GPU, ``tiny`` for the CPU test."""

    batch: int = 256                 # fine-tuning batch (the paper recipe's)
    eval_batch: int = 512
    steps: int = 20                  # timed fine-tuning steps
    cifar_train: int = 5120
    cifar_test: int = 2000
    coop_per_class: int = 16         # CoOp's 16 shots
    coop_test: int = 50              # test images per class
    pacs_per_class: int = 25
    clap_steps: int = 500
    attack_images: int = 200
    attack_steps: int = 20
    templates: int | None = None     # CLIP's 18 CIFAR templates; the tiny run keeps one
    zero_shot_sets: int = 2          # CIFAR-10 and CIFAR-100; the tiny run skips CIFAR-100's 100 classes


FULL, TINY = Size(), Size(batch=2, eval_batch=4, steps=1, cifar_train=10, cifar_test=4, coop_per_class=2, coop_test=1,
                          pacs_per_class=1, clap_steps=2, attack_images=2, attack_steps=1, templates=1,
                          zero_shot_sets=1)


@dataclasses.dataclass
class Row:
    chapter: str
    work: str
    seconds: float
    images: int
    peak_gib: float
    precision: str

    def line(self) -> str:
        rate = f"{self.images / self.seconds:9.0f}" if self.images else f"{'':>9}"
        return f"{self.chapter:<8} {self.work:<44} {self.seconds:8.1f} {rate} {self.peak_gib:9.2f}  {self.precision}"


@contextlib.contextmanager
def timed(rows: list[Row], chapter: str, work: str, images: int, device: str, precision: str):
    """Append a row: wall seconds and peak GPU memory of the block (synchronised)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    rows.append(Row(chapter, work, time.perf_counter() - t0, images, peak, precision))
    print(rows[-1].line(), flush=True)


def write_data(root: Path, size: Size) -> None:
    for name in ("cifar10", "cifar100"):
        fakes.write_fake_cifar(root, name, n_train=size.cifar_train, n_test=size.cifar_test)
    fakes.write_fake_cifar10_shifts(root, n=size.cifar_test)
    classes = fakes.PAPER_CHECK_SIZES["coop_classes"]
    fakes.write_fake_coop(root, "EuroSAT", n_classes=classes, per_split=max(size.coop_per_class, size.coop_test))
    fakes.write_fake_pacs(root, ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
                          per_class=size.pacs_per_class)


def run(device: str, size: Size, root: Path) -> list[Row]:
    """Every row of the table (chapters 2–13), on ``device`` with fake data written under ``root``."""
    cuda = device.startswith("cuda")
    base = get_profile("paper", check=False)
    precision = ("bf16" if native_bf16() else "fp16") if cuda else "fp32"
    profile = dataclasses.replace(base, device=device, precision=precision, cache_dir=root / "cache",
                                  data_dir=root / "data", eval_batch_size=size.eval_batch,
                                  train_batch_size=size.batch, paper_check=True)
    write_data(profile.data_dir, size)
    label = precision + (" + scaler" if profile.fp16_scaler else "")
    rows: list[Row] = []
    b32 = create_paper("ViT-B-32-quickgelu", None, device, seed=0)
    b16 = create_paper("ViT-B-16-quickgelu", None, device, seed=0)

    # the paper check's fake data, at this size, with every template (the paper check keeps three)
    templates = list(T.CIFAR_TEMPLATES)[:size.templates]
    zs = [dataclasses.replace(b, templates=templates) for b in tasks.zero_shot_benchmarks(profile)]
    zs = zs[:size.zero_shot_sets]
    for name, bundle in (("B/32", b32), ("B/16", b16)):
        for bench in zs:
            with timed(rows, "02-03", f"zero-shot head + encode, {name}, {bench.name}", len(bench.dataset), device,
                       label):
                zero_shot_classifier(bundle, bench.classnames, bench.templates)
                encode_dataset(bundle, bench.dataset, None, size.eval_batch, autocast=profile.autocast)

    few = tasks.few_shot_benchmark(profile)
    pool = encode_dataset(b16, few.train, None, size.eval_batch, autocast=profile.autocast)
    epochs = coop.coop_epochs(16) if size == FULL else 1
    with timed(rows, "04", f"CoOp, {len(pool)} shots x {epochs} epochs, B/16", len(pool) * epochs, device, label):
        coop.train_coop(b16, coop.PromptLearner(b16, few.classnames, init="a photo of a"), pool.features, pool.labels,
                        epochs=epochs, lr=coop.coop_lr(b16))
    epochs = coop.COCOOP_EPOCHS if size == FULL else 1
    with timed(rows, "11", f"CoCoOp, {len(pool)} shots x {epochs} epochs at batch 1, B/16", len(pool) * epochs,
               device, label):
        coop.fit_cocoop(b16, few.classnames, pool.features, pool.labels, max_epochs=epochs)

    ft = dataclasses.replace(tasks.finetune_benchmark(profile), templates=templates)
    for loss, chapter in (("ce", "05, 09, 10, 13"), ("flyp", "06"), ("carft", "07")):
        cfg = recipe(profile, loss, steps=size.steps, batch_size=size.batch, warmup=1)
        with timed(rows, chapter, f"{loss} fine-tuning, {cfg.steps} steps of {cfg.batch_size}, B/32",
                   cfg.steps * cfg.batch_size, device, label):
            done = finetune(b32, ft.train, ft.classnames, ft.templates, cfg, autocast=profile.autocast, quiet=True,
                            captions=ft.captions, fp16_scaler=profile.fp16_scaler)
    evals = EvalSets(b32, ft.eval_sets, batch_size=size.eval_batch)
    n_eval = sum(len(d) for d in ft.eval_sets.values())
    with timed(rows, "05-07, 10, 13", "a weight mixture evaluated on ID + OOD", n_eval, device, label):
        evals.accuracy(done.end, profile.autocast)
    with timed(rows, "09", "LP-FT: frozen features of the training set", len(ft.train), device, label):
        frozen_features(done.start, ft.train, b32.preprocess, profile.autocast, batch_size=size.eval_batch)

    grid, aug, cfg = clap.clap_recipe(dataclasses.replace(profile, paper_check=False))
    with timed(rows, "08", f"CLAP, {size.clap_steps} text-only steps, B/16", 0, device, label):
        clap.train_clap(b16, tasks.clap_benchmark(profile).classnames, grid,
                        dataclasses.replace(cfg, steps=size.clap_steps), aug, quiet=True, autocast=profile.autocast)
    pacs = tasks.clap_benchmark(profile)
    n = min(size.attack_images, len(pacs.dataset))
    images = (pacs.dataset.images(slice(0, n)).float() / 255).to(device)
    labels = torch.as_tensor(pacs.dataset.labels[:n]).to(device)
    with torch.no_grad():
        text = b16.encode_texts([f"a photo of a {c}." for c in pacs.classnames])
    classify = clap.zero_shot_classifier(b16, text)
    with timed(rows, "08", f"PGD-{size.attack_steps} on {n} images, B/16", n * (size.attack_steps + 1), device,
               label):
        attacks.robust_accuracy(classify, images, labels, "pgd", steps=size.attack_steps, batch_size=64)

    n_views = tpt.TPT_VIEWS if size == FULL else 2
    shifted = pacs.dataset                          # chapter 12 reads chapter 8's PACS test split
    with timed(rows, "12", f"TPT: {n_views} views of {len(shifted)} images encoded, B/16", len(shifted) * n_views,
               device, label):
        views = tpt.encode_views(b16, shifted, n_views, batch_size=max(1, size.eval_batch // n_views),
                                 autocast=profile.autocast)
    hand = coop.PromptLearner(b16, pacs.classnames, init="a photo of a")
    with timed(rows, "12", f"TPT: one step per image, {len(shifted)} images, B/16", len(shifted), device, label):
        tpt.tpt_logits(b16, hand, views, steps=1)
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few images and a step each (the CPU test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="'pretend-gpu': clipnotes.pretend_gpu's device, where a CPU tensor meeting the model fails")
    args = ap.parse_args(argv)
    pretend = args.device == "pretend-gpu"
    os.environ.setdefault("TQDM_DISABLE", "1")                  # the table is the output
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --tiny --device cpu for the smoke test")
    size = TINY if args.tiny else FULL
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "pretend GPU" if pretend else "CPU"
    print(f"{gpu} · random weights · fake data · {'tiny' if args.tiny else 'full'} size")
    print(f"{'chapter':<8} {'work':<44} {'seconds':>8} {'images/s':>9} {'peak GiB':>9}  precision")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, (pretend_gpu() if pretend else contextlib.nullcontext()) as dev:
        rows = run(str(dev) if pretend else args.device, size, Path(tmp))
    print(f"total {time.perf_counter() - t0:.0f} s (data writing and model building included)")
    return rows


if __name__ == "__main__":
    main()
