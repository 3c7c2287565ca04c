"""Is the fine-tuning loop as fast as a bare training step? Throughput of `clipnotes.finetune`.

For each loss of the engine (ce, flyp, carft) this script runs the real `paper` code path —
a random-init open_clip model (no weights are downloaded) fine-tuned on fake CIFAR-10 files
written in torchvision's on-disk format — and times it against a bare open_clip step with
the same math (forward, loss, backward, gradient clipping, AdamW) on tensors already on the
device, in the same run; both as the median of per-step times. The loop's extra work
(drawing the batch, moving uint8 images, upscaling and normalising on the device, picking
captions) must not make it slower than the bare step. On a CPU the "device" upscaling is
CPU work too, so expect a few per cent there; on a GPU it is negligible.

    python benchmarks/finetune_throughput.py                       # ViT-B-32, batch 256, bf16 on CUDA
    python benchmarks/finetune_throughput.py --batch 8 --steps 3   # a CPU-sized run
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import open_clip
import torch
import torch.nn.functional as F

from clipnotes.classifiers import zero_shot_classifier
from clipnotes.data import cifar
from clipnotes.fakes import write_fake_cifar
from clipnotes.finetune import FinetuneConfig, finetune
from clipnotes.models import create_paper
from clipnotes.templates import CIFAR_TEMPLATES


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def loop_seconds(bundle, train, classnames, loss: str, batch: int, steps: int, autocast, device: str) -> float:
    """Median seconds per step of `finetune`, read from its log's wall clock (two warm-up steps dropped).

    The loop syncs every step (it logs ``loss.item()`` after the optimiser step), so on a GPU
    each interval covers that step's whole work.
    """
    cfg = FinetuneConfig(loss=loss, steps=2 + steps, batch_size=batch, warmup=1, threads=torch.get_num_threads())
    run = finetune(bundle, train, classnames, CIFAR_TEMPLATES, cfg, autocast=autocast, quiet=True)
    ticks = [e["seconds"] for e in run.log]
    return statistics.median(b - a for a, b in zip(ticks[1:], ticks[2:]))


def bare_seconds(bundle, classnames, loss: str, batch: int, steps: int, autocast, device: str) -> float:
    """Median seconds per step of a bare open_clip step on ready-made device tensors."""
    model = zero_shot_classifier(bundle, classnames, CIFAR_TEMPLATES[:1], "flyp" if loss == "flyp" else "ce")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=FinetuneConfig.weight_decay)
    x = torch.randn(batch, 3, bundle.image_size, bundle.image_size, device=device)
    y = torch.randint(0, len(classnames), (batch,), device=device)
    tokens = bundle.tokenizer([f"a photo of a {classnames[int(i)]}." for i in y]).to(device)
    clip_loss = open_clip.ClipLoss()

    def step():
        with autocast():
            if loss == "flyp":
                img = F.normalize(model.clip.encode_image(x), dim=-1)
                txt = F.normalize(model.clip.encode_text(tokens), dim=-1)
                out = clip_loss(img, txt, model.clip.logit_scale.exp())
            else:
                out = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        out.backward()
        torch.nn.utils.clip_grad_norm_(params, FinetuneConfig.grad_clip)     # the same math as the loop's step
        opt.step()

    step(), step()                                           # warm-up, as for the loop
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each kind")
    ap.add_argument("--losses", default="ce,flyp,carft")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    on_cuda = args.device.startswith("cuda")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else \
        (lambda: torch.autocast("cpu", enabled=False))
    bundle = create_paper(args.model, pretrained=None, device=args.device)
    with tempfile.TemporaryDirectory() as root:
        write_fake_cifar(root, "cifar10", n_train=max(4 * args.batch, 64), n_test=10)
        train = cifar("cifar10", root, train=True, verify=False)     # torchvision's format, not its checksums
        print(f"{args.model} (random init) on {args.device}, batch {args.batch}, "
              f"{'bf16 autocast' if on_cuda else 'fp32'}, {torch.get_num_threads()} threads, "
              f"fake CIFAR-10 ({len(train)} images, 32 px → {bundle.image_size} px on the device)")
        print(f"{'loss':6} {'clipnotes loop':>16} {'bare step':>12} {'loop / bare':>12}")
        for loss in args.losses.split(","):
            ours = loop_seconds(bundle, train, train.classnames, loss, args.batch, args.steps, autocast, args.device)
            bare = bare_seconds(bundle, train.classnames, loss, args.batch, args.steps, autocast, args.device)
            print(f"{loss:6} {args.batch / ours:11.1f} img/s {args.batch / bare:7.1f} img/s {bare / ours:11.2f}×")


if __name__ == "__main__":
    main()
