"""Chapter plumbing: the settings cell, glued numbers, results shared between chapters."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .profiles import Profile, get_profile
from .utils import ClipnotesError, save_json

_STARTED: float | None = None


def setup(profile: str | None = None, seed: int | None = None, download: bool | None = None) -> Profile:
    """The settings cell of every chapter: pick the profile, seed everything, set the plot style."""
    global _STARTED
    from .plots import set_style
    from .utils import seed_everything

    prof = get_profile(profile, seed=seed, download=download)
    seed_everything(prof.seed)
    set_style()
    _STARTED = time.time()
    print(f"profile {prof.name} · seed {prof.seed} · device {prof.device} · precision {prof.precision}"
          f" · cache {prof.cache_dir}")
    return prof


def run_time() -> str:
    """The time since :func:`setup` in words, "40 seconds" or "3.5 minutes" (chapters report their own)."""
    seconds = time.time() - (_STARTED or time.time())
    return f"{seconds:.0f} seconds" if seconds < 90 else f"{seconds / 60:.1f} minutes"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Glue a computed value into the prose with myst-nb (a no-op where myst-nb is absent, e.g. Colab)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:      # numpy/torch scalars -> Python
        value = value.item()
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - Colab and plain Jupyter
        return
    _glue(name, value, display=display)


def results_path(profile: Profile, chapter: str) -> Path:
    return profile.cache_dir / "results" / f"{chapter}-{profile.name}-seed{profile.seed}.json"


def save_results(profile: Profile, chapter: str, results: dict[str, Any]) -> Path:
    """Write a chapter's headline numbers so later chapters reuse them instead of recomputing."""
    return save_json({"chapter": chapter, "profile": profile.name, "seed": profile.seed, **results},
                     results_path(profile, chapter))


def load_results(profile: Profile, chapter: str) -> dict[str, Any] | None:
    """A chapter's saved headline numbers, or ``None`` if that chapter has not run yet."""
    path = results_path(profile, chapter)
    return json.loads(path.read_text()) if path.exists() else None


def assemble_site(executed: str | Path, out: str | Path, root: str | Path = ".") -> Path:
    """The book's sources with the notebooks nbval just executed (``make test`` builds the site
    from them, so each chapter executes once): ``_config.yml`` with execution off, the table of
    contents, ``book/``, and a run-times page written from the execution's ``times.json``."""
    import shutil

    import yaml

    root, executed, out = Path(root), Path(executed), Path(out)
    missing = [p.name for p in sorted((root / "notebooks").glob("*.ipynb")) if not (executed / "notebooks" / p.name).exists()]
    if missing:
        raise ClipnotesError(f"{executed} has no executed copy of {', '.join(missing)}; run `make nbval` first")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(root / "book", out / "book")
    shutil.copytree(executed / "notebooks", out / "notebooks")
    shutil.copy(root / "_toc.yml", out / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["execute"] = dict(config.get("execute", {}), execute_notebooks="off")
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    times = json.loads((executed / "times.json").read_text())
    rows = "\n".join(f"| {name} | {t['seconds']:.0f} s | {t['seed']} |" for name, t in sorted(times.items()))
    page = (root / "book" / "runtimes.md").read_text()
    table = ("| chapter | seconds | seed |\n| --- | --- | --- |\n" + rows + "\n\nExecuted once, under nbval, by "
             "`make test`; the site was built from that execution.")
    (out / "book" / "runtimes.md").write_text(page.replace("```{nb-exec-table}\n```", table))
    return out
