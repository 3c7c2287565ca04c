"""How much caching frozen image features saves CoOp, and what CoCoOp's conditioning costs.

CoOp trains only context vectors in the text tower; the image encoder is frozen, so its
features can be computed once. This script times one training epoch both ways on the
same random-init model (no weights are downloaded) and prints the ratio; then one epoch of
CoCoOp (chapter 11) on the same cached features at its recipe's batch of one image, where the
text tower runs over the class prompts once per image instead of once per batch.

    python benchmarks/coop_epoch.py                         # ViT-B/16, on CUDA if present
    python benchmarks/coop_epoch.py --model clipnotes-mini  # the tiny CLIP, seconds on a CPU
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from clipnotes.coop import ConditionalPromptLearner, PromptLearner
from clipnotes.models import create_mini, create_paper


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_epoch(bundle, learner, images, labels, batch: int, cached: torch.Tensor | None, autocast) -> float:
    """One epoch of SGD on the context vectors; returns seconds."""
    opt = torch.optim.SGD(learner.parameters(), lr=0.002, momentum=0.9)
    scale = bundle.model.logit_scale.exp().item()
    device = str(bundle.device)
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(labels), batch):
        y = labels[s:s + batch]
        with autocast():
            if cached is not None:
                feats = cached[s:s + batch]
            else:
                with torch.no_grad():
                    feats = F.normalize(bundle.model.encode_image(bundle.preprocess(images[s:s + batch])), dim=-1)
            loss = F.cross_entropy(learner.logits(bundle.model, feats.float(), scale), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-16-quickgelu", help="an open_clip name, or clipnotes-mini")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32, help="CoOp's batch size")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs of each kind (after one warm-up step)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.model == "clipnotes-mini":
        bundle = create_mini(None, device=args.device)
    else:
        bundle = create_paper(args.model, pretrained=None, device=args.device)
    bundle.model.eval().requires_grad_(False)
    on_cuda = args.device.startswith("cuda")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else \
        (lambda: torch.autocast("cpu", enabled=False))
    names = ["circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon", "moon", "arrow"]
    classnames = [names[i % len(names)] + ("" if i < len(names) else f" {i}") for i in range(args.classes)]
    n = args.classes * args.shots
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, bundle.image_size, bundle.image_size), dtype=torch.uint8, generator=g)
    images = images.to(args.device)
    labels = (torch.arange(n) % args.classes).to(args.device)

    t0 = time.perf_counter()
    with torch.no_grad(), autocast():
        cached = torch.cat([F.normalize(bundle.model.encode_image(bundle.preprocess(images[s:s + 256])), dim=-1)
                            for s in range(0, n, 256)])
    _sync(args.device)
    encode_once = time.perf_counter() - t0

    results = {}
    for kind, feats in (("cached", cached), ("re-encoding", None)):
        learner = PromptLearner(bundle, classnames, n_ctx=16).to(args.device)
        run_epoch(bundle, learner, images[:args.batch], labels[:args.batch], args.batch, None if feats is None
                  else feats[:args.batch], autocast)                                   # warm-up
        results[kind] = min(run_epoch(bundle, learner, images, labels, args.batch, feats, autocast)
                            for _ in range(args.epochs))
    cocoop = ConditionalPromptLearner(bundle, classnames, init="a photo of a").to(args.device)
    run_epoch(bundle, cocoop, images[:1], labels[:1], 1, cached[:1], autocast)                 # warm-up
    results["cocoop"] = min(run_epoch(bundle, cocoop, images, labels, 1, cached, autocast) for _ in range(args.epochs))
    print(f"{args.model} on {args.device}: {args.classes} classes x {args.shots} shots, batch {args.batch}")
    print(f"  encoding the images once:        {encode_once:8.3f} s")
    print(f"  one epoch, cached features:      {results['cached']:8.3f} s")
    print(f"  one epoch, re-encoding images:   {results['re-encoding']:8.3f} s")
    print(f"  ratio: {results['re-encoding'] / results['cached']:.1f}x faster with the cache")
    print(f"  one epoch of CoCoOp, cached, batch 1: {results['cocoop']:8.3f} s "
          f"({results['cocoop'] / results['cached']:.0f}x CoOp's cached epoch)")


if __name__ == "__main__":
    main()
