"""The clipnotes command line: ``python -m clipnotes {doctor,pretrain-mini,download,assemble-site,sync-notebooks}``."""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from .utils import ClipnotesError


def _doctor(args: argparse.Namespace) -> int:
    import numpy
    import open_clip
    import torch
    import torchvision

    from . import __version__
    from .models import create_mini, mini_card, shipped_files, verify_shipped_checkpoint
    from .profiles import get_profile
    from .features import writable_dir

    ok = True

    def line(status: str, what: str, detail: str = "") -> None:
        print(f"{status:<7} {what:<22} {detail}")

    line("info", "python", platform.python_version())
    for mod in (torch, torchvision, open_clip, numpy):
        line("info", mod.__name__, mod.__version__)
    line("info", "clipnotes", __version__)
    cuda = torch.cuda.is_available()
    line("info", "device", torch.cuda.get_device_name(0) if cuda else f"CPU only ({os.cpu_count()} cores)")
    try:
        prof = get_profile()
        line("ok", "profile", f"{prof.name} (seed {prof.seed}, device {prof.device}, {prof.precision})")
    except ClipnotesError as e:
        ok = False
        line("PROBLEM", "profile", str(e))
        prof = get_profile("mini", seed=0)
    try:
        line("ok", "cache dir", str(writable_dir(prof.cache_dir)))
    except ClipnotesError as e:
        ok = False
        line("PROBLEM", "cache dir", str(e))
    for name, label in (("shipped", "mini checkpoint"), ("crops", "mini crops (ch. 12)")):
        try:
            sha, card = verify_shipped_checkpoint(name), mini_card(name)
            size_mb = shipped_files(name)[0].stat().st_size / 2**20
            create_mini(name)
            last = card["log"][-1]
            line("ok", label, f"sha256 {sha[:16]}… ({size_mb:.1f} MB, {card['parameters']:,} parameters); held-out "
                              f"zero-shot {last['zs_mean']:.1%} (single template), R@1 {last['retrieval_r1']:.1%}")
        except ClipnotesError as e:
            ok = False
            line("PROBLEM", label, str(e))
    if args.paper:
        ok = _doctor_paper(line) and ok
    print("all good" if ok else "some checks failed: see PROBLEM lines")
    return 0 if ok else 1


def _doctor_paper(line) -> bool:
    """``doctor --paper``: the GPU, its precision and memory, and each chapter's weights and data."""
    import torch

    from .download import CHAPTER_NEEDS, present
    from .profiles import get_profile, native_bf16
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        line("ok", "GPU", f"{torch.cuda.get_device_name(0)}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), "
                          f"{'bf16' if native_bf16() else 'fp16 with a gradient scaler'}")
    else:
        line("PROBLEM", "GPU", "no CUDA GPU: `paper` needs one (Colab: Runtime → Change runtime type → GPU)")
    prof = get_profile("paper", check=False)
    line("info", "paper data", str(prof.data_dir))
    ready = True
    for chapter, items in CHAPTER_NEEDS.items():
        missing = [item.replace("weights:", "weights ") for item in items if not present(item, prof)[0]]
        ready &= not missing
        line("ok" if not missing else "missing", f"chapter {chapter} (paper)",
             "weights and data in place" if not missing else
             f"{', '.join(missing)}: python -m clipnotes download {int(chapter)}")
    return torch.cuda.is_available() and ready


def _pretrain(args: argparse.Namespace) -> int:
    from .models import MINI_CHECKPOINT, mini_card, shipped_files
    from .pretrain import CROPS_SHARE, PretrainConfig, pretrain
    from .profiles import default_cache_dir

    base = PretrainConfig(**mini_card()["config"]) if MINI_CHECKPOINT.exists() else PretrainConfig()
    overrides = {k: v for k, v in (("steps", args.steps), ("world_seed", args.world_seed),
                                   ("init_seed", args.init_seed), ("threads", args.threads)) if v is not None}
    if args.crops:
        overrides["crop_share"] = CROPS_SHARE
    cfg = PretrainConfig(**{**base.__dict__, **overrides})
    cache = Path(os.environ.get("CLIPNOTES_CACHE") or default_cache_dir())
    run_dir = Path(args.run_dir) if args.run_dir else cache / "pretrain-mini" / cfg.key
    out = Path(args.out) if args.out else run_dir / ("mini_clip_crops.pt" if args.crops else "mini_clip.pt")
    print(f"pretraining clipnotes-mini: {cfg.steps} steps of {cfg.batch_size} pairs; run dir {run_dir} "
          "(rerun the same command to resume)")
    card = pretrain(cfg, run_dir, out)
    last = card["log"][-1]
    print(f"done in {card['minutes']:.1f} min: zero-shot {last['zs_mean']:.1%}, R@1 {last['retrieval_r1']:.1%}; "
          f"weights {out} (sha256 {card['sha256'][:16]}…)")
    name = "crops" if args.crops else "shipped"
    if shipped_files(name)[0].exists():
        ref = mini_card(name)
        print(f"shipped checkpoint ({name}): zero-shot {ref['log'][-1]['zs_mean']:.1%}, "
              f"R@1 {ref['log'][-1]['retrieval_r1']:.1%}; identical weights: {card['sha256'] == ref['sha256']}")
    return 0


def _assemble_site(args: argparse.Namespace) -> int:
    from .book import assemble_site, default_results_dir

    results = Path(args.results) if args.results else default_results_dir()
    print(f"site sources in {assemble_site(args.executed, args.out, results_dir=results)}")
    return 0


def _sync_notebooks(args: argparse.Namespace) -> int:
    from .book import install_ref, sync_notebooks

    changed = sync_notebooks(".")
    print(f"install cells at {install_ref()}: " + (", ".join(changed) if changed else "every notebook agrees"))
    return 0


def _times(args: argparse.Namespace) -> int:
    import json

    from .book import times_table

    base = Path(args.dir)
    cold, warm = (json.loads((base / part / "times.json").read_text()) for part in ("cold", "warm"))
    table = times_table(cold, warm)
    (base / "times.md").write_text(table + "\n")
    print(table)
    return 0


def _download(args: argparse.Namespace) -> int:
    from .download import fetch_need, needs
    from .profiles import get_profile

    prof = get_profile("paper", check=False, download=True)
    items = needs(args.chapters)
    print(f"paper data for chapter(s) {' '.join(args.chapters) or 'all'} into {prof.data_dir}: {', '.join(items)}")
    lines = [fetch_need(item, prof) for item in items]
    print("\n".join(lines))
    return 0 if all(line.startswith("ok") for line in lines) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipnotes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check versions, device, profile, cache and the shipped checkpoint")
    d.add_argument("--paper", action="store_true",
                   help="also the GPU, its memory and precision, and which chapters' paper weights and data are in place")
    d.set_defaults(func=_doctor)
    p = sub.add_parser("pretrain-mini", help="retrain the tiny CLIP from scratch (resumable)")
    p.add_argument("--steps", type=int, help="training steps (default: the shipped run's)")
    p.add_argument("--world-seed", type=int, help="seed of the pretraining world")
    p.add_argument("--init-seed", type=int, help="seed of the initial weights")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--crops", action="store_true",
                   help="show 3 of every 4 training images as random resized crops (chapter 12's second model)")
    p.add_argument("--run-dir", help="where the resumable state lives")
    p.add_argument("--out", help="where to write the final weights (a .json card goes beside them)")
    p.set_defaults(func=_pretrain)
    a = sub.add_parser("assemble-site", help="the book's sources with executed notebooks (make test builds from them)")
    a.add_argument("--executed", default="_build/executed", help="where nbval wrote the executed notebooks")
    a.add_argument("--out", default="_build/site-src", help="where to assemble the sources")
    a.add_argument("--results", default=None, help="results files for the results page (default: the cache's)")
    a.set_defaults(func=_assemble_site)
    n = sub.add_parser("sync-notebooks", help="write every chapter's install cell and Colab metadata from _config.yml")
    n.set_defaults(func=_sync_notebooks)
    t = sub.add_parser("times", help="the table of `make times`: every chapter cold and warm")
    t.add_argument("dir", nargs="?", default="_build/times", help="holds cold/times.json and warm/times.json")
    t.set_defaults(func=_times)
    dl = sub.add_parser("download", help="fetch the paper profile's datasets and weights (offline first)")
    dl.add_argument("chapters", nargs="*", help="chapter numbers (e.g. 5 6) or 'all' (default)")
    dl.set_defaults(func=_download)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ClipnotesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
